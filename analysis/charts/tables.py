"""The numbers behind a chart, as a table with each figure's interval and its flags."""

from __future__ import annotations

import contextlib
import math

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import pandas as pd

from analysis import fmt
from analysis.charts.style import label, server_sort
from analysis.document import Table
from analysis.stats import CV_LIMIT


def flags(row: pd.Series) -> str:
    flags = []
    if not math.isnan(row["cv"]) and row["cv"] > CV_LIMIT:
        flags.append(f"CV {fmt.pct(row['cv'])} (noisy)")
    if row["saturated"]:
        flags.append("client-saturated: a lower bound, not capacity")
    if row["port_bound"]:
        flags.append("port-bound: measures the port allocator")
    if row.get("starved", 0):
        served = int(row.get("served", 0) or 0)
        flags.append(
            f"STARVED: {served} of {int(row.get('asked', 0) or 0)} connections served in the "
            "window (the rest waited > window): not capacity, not latency"
        )
    return "; ".join(flags)


def summary_table(s: pd.DataFrame, x: str, x_name: str, metric_name: str, caption: str) -> Table:
    """The numbers behind a chart as a grid: one row per server (the registry's order), one
    column per value of `x`; each cell the median [min-max] over trials, with its flags."""
    xs = list(dict.fromkeys(s[x].dropna().tolist())) if not s.empty else []
    with contextlib.suppress(TypeError, ValueError):
        xs = sorted(xs, key=float)  # numbers in order; words (placements, counters) as found
    rows = []
    notes: list[str] = []
    for server in server_sort(list(s["server"].unique())) if not s.empty else []:
        own = s[s["server"] == server]
        row = [label(server)]
        for xv in xs:
            hit = own[own[x] == xv]
            if hit.empty:
                row.append("")
                continue
            r = hit.iloc[0]
            text = fmt.spread(r["median"], r["lo"], r["hi"], int(r["n"]))
            marks = []
            if not math.isnan(r["cv"]) and r["cv"] > CV_LIMIT:
                marks.append("noisy")
            if r["saturated"]:
                marks.append("client-limited")
            if r["port_bound"]:
                marks.append("port-bound")
            if r.get("starved", 0):
                served, asked = int(r.get("served", 0) or 0), int(r.get("asked", 0) or 0)
                text = f"STARVED: {served} of {asked} served"
            row.append(text + (f" ({', '.join(marks)})" if marks else ""))
        rows.append(row)
    if any("client-limited" in c for r in rows for c in r):
        notes.append("client-limited: the load generator's CPUs were the limit, a lower bound")
    if any("STARVED" in c for r in rows for c in r):
        notes.append("STARVED: not every connection was served in the window: not a figure")
    if any("noisy" in c for r in rows for c in r):
        notes.append(f"noisy: trials' CV over {fmt.pct(CV_LIMIT)}")
    text = f"{caption}: {metric_name}, median [interval] over trials"
    if notes:
        text += ". " + "; ".join(notes)
    return Table(["server", *[f"{fmt.param(v)} {x_name}" for v in xs]], rows, text)
