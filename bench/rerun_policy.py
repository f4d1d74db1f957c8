"""The re-run policy of a run (issue 20): which trials the host spoiled, and which points are
too noisy to decide anything. Pure functions of the run's results so far; the runner
(bench/runner.py) acts on them. The thresholds live once, on the record layer
(records/rerun.py), where the analysis reads them too.
"""

from __future__ import annotations

import math
import statistics

from bench.profile import CellSpec, Profile
from records import schema
from records.rerun import EPISODE_SPEED, OUTLIER_SHARE

# Extra rounds (a profile's time_budget_s): the headline points whose trials disagree by more
# than this CV get one more round, while the budget lasts.
DECIDE_CV = 0.10
# Over the re-run cap, measured foreign CPU ranks above any indirect evidence (a canary's
# 1 - speed is below 1; an outlier's |log ratio| is below this for any ratio a cell can show).
FOREIGN_FIRST = 100.0
DECIDE_SCENARIOS = ("concurrency", "per-request")


def _served(specs: list[CellSpec], results: dict[str, schema.CellResult]) -> dict[str, float]:
    """A point's finished trials that served requests: requests/s by cell id."""
    return {
        sp.cell_id: r.load.requests_per_s
        for sp in specs
        if (r := results.get(sp.cell_id)) is not None
        and r.status == "ok"
        and r.load is not None
        and r.load.requests_per_s > 0
    }


def spoiled(
    profile: Profile,
    results: dict[str, schema.CellResult],
    canaries: list[schema.CanarySample],
    cell_times: dict[str, float],
) -> dict[str, tuple[float, str]]:
    """Trials to run again: (how badly, why) by cell id. Beside foreign CPU (FOREIGN_FIRST +
    its share of the window: measured on the server's own CPU, it ranks first), next to a
    slow canary (how much slower), or far from their siblings either way (the log of the
    ratio)."""
    why: dict[str, tuple[float, str]] = {}
    if len(canaries) >= 3:
        spin = statistics.median(c.spin_us for c in canaries)
        rtt = statistics.median(c.pipe_rtt_us for c in canaries)
        for k, c in enumerate(canaries):
            speed = min(spin / c.spin_us, rtt / c.pipe_rtt_us)
            if speed >= EPISODE_SPEED:
                continue
            lo = canaries[k - 1].t_s if k > 0 else 0.0
            hi = canaries[k + 1].t_s if k + 1 < len(canaries) else math.inf
            for cell_id, t in cell_times.items():
                if lo <= t <= hi and results[cell_id].status == "ok":
                    why[cell_id] = (
                        1.0 - speed,
                        f"the canary at {c.at} ran at {speed:.2f}x the run's median speed "
                        f"(spin {c.spin_us:,.0f} us, pipe round trip {c.pipe_rtt_us:,.0f} us)",
                    )
    points: dict[str, list[CellSpec]] = {}
    for spec in profile.cells:
        points.setdefault(spec.point_key, []).append(spec)
    for specs in points.values():
        rps = _served(specs, results)
        if len(rps) < 3:
            continue
        med = statistics.median(rps.values())
        for cell_id, x in rps.items():
            far = x < OUTLIER_SHARE * med or x > med / OUTLIER_SHARE
            if far and cell_id not in why:
                why[cell_id] = (
                    abs(math.log(x / med)),
                    f"{x:,.0f} req/s, {x / med:.2f}x the median of its {len(rps)} trials",
                )
    for cell_id, r in results.items():
        cpu = r.cpu
        if r.status == "ok" and cpu is not None and cpu.foreign_flag and cell_id not in why:
            why[cell_id] = (
                # direct evidence ranks first: the server's own CPU was shared, measured
                FOREIGN_FIRST + (cpu.foreign_s or 0) / max(cpu.window_s, 1e-9),
                f"foreign CPU on the server's CPUs: {(cpu.foreign_s or 0) * 1e3:,.0f} ms in "
                f"its {cpu.window_s:.2f} s window",
            )
    # a cell is re-run at most once: a second attempt stands, whatever it measured
    return {k: v for k, v in why.items() if results[k].attempt < 2}


def noisy_points(
    profile: Profile, results: dict[str, schema.CellResult]
) -> list[tuple[float, CellSpec, int]]:
    """The headline points whose trials disagree by more than DECIDE_CV: (CV, the point's last
    planned cell, the trial number its next round takes), the noisiest first."""
    points: dict[str, list[CellSpec]] = {}
    for spec in profile.cells:
        if spec.scenario in DECIDE_SCENARIOS and spec.ref_point is None:
            points.setdefault(spec.point_key, []).append(spec)
    noisy: list[tuple[float, CellSpec, int]] = []
    for specs in points.values():
        rps = list(_served(specs, results).values())
        if len(rps) >= 2 and (cv := statistics.stdev(rps) / statistics.mean(rps)) > DECIDE_CV:
            noisy.append((cv, specs[-1], max(sp.trial for sp in specs) + 1))
    noisy.sort(key=lambda x: -x[0])
    return noisy
