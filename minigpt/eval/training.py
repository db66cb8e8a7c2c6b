"""Evaluations during training, chosen by `eval=` from the explicit `EVALS` table (no registration on import).

An eval is built with the trainer (cheap: nothing read), fetches its data in `load()` (the trainer's
`load_eval_data()` step), and gives the trainer its `StepHook`s. `eval=hellaswag` runs HellaSwag every
`eval.hellaswag.every` steps and at the end; if the data cannot be found (offline, nothing cached) the
run logs one warning line and trains without it rather than crashing. Each evaluation also writes the
per-example records (`<run dir>/hellaswag/step_<step>.parquet`, minigpt/eval/records.py) and hands the
file to the loggers (W&B keeps the last one as an artifact). The values themselves are checked by
minigpt.validate before any of this runs.
"""

from __future__ import annotations

import logging

from minigpt.eval.hellaswag import evaluate_hellaswag, hellaswag_metrics
from minigpt.eval.hellaswag_data import HellaSwagUnavailable, load_hellaswag
from minigpt.eval.records import RECORDS_ARTIFACT, records_path, write_records
from minigpt.hooks import StepHook

log = logging.getLogger("minigpt")


def run_protocols(model, examples, hc, device, dtype: str, progress: bool = True) -> dict[str, dict]:
    """{protocol: evaluate_hellaswag result} for every protocol in the config."""
    return {
        name: evaluate_hellaswag(
            model, examples, name, batch_size=hc.batch_size, device=device, dtype=dtype, progress=progress
        )
        for name in hc.protocols
    }


class NoEval:
    """`eval=none`: no evaluation besides the trainer's own validation loss."""

    def __init__(self, cfg) -> None:
        pass

    @staticmethod
    def metrics(cfg) -> tuple[str, ...]:
        return ()

    def load(self) -> None:
        pass

    def hooks(self) -> list[StepHook]:
        return []


class HellaSwagEval:
    """`eval=hellaswag`: both scoring protocols on `eval.hellaswag` examples, as one StepHook."""

    def __init__(self, cfg) -> None:
        self.hc = cfg.eval.hellaswag
        self.examples: list[dict] | None = None  # None until load(); [] when the data is unavailable
        self.names = self.metrics(cfg)

    @staticmethod
    def metrics(cfg) -> tuple[str, ...]:
        # hellaswag_metrics names the keys; any numbers give the same names
        return tuple(hellaswag_metrics({name: {"acc": 0.0, "acc_norm": 0.0} for name in cfg.eval.hellaswag.protocols}))

    def load(self) -> None:
        hc = self.hc
        try:
            examples = load_hellaswag(hc, log=log.info)
        except HellaSwagUnavailable as exc:
            log.warning(f"warning: {exc}; training continues without HellaSwag")
            self.examples = []
            return
        self.examples = examples[: hc.limit] if hc.limit else examples
        log.info(f"hellaswag: {len(self.examples)} examples, protocols {list(hc.protocols)}, every {hc.every} steps")

    def hooks(self) -> list[StepHook]:
        if not self.examples:
            return []
        return [StepHook("hellaswag", self.hc.every, self.run, metrics=self.names)]

    def run(self, trainer) -> dict:
        results = run_protocols(trainer.model, self.examples, self.hc, trainer.device, trainer.cfg.train.dtype.value)
        for name, r in results.items():
            log.info(
                f"step {trainer.step:6d} | hellaswag {name} acc {r['acc']:.4f} acc_norm {r['acc_norm']:.4f} "
                f"(n={r['n']}, {r['examples_per_s']:.1f} ex/s)"
            )
        if trainer.dist.is_main:  # every rank holds all scores; one writes
            path = write_records(records_path(trainer.run_dir, trainer.step), self.examples,
                                 {name: r["scores"] for name, r in results.items()}, step=trainer.step)
            trainer.logger.log_file(path, RECORDS_ARTIFACT)
        return hellaswag_metrics(results)


# cfg.eval.name -> the eval class; adding an evaluation means adding a row here, never editing the loop
EVALS: dict[str, type] = {"none": NoEval, "hellaswag": HellaSwagEval}
