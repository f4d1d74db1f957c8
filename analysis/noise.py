"""Intervals that hold: how far the next run's median may fall from this run's, checked on the run.

A point (one scenario, server, placement and parameters) runs once per round; rounds are spread
over the whole run (trial-major: round 1 of every cell, then round 2, ...), so the spread of a
point's rounds samples the host's drift from minute to minute, not only the noise of adjacent
trials. What a reader wants from an interval is a promise about a reproduction: *run it again
and the median lands in here*. The [min-max] of 3 trials does not make that promise: when two
runs draw from the same distribution, the second run's median falls inside the first's
[min-max] only 12 times in 20 (60%; its 75% is the chance of covering the *true* median), and
on a drifting host less. So each figure's interval here is a prediction interval for the
median of a repeat run with as many rounds, built in three steps and then checked:

1. **Noise per point, moderated by the run's.** On the log scale (noise on these machines is
   multiplicative: a slow minute slows a cell by a factor), each point's variance over its
   rounds (2 degrees of freedom with 3 rounds: a poor estimate alone) is pooled with the
   typical variance of its scenario's points for the same metric (the run's, for a scenario
   of few points), as a prior worth PRIOR_DOF degrees of freedom (the moderated variance of
   empirical Bayes): a quiet point borrows width, a noisy one keeps its own.
2. **A median's own spread.** The median of n rounds varies by MEDIAN_SD[n] times one round's
   standard deviation (normal theory); two independent runs' medians differ by sqrt(2) times
   that; a Student t quantile with the moderated degrees of freedom turns it into a PROMISE
   interval.
3. **A check on the run itself (split-half).** The odd rounds' median against the even rounds'
   median, for every point: the share whose difference lies inside the interval the same rule
   gives for those two halves is printed beside the promise. When it falls short (the noise
   has heavier tails than normal, or drifts), every interval of that metric is widened by the
   factor that makes the halves hold, and the report says so: verdicts then follow the wider
   intervals.

No distribution is assumed for the check: it is a count. What it cannot see is a shift of the
whole run (every cell 1.2x faster after a host migration): the canary and `make compare`'s
calibration line (the share of the other run's medians inside this run's intervals) are what
show that.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import pandas as pd

PROMISE = 0.90  # every interval is built to hold a repeat run's median this often
PRIOR_DOF = 4.0  # the run's pooled variance counts as this many degrees of freedom
# Standard deviation of the median of n normal draws, in units of one draw's (n = 1..9; beyond,
# the asymptotic sqrt(pi / 2n)). Computed once by simulation (10^6 samples each).
MEDIAN_SD = {
    1: 1.0,
    2: 0.7071,
    3: 0.6700,
    4: 0.5459,
    5: 0.5353,
    6: 0.4629,
    7: 0.4591,
    8: 0.4100,
    9: 0.4075,
}
# One-sided 95% quantiles of Student's t (a two-sided 90% interval), by degrees of freedom.
_T95 = {
    1: 6.314,
    2: 2.920,
    3: 2.353,
    4: 2.132,
    5: 2.015,
    6: 1.943,
    7: 1.895,
    8: 1.860,
    9: 1.833,
    10: 1.812,
    12: 1.782,
    15: 1.753,
    20: 1.725,
    30: 1.697,
    60: 1.671,
}
_Z95 = 1.645
MIN_SCENARIO_POINTS = 4  # a scenario with fewer points borrows the run's pooled noise
MIN_CHECK_POINTS = 8  # fewer points than this: the split-half share says too little to widen by

# Every per-cell figure that a report summarises over rounds.
METRICS = (
    "requests_per_s",
    "p50_us",
    "p99_us",
    "cpu_us_per_req",
    "cpu_user_us_per_req",
    "cpu_sys_us_per_req",
    "pss_per_conn_bytes",
    "rss_per_conn_bytes",
)
POINT = ["scenario", "server", "label", "server_args", "placement", "param_key"]


def median_sd(n: int) -> float:
    return MEDIAN_SD.get(n, math.sqrt(math.pi / (2 * n)))


def t95(dof: float) -> float:
    """Student's t one-sided 95% quantile, interpolated in 1/dof (exact at the table's dofs)."""
    if dof >= 60:
        return _Z95 + (_T95[60] - _Z95) * 60 / dof
    keys = sorted(_T95)
    lo = max((k for k in keys if k <= dof), default=1)
    hi = min((k for k in keys if k >= dof), default=60)
    if lo == hi:
        return _T95[lo]
    w = (1 / lo - 1 / dof) / (1 / lo - 1 / hi)
    return _T95[lo] + w * (_T95[hi] - _T95[lo])


def _chi2_median_share(dof: int) -> float:
    """Median of chi-square(dof) / dof (Wilson-Hilferty): turns a median of variances into a
    variance."""
    return (1 - 2 / (9 * dof)) ** 3


@dataclass(frozen=True)
class SplitCheck:
    """One way of halving a run's rounds, and how often the halves agreed."""

    name: str  # "odd/even rounds" or "early/late rounds"
    points: int  # points with rounds in both halves
    held: int  # of which the halves' medians lay inside the interval the rule gives them
    needed: float  # the factor that would make PROMISE of them hold (<= 1: none needed)

    @property
    def share(self) -> float:
        return self.held / self.points if self.points else math.nan


@dataclass(frozen=True)
class Calibration:
    """The split-half checks of one metric in one run, and the widening they imposed."""

    metric: str
    checks: tuple[SplitCheck, ...]
    promised: float
    widen: float  # factor applied to every interval of the metric (1.0: none needed)
    pooled_cv: float  # the run's typical spread of one round, as a CV (exp(sigma) - 1)

    @property
    def points(self) -> int:
        return max((c.points for c in self.checks), default=0)


def halves(trials: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Two ways to halve a point's rounds: odd against even (the issue's split-half, which
    drift hits alike), and early against late (the first rounds against the last, the middle
    one left out when their number is odd: drift over the run shows here)."""
    ranks = np.unique(trials)
    k = len(ranks) // 2
    return [
        ("odd/even rounds", trials % 2 == 1, trials % 2 == 0),
        ("early/late rounds", np.isin(trials, ranks[:k]), np.isin(trials, ranks[len(ranks) - k :])),
    ]


def _logs(values: pd.Series) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0 or (v <= 0).any():
        return np.array([], dtype=float)  # a zero or negative figure has no log scale
    return np.asarray(np.log(v), dtype=float)


def _pooled_var(groups: list[np.ndarray]) -> float:
    """The run's typical variance of one round: the median of the points' variances, each
    scaled by its chi-square median (robust to the few points an episode blew up)."""
    scaled = [
        float(np.var(y, ddof=1)) / _chi2_median_share(len(y) - 1) for y in groups if len(y) >= 2
    ]
    return statistics.median(scaled) if scaled else math.nan


def _moderated(y: np.ndarray, pooled: float, prior_dof: float) -> tuple[float, float]:
    """(moderated variance, its degrees of freedom) of one point's rounds."""
    dof = len(y) - 1
    if math.isnan(pooled) or prior_dof <= 0:
        return (float(np.var(y, ddof=1)), float(dof)) if dof >= 1 else (math.nan, 0.0)
    own = float(np.var(y, ddof=1)) if dof >= 1 else 0.0
    return (prior_dof * pooled + dof * own) / (prior_dof + dof), prior_dof + dof


def halfwidth(var: float, dof: float, n_a: int, n_b: int) -> float:
    """Log half-width that holds the difference of a median of n_a and one of n_b rounds with
    probability PROMISE (before any widening)."""
    if math.isnan(var) or dof < 1:
        return math.nan
    return t95(dof) * math.sqrt(var) * math.hypot(median_sd(n_a), median_sd(n_b))


def calibrate(
    df: pd.DataFrame, metric: str, prior_dof: float = PRIOR_DOF
) -> tuple[pd.Series, Calibration]:
    """Per row of `df` (ok cells), the log half-width of its point's interval for `metric`
    (NaN where the point has one round or a non-positive figure), and the split-half checks."""
    hw = pd.Series(math.nan, index=df.index, dtype=float)
    if df.empty or metric not in df.columns:
        return hw, Calibration(metric, (), PROMISE, 1.0, math.nan)
    groups = []
    for key, point in df.groupby(POINT, dropna=False):
        g = point.dropna(subset=[metric])
        groups.append((g.index, _logs(g[metric]), g["trial"].to_numpy(dtype=int), key[0]))
    # Pooled within a scenario (a connection per request is noisier than a persistent echo),
    # over the whole run where a scenario has too few points of its own.
    pooled = _pooled_var([y for _, y, _, _ in groups])
    by_scenario = {
        sc: _pooled_var([y for _, y, _, s in groups if s == sc])
        for sc in {s for _, _, _, s in groups}
        if sum(len(y) >= 2 for _, y, _, s in groups if s == sc) >= MIN_SCENARIO_POINTS
    }
    scores: dict[str, list[float]] = {}
    plain: dict[int, float] = {}
    for k, (_idx, y, trials, scenario) in enumerate(groups):
        if len(y) < 2:
            continue
        var, dof = _moderated(y, by_scenario.get(scenario, pooled), prior_dof)
        plain[k] = halfwidth(var, dof, len(y), len(y))
        if len(trials) != len(y):
            continue  # a dropped non-positive figure: the halves cannot be told apart
        for name, a, b in halves(trials):
            if not (a.any() and b.any()):
                continue
            h = halfwidth(var, dof, int(a.sum()), int(b.sum()))
            if h > 0:
                diff = abs(float(np.median(y[a])) - float(np.median(y[b])))
                scores.setdefault(name, []).append(diff / h)
    checks = tuple(
        SplitCheck(name, len(v), sum(x <= 1.0 for x in v), float(np.quantile(v, PROMISE)))
        for name, v in scores.items()
    )
    widen = max(
        [1.0, *(c.needed for c in checks if c.points >= MIN_CHECK_POINTS and c.share < PROMISE)]
    )
    for k, (idx, _y, _t, _s) in enumerate(groups):
        if k in plain:
            hw.loc[idx] = plain[k] * widen
    cv = math.exp(math.sqrt(pooled)) - 1 if not math.isnan(pooled) else math.nan
    return hw, Calibration(metric, checks, PROMISE, widen, cv)


def annotate(
    df: pd.DataFrame, prior_dof: float = PRIOR_DOF
) -> tuple[pd.DataFrame, dict[str, Calibration]]:
    """`df` (a run's rows) with a column `hw_<metric>` per metric, each ok row carrying its
    point's log half-width (NaN elsewhere), and each metric's calibration. Computed once per
    run (analysis.results.read_run), and again by whoever edits a run's rows."""
    out = df.copy()
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    cals: dict[str, Calibration] = {}
    for metric in METRICS:
        hw, cal = calibrate(ok, metric, prior_dof)
        out[f"hw_{metric}"] = hw.reindex(out.index)
        cals[metric] = cal
    return out, cals


def paired_ratio_hold(
    ok: pd.DataFrame, scenarios: tuple[str, ...], reference: str, metric: str = "requests_per_s"
) -> tuple[float, int] | None:
    """How far (±, as a share) a repeat run's ratio to `reference` in the same cell may lie
    from this run's, at the PROMISE quantile over the points of `scenarios` (from how far the
    odd and the even rounds' paired ratios moved apart, scaled from halves to whole runs),
    with the number of points: the band within which such ratios reproduce."""
    d = ok[ok["scenario"].isin(scenarios)].dropna(subset=[metric])
    d = d[d[metric] > 0]
    if d.empty:
        return None
    key = ["scenario", "placement", "param_key"]
    moves = []
    for _, g in d.groupby(key, dropna=False):
        ref = g[(g["server"] == reference) & (g["server_args"].fillna("") == "")]
        if ref.empty:
            continue
        base = ref.set_index("trial")[metric]
        for _, s in g[g["server"] != reference].groupby(["server", "server_args"], dropna=False):
            r = s.set_index("trial")[metric]
            both = r.index.intersection(base.index)
            lr = np.log(r.loc[both].astype(float) / base.loc[both].astype(float))
            odd = lr[both % 2 == 1]
            even = lr[both % 2 == 0]
            if len(odd) and len(even):
                # halves of n rounds differ more than two whole runs of n rounds do: scaled
                whole = math.hypot(median_sd(len(both)), median_sd(len(both)))
                split = math.hypot(median_sd(len(odd)), median_sd(len(even)))
                moves.append(abs(float(np.median(odd)) - float(np.median(even))) * whole / split)
    if len(moves) < MIN_CHECK_POINTS:
        return None
    return math.exp(float(np.quantile(moves, PROMISE))) - 1, len(moves)
