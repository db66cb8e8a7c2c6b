"""Evaluations: HellaSwag (two protocols) on minigpt models, in training and standalone.

In training they run as step hooks chosen by `eval=` from the `EVALS` table in training.py.
"""

from minigpt.eval.hellaswag import (  # noqa: F401
    PROTOCOLS,
    HellaSwagScores,
    evaluate_hellaswag,
    hellaswag_metrics,
    score_hellaswag,
)
from minigpt.eval.hellaswag_data import HellaSwagUnavailable, load_hellaswag  # noqa: F401
