"""Medians over trials, with their spread: the only way a figure reaches a chart or a table.

A *cell* is one (scenario, server, placement, parameters) point of a profile; it runs once per
trial. `summarise` collapses the trials of every cell to median, min, max and coefficient of
variation (sample standard deviation / mean) of one metric, and says whether any trial was
client-saturated (the load generator, not the server, was the limit: never server capacity) or
starved (some of the connections it asked for completed no request in the window: it did not
measure what its label says, so it is never a capacity, a latency or a ranking either).

The interval quoted with a median is where a repeat run's median will fall with probability
`noise.PROMISE` (90%): a prediction interval built from the point's rounds and the run's pooled
noise, and widened when the run's own split-half check says it must be (analysis/noise.py;
each row carries its point's half-width as `hw_<metric>`, computed once per run when it is
read). The trials' plain [min-max] stays beside it as `min`/`max`: it promises less (the next
run's median lands inside a 3-trial [min-max] 60% of the time, on a steady machine). Where a
point has one trial, or a figure with no log scale (zero), the interval is its [min-max].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import fmt
from analysis.noise import PROMISE

CV_LIMIT = 0.10  # above this the trials disagree too much to quote one figure without a flag

KEY = ["scenario", "server", "label", "server_args", "placement", "param_key"]
PARAMS = [
    "mode",
    "load",
    "connections",
    "size",
    "rate_fraction",
    "shared_counter",
    "rtt_us",
    "rate",
]


@dataclass(frozen=True)
class Figure:
    median: float
    lo: float
    hi: float
    n: int
    cv: float
    saturated: bool
    starved: int = 0  # most connections starved in any trial (0: every client was served)
    asked: int = 0

    @property
    def noisy(self) -> bool:
        return not math.isnan(self.cv) and self.cv > CV_LIMIT


def coverage(n: int) -> float:
    """The share of repeat runs whose median a figure's interval is built to hold (0 with one
    trial: nothing to build it from)."""
    return PROMISE if n > 1 else 0.0


def summarise(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per cell: median/min/max/n/cv of `metric` over trials, plus the cell's params."""
    cols = [
        *KEY,
        *PARAMS,
        "match_key",
        "median",
        "lo",
        "hi",
        "n",
        "cv",
        "saturated",
        "sat_trials",
        "port_bound",
        "starved",
        "served",
        "asked",
        "min",
        "max",
    ]
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
        med = float(vals.median())
        lo, hi = float(vals.min()), float(vals.max())
        hw = g[f"hw_{metric}"].dropna() if f"hw_{metric}" in g.columns else pd.Series()
        if len(vals) > 1 and len(hw) and med > 0:
            # the point's prediction interval, never narrower than what its trials showed
            lo = min(lo, med * math.exp(-float(hw.iloc[0])))
            hi = max(hi, med * math.exp(float(hw.iloc[0])))
        rows.append(
            {
                **{k: first[k] for k in KEY},
                **{k: first.get(k) for k in PARAMS},
                "match_key": first.get("match_key"),
                "median": med,
                "lo": lo,
                "hi": hi,
                "min": float(vals.min()),
                "max": float(vals.max()),
                "n": len(vals),
                "cv": cv,
                # any trial client-saturated: no claim rests on the point (verdict.usable);
                # how many were is counted apart, so a capacity is said per trial (issue 21)
                "saturated": bool(g["client_saturated"].any()),
                "sat_trials": int(g["client_saturated"].fillna(False).astype(bool).sum()),
                "port_bound": bool(g["client_port_bound"].any()),
                "starved": _max_int(g, "starved"),
                "served": _min_int(g, "served"),
                "asked": _max_int(g, "asked"),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _max_int(g: pd.DataFrame, col: str) -> int:
    if col not in g.columns:
        return 0
    v = pd.to_numeric(g[col], errors="coerce").max()
    return 0 if pd.isna(v) else int(v)


def _min_int(g: pd.DataFrame, col: str) -> int:
    if col not in g.columns:
        return 0
    v = pd.to_numeric(g[col], errors="coerce").min()
    return 0 if pd.isna(v) else int(v)


def figure_of(row: pd.Series) -> Figure:
    return Figure(
        float(row["median"]),
        float(row["lo"]),
        float(row["hi"]),
        int(row["n"]),
        float(row["cv"]),
        bool(row["saturated"]),
        int(row.get("starved", 0) or 0),
        int(row.get("asked", 0) or 0),
    )


def pick(
    summary: pd.DataFrame, server: str, placement: str | None = "split", **params: object
) -> Figure | None:
    """The one summarised cell of `server` whose params match, or None when not measured.

    A starved cell (clients that were never served) is not a measurement of what its label
    says, so it is None here too: no claim is ever built on it."""
    if summary.empty:
        return None
    summary = summary[summary["starved"].fillna(0) == 0]
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


# --------------------------------------------------------------------------- capacity


@dataclass(frozen=True)
class Capacity:
    """What a server's concurrency cells say about its capacity (issue 21).

    A capacity is a point the server limited: at least 2 connections (one connection measures
    a round trip, not a capacity), every client served, and no trial client-saturated. Where
    the load generator was the limit, the figure is a floor: "at least N"."""

    best: Figure | None  # the best server-limited point
    best_conns: int
    floor: Figure | None  # the best point where the load generator was the limit
    floor_conns: int

    def text(self) -> str:
        parts = []
        if self.best is not None:
            b = self.best
            parts.append(
                f"{fmt.spread(b.median, b.lo, b.hi, b.n)} req/s at {self.best_conns:,} conns"
            )
        if self.floor is not None and (self.best is None or self.floor.median > self.best.median):
            parts.append(
                f"at least {fmt.num(self.floor.median)} req/s (the load generator's limit, "
                f"{self.floor_conns:,} conns)"
            )
        return "; ".join(parts) or "n/a: no point served every client"


def capacity(conc: pd.DataFrame, server: str, placement: str = "split") -> Capacity:
    """`conc`: summarise(concurrency cells, "requests_per_s")."""
    if conc.empty:
        return Capacity(None, 0, None, 0)
    rows = conc[
        (conc["server"] == server)
        & (conc["placement"] == placement)
        & (conc["starved"].fillna(0) == 0)
        & (conc["connections"] > 1)
    ]
    free = rows[rows["sat_trials"] == 0]
    bound = rows[rows["sat_trials"] > 0]
    best = free.loc[free["median"].idxmax()] if not free.empty else None
    floor = bound.loc[bound["median"].idxmax()] if not bound.empty else None
    return Capacity(
        figure_of(best) if best is not None else None,
        int(best["connections"]) if best is not None else 0,
        figure_of(floor) if floor is not None else None,
        int(floor["connections"]) if floor is not None else 0,
    )
