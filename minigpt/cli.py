"""The one boundary between minigpt's entrypoints and the shell: bad input becomes one `error:` line.

Every `python -m minigpt.X` command (prepare, eval, compare, plan, bench, export_hf, lm_eval_task)
wraps its `main` in `@cli_errors` instead of writing its own try/except, the idea of
lightning-hydra-template's `task_wrapper`: the handling lives in one place, so every command cuts a
message to its first line, prints it as `error: ...` on stderr and exits with status 2, and a bug (any
other exception) still shows its traceback. `python -m minigpt.train` is a Hydra app: its config is
validated in a Hydra callback before the run directory exists (minigpt/train.py's `ValidateConfig`, which
runs the check through `@cli_errors` too), and a failure later in the run goes through
minigpt/multirun.py's `handle_failure`, which prints the same line.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

USAGE_ERROR = 2  # the exit status of argparse's own usage errors


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is for the user: bad config, paths or data, and Hydra/OmegaConf's
    composition errors (a misspelt key or a wrong type in an override)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from minigpt.errors import ConfigError
    from minigpt.eval.hellaswag_data import HellaSwagUnavailable

    return ConfigError, HellaSwagUnavailable, HydraException, OmegaConfBaseException


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def cli_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate an entrypoint's `main(argv) -> exit status`: user errors print one line and return 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            status = main(*args, **kwargs)
            return status if isinstance(status, int) else 0  # a main that returns its results succeeded
        except user_errors() as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return USAGE_ERROR

    return wrapped
