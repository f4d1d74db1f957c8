"""Microbenchmark figures for the report, read only through `microbench.results`.

The microbenchmarks (fork + waitpid, fork + exec, thread start, task creation, IPC round trips,
shared counters: CS:APP 12.1.2's "overhead for process control and IPC") write
`microbench.json` (pytest-benchmark) and `microbench_c.json` (the C floor) into the run
directory; `microbench.results.load_microbench(run_dir)` is their one reader. This module turns
its `MicroResult`s into a DataFrame, one row per (name, language), in microseconds per
operation, so the chart and the scorecard never look at the files themselves. A run without
microbenchmarks gives an empty frame and a reason, shown as "not measured in this run".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from microbench.results import MicrobenchError, load_microbench

COLUMNS = ["name", "op", "group", "impl", "placement", "median_us", "min_us", "max_us",
           "rounds", "what"]  # fmt: skip


def _read(run_dir: Path) -> tuple[pd.DataFrame, str]:
    try:
        results = load_microbench(run_dir)
    except MicrobenchError as exc:
        return pd.DataFrame(columns=COLUMNS), str(exc)
    rows = [
        {
            "name": r.name,
            "op": r.op,
            "group": r.group,
            "impl": r.language,
            "placement": r.placement,
            "median_us": r.median_us,
            "min_us": r.min_us,
            "max_us": r.max_us,
            "rounds": r.rounds,
            "what": r.what,
        }
        for r in results
    ]
    if not rows:
        return pd.DataFrame(columns=COLUMNS), "the microbenchmark files list no results"
    return pd.DataFrame(rows, columns=COLUMNS), ""


def load(run_dir: Path) -> pd.DataFrame:
    """Microbenchmark figures of a run, or an empty frame when the run has none."""
    return _read(run_dir)[0]


def absent_reason(run_dir: Path) -> str:
    return _read(run_dir)[1] or "no microbenchmark figures"


def figure(m: pd.DataFrame, name: str, impl: str = "python") -> float | None:
    """Median microseconds of one named microbenchmark, or None when not measured."""
    if m.empty:
        return None
    sel = m[(m["name"] == name) & (m["impl"] == impl)]
    return float(sel["median_us"].iloc[0]) if not sel.empty else None
