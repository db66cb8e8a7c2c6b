"""HellaSwag as a periodic training task: `eval=hellaswag` (every `eval.hellaswag.every` steps and at the end).

The data is loaded when the trainer is built; if it cannot be found (offline, nothing cached) the run
logs one warning line and trains without the eval rather than crashing. Each evaluation also writes
the per-example records (`<run dir>/hellaswag/step_<step>.parquet`, minigpt/eval/records.py) and hands
the file to the loggers (W&B keeps the last one as an artifact).
"""

from __future__ import annotations

import logging

from minigpt.errors import ConfigError
from minigpt.eval.hellaswag import evaluate_hellaswag, get_protocol, hellaswag_metrics
from minigpt.eval.hellaswag_data import HellaSwagUnavailable, load_hellaswag
from minigpt.eval.records import RECORDS_ARTIFACT, records_path, write_records
from minigpt.tasks import EVAL_TASKS, PeriodicTask

log = logging.getLogger("minigpt")


def check_hellaswag_config(hc) -> None:
    for name in hc.protocols:
        get_protocol(name)
    if not hc.protocols:
        raise ConfigError("eval.hellaswag.protocols is empty: use [llmc,harness] or one of them")
    if hc.batch_size <= 0:
        raise ConfigError(f"eval.hellaswag.batch_size={hc.batch_size} must be positive")
    if hc.limit is not None and hc.limit <= 0:
        raise ConfigError(f"eval.hellaswag.limit={hc.limit} must be positive (or null for all examples)")
    if hc.every < 0:
        raise ConfigError(f"eval.hellaswag.every={hc.every} must be >= 0 (0: only after the last step)")


def run_protocols(model, examples, hc, device, dtype: str, progress: bool = True) -> dict[str, dict]:
    """{protocol: evaluate_hellaswag result} for every protocol in the config."""
    return {
        name: evaluate_hellaswag(
            model, examples, name, batch_size=hc.batch_size, device=device, dtype=dtype, progress=progress
        )
        for name in hc.protocols
    }


def hellaswag_tasks(cfg) -> list[PeriodicTask]:
    hc = cfg.eval.hellaswag
    check_hellaswag_config(hc)
    try:
        examples = load_hellaswag(hc, log=log.info)
    except HellaSwagUnavailable as exc:
        log.warning(f"warning: {exc}; training continues without HellaSwag")
        return []
    examples = examples[: hc.limit] if hc.limit else examples
    log.info(f"hellaswag: {len(examples)} examples, protocols {list(hc.protocols)}, every {hc.every} steps")

    def run(trainer) -> dict:
        results = run_protocols(trainer.raw_model, examples, hc, trainer.device, trainer.cfg.train.dtype.value)
        for name, r in results.items():
            log.info(
                f"step {trainer.step:6d} | hellaswag {name} acc {r['acc']:.4f} acc_norm {r['acc_norm']:.4f} "
                f"(n={r['n']}, {r['examples_per_s']:.1f} ex/s)"
            )
        if trainer.dist.is_main:  # every rank holds all scores; one writes
            path = write_records(records_path(trainer.run_dir, trainer.step), examples,
                                 {name: r["scores"] for name, r in results.items()}, step=trainer.step)
            trainer.logger.log_file(path, RECORDS_ARTIFACT)
        return hellaswag_metrics(results)

    # hellaswag_metrics names the keys; any numbers give the same names
    names = tuple(hellaswag_metrics({name: {"acc": 0.0, "acc_norm": 0.0} for name in hc.protocols}))
    return [PeriodicTask("hellaswag", hc.every, run, metrics=names)]


EVAL_TASKS["hellaswag"] = hellaswag_tasks
