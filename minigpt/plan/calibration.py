"""Forecast vs measured, per run: what `minigpt.compare` shows so the forecast's error is visible.

Each run's run_summary.json holds the forecast made when it started ("forecast") and what the run
measured: median training tokens/s, wall time (training and evaluation, from the start of training: the
forecast's `run_s`, start-up excluded), and the peak of `train/peak_mem_gb` (CUDA: the most
memory tensors held, comparable with the forecast; CPU: the process's maximum RSS, which also counts
the Python runtime). The next forecast of the same model on the same device calibrates its MFU on
these measured runs (plan/history.py).
"""

from __future__ import annotations


def _ratio(measured: float | None, forecast: float | None) -> str:
    return f"{measured / forecast:.2f}x" if measured and forecast else "-"


def _fmt(x: float | None, fmt: str) -> str:
    return "-" if x is None else fmt.format(x)


def forecast_rows(runs: list) -> tuple[list[str], list[list[str]]]:
    """One row per run that recorded a forecast (runs: objects with `.name` and `.summary`, e.g. minigpt.compare.local_runs.Run)."""
    header = ["run", "device", "tokens/s forecast", "measured", "ratio", "wall forecast", "measured", "ratio",
              "peak mem GiB forecast", "measured", "forecast from"]
    rows = []
    for run in runs:
        s = run.summary or {}
        f = s.get("forecast")
        if not f:
            continue
        measured_mem = s.get("peak_mem_gb")
        mem_note = " (RSS)" if s.get("device") == "cpu" and measured_mem is not None else ""
        rows.append([
            run.name, str(f.get("device", "-")),
            _fmt(f.get("tokens_per_s"), "{:,.0f}"), _fmt(s.get("tokens_per_s"), "{:,.0f}"),
            _ratio(s.get("tokens_per_s"), f.get("tokens_per_s")),
            _fmt(f.get("run_s"), "{:,.0f} s"), _fmt(s.get("wall_s"), "{:,.0f} s"), _ratio(s.get("wall_s"), f.get("run_s")),
            _fmt(f.get("peak_mem_gb"), "{:.2f}"), _fmt(measured_mem, "{:.2f}") + mem_note,
            str(f.get("throughput_source") or "-").replace("|", "/"),
        ])
    return header, rows
