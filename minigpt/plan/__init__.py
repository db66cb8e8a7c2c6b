"""Plan before you spend: what a run or a sweep will cost, and whether it fits, before anything runs.

`python -m minigpt.plan <the train command's arguments>` composes the jobs as `minigpt.train` would
(compose.py), forecasts each one (forecast.py: parameters, FLOPs, memory per device from minigpt/memory.py,
throughput calibrated on the user's finished runs from history.py, wall time, GPU-hours, cost, SLURM
time-limit chunks) and renders the sbatch script submitit would submit (sbatch.py). The trainer
records the same forecast in run_summary.json, and `minigpt.compare` sets it against what was
measured (calibration.py).
"""

from minigpt.plan.forecast import JobForecast, forecast_job

__all__ = ["JobForecast", "forecast_job"]
