"""Evaluations: HellaSwag (two protocols) on minigpt models, in training and standalone.

Importing this package registers the `hellaswag` factory in `minigpt.tasks.EVAL_TASKS` (see task.py).
"""

from minigpt.eval.hellaswag import (  # noqa: F401
    PROTOCOLS,
    HellaSwagScores,
    evaluate_hellaswag,
    hellaswag_metrics,
    score_hellaswag,
)
from minigpt.eval.hellaswag_data import HellaSwagUnavailable, load_hellaswag  # noqa: F401
from minigpt.eval import task  # noqa: F401,E402 - registers EVAL_TASKS["hellaswag"]
