"""Medians over trials, with their spread: the only way a figure reaches a chart or a table.

A *cell* is one (scenario, server, placement, parameters) point of a profile; it runs once per
trial. `summarise` collapses the trials of every cell to median, min, max and coefficient of
variation (sample standard deviation / mean) of one metric, and says whether any trial was
client-saturated (the load generator, not the server, was the limit: never server capacity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

CV_LIMIT = 0.10  # above this the trials disagree too much to quote one figure without a flag

KEY = ["scenario", "server", "label", "server_args", "placement", "param_key"]
PARAMS = ["mode", "load", "connections", "size", "rate_fraction", "shared_counter"]


@dataclass(frozen=True)
class Figure:
    median: float
    lo: float
    hi: float
    n: int
    cv: float
    saturated: bool

    @property
    def noisy(self) -> bool:
        return not math.isnan(self.cv) and self.cv > CV_LIMIT


def summarise(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per cell: median/min/max/n/cv of `metric` over trials, plus the cell's params."""
    cols = [*KEY, *PARAMS, "match_key", "median", "lo", "hi", "n", "cv", "saturated", "port_bound"]
    if df.empty or metric not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df[df["status"] == "ok"].dropna(subset=[metric])
    if d.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _key, g in d.groupby(KEY, sort=False, dropna=False):
        vals = g[metric].astype(float)
        mean = float(vals.mean())
        cv = float(vals.std(ddof=1)) / mean if len(vals) > 1 and mean != 0 else math.nan
        first = g.iloc[0]
        rows.append(
            {
                **{k: first[k] for k in KEY},
                **{k: first.get(k) for k in PARAMS},
                "match_key": first.get("match_key"),
                "median": float(vals.median()),
                "lo": float(vals.min()),
                "hi": float(vals.max()),
                "n": len(vals),
                "cv": cv,
                "saturated": bool(g["client_saturated"].any()),
                "port_bound": bool(g["client_port_bound"].any()),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def figure_of(row: pd.Series) -> Figure:
    return Figure(
        float(row["median"]),
        float(row["lo"]),
        float(row["hi"]),
        int(row["n"]),
        float(row["cv"]),
        bool(row["saturated"]),
    )


def pick(
    summary: pd.DataFrame, server: str, placement: str | None = "split", **params: object
) -> Figure | None:
    """The one summarised cell of `server` whose params match, or None when not measured."""
    if summary.empty:
        return None
    sel = summary[summary["server"] == server]
    if placement is not None:
        sel = sel[sel["placement"] == placement]
    for k, v in params.items():
        sel = sel[sel[k].isna()] if v is None else sel[sel[k] == v]
    if sel.empty:
        return None
    return figure_of(sel.iloc[0])


def placement_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Requests/s of 1-connection 64 B cells by placement.

    The 'placement' scenario may run only the placements the concurrency scenario lacks (its
    1-connection cells are already 'split'), so those concurrency cells join in.
    """
    if df.empty:
        return summarise(df, "requests_per_s")
    d = df[(df["status"] == "ok") & (df["fault"].fillna("") == "")]
    own = d[d["scenario"] == "placement"]
    conc = d[(d["scenario"] == "concurrency") & (d["connections"] == 1) & (d["size"] == 64)]
    have = set(zip(own["server"], own["placement"], strict=True))
    missing = pd.Series(
        [(s, p) not in have for s, p in zip(conc["server"], conc["placement"], strict=True)],
        index=conc.index,
        dtype=bool,
    )
    extra = conc[missing & conc["server"].isin(own["server"])]
    both = pd.concat([own, extra.assign(scenario="placement")], ignore_index=True)
    both["param_key"] = "placement"  # one cell per (server, placement) whatever its origin
    return summarise(both, "requests_per_s")
