"""Intervals that hold (issue 20): analysis/noise.py against runs whose noise is known.

Synthetic runs, drawn from a fixed seed: points with their own spread (1% to 25% of a round),
three rounds each, as the standard profile runs them. An interval is a promise about the next
run, so each test draws a second run of the same machine and counts how many of its medians fall
inside the first run's intervals: the share must reach what is promised, within the sampling
error of the number of points. A host that drifts between rounds must be caught by the run's own
split-half check and the intervals widened, not left to miss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import noise
from analysis.stats import summarise

POINTS = 240  # standard error of a 90% share over 240 points: 1.9 percentage points


def run(
    seed: int, rounds: int = 3, drift: float = 0.0, tail: float = 0.0, spread_hi: float = 0.25
) -> pd.DataFrame:
    """One run: POINTS points x `rounds` rounds of requests/s. `drift`: the log-sd of a
    round's common slowdown (a host that moves between rounds); `tail`: the share of trials
    hit by an episode (0.5x to 0.7x)."""
    rng = np.random.default_rng(seed)
    spread = np.random.default_rng(0).uniform(0.01, spread_hi, POINTS)  # the same machine
    true = np.random.default_rng(1).uniform(1e3, 1e5, POINTS)
    rows = []
    for r in range(1, rounds + 1):
        shift = rng.normal(0, drift) if drift else 0.0
        for p in range(POINTS):
            x = true[p] * np.exp(shift + rng.normal(0, spread[p]))
            if tail and rng.random() < tail:
                x *= rng.uniform(0.5, 0.7)
            rows.append(
                {
                    "scenario": ("concurrency", "per-request")[p % 2],
                    "server": f"s{p % 11}",
                    "label": f"s{p % 11}",
                    "server_args": "",
                    "placement": "split",
                    "param_key": f"p{p}",
                    "trial": r,
                    "status": "ok",
                    "requests_per_s": x,
                    "client_saturated": False,
                    "client_port_bound": False,
                }
            )
    return noise.annotate(pd.DataFrame(rows))[0]


def held(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The share of run b's medians inside run a's intervals."""
    sa = summarise(a, "requests_per_s").set_index("param_key")
    sb = summarise(b, "requests_per_s").set_index("param_key")
    inside = (sb["median"] >= sa["lo"]) & (sb["median"] <= sa["hi"])
    return float(inside.mean())


def test_a_steady_host_holds_the_promise_and_needs_no_widening() -> None:
    a, b = run(10), run(11)
    share = min(held(a, b), held(b, a))
    print(f"steady host: {share:.1%} of the other run's medians inside (promised 90%)")
    assert share >= noise.PROMISE - 3 * 0.019
    cal = noise.calibrate(a, "requests_per_s")[1]
    assert cal.widen == 1.0
    assert {c.name for c in cal.checks} == {"odd/even rounds", "early/late rounds"}


def test_the_min_max_of_three_trials_would_not_have_held() -> None:
    """What the old report promised 75% for: measured, it holds about 60% of repeat medians."""
    a, b = run(10), run(11)
    sa = summarise(a, "requests_per_s").set_index("param_key")
    sb = summarise(b, "requests_per_s").set_index("param_key")
    share = float(((sb["median"] >= sa["min"]) & (sb["median"] <= sa["max"])).mean())
    assert share < 0.70


def test_a_drifting_host_still_holds() -> None:
    """Rounds several minutes apart, each slowed or sped up by the host as a whole, and one trial
    in twenty hit by an episode: the rounds' spread carries the drift into every interval."""
    shares = []
    for seed in range(20, 30, 2):
        a, b = run(seed, drift=0.12, tail=0.05), run(seed + 1, drift=0.12, tail=0.05)
        shares.append(held(a, b))
    print(f"drifting host: held {[f'{s:.0%}' for s in shares]}")
    assert float(np.median(shares)) >= noise.PROMISE - 0.05


def test_halves_that_disagree_beyond_the_pooled_noise_widen_every_interval() -> None:
    """A quiet run in which a quarter of the points swing between their odd and even rounds
    (what a neighbour that comes and goes does to the cells it lands on): the pooled noise says
    the intervals can be narrow, the split-half says they did not hold, and every interval of
    the metric is widened until they do."""
    d = run(14, rounds=4, spread_hi=0.03)
    d["requests_per_s"] = d["requests_per_s"].where(
        (d["param_key"].str[1:].astype(int) % 4 != 0) | (d["trial"] % 2 == 1),
        d["requests_per_s"] * 1.25,
    )
    before = summarise(d, "requests_per_s")
    hw, cal = noise.calibrate(d, "requests_per_s")
    odd_even = next(c for c in cal.checks if c.name == "odd/even rounds")
    print(f"split-half held {odd_even.share:.0%}, widened {cal.widen:.2f}x")
    assert odd_even.share < noise.PROMISE
    assert cal.widen > 1.0
    after = summarise(d.assign(hw_requests_per_s=hw), "requests_per_s")
    assert (after["hi"] >= before["hi"]).all()
    assert (after["hi"] > before["hi"]).any()


def test_an_interval_is_never_narrower_than_its_trials() -> None:
    a = run(12, tail=0.1)
    s = summarise(a, "requests_per_s")
    assert (s["lo"] <= s["min"]).all()
    assert (s["hi"] >= s["max"]).all()
    assert (s["lo"] < s["median"]).all()
    assert (s["median"] < s["hi"]).all()


def test_one_trial_has_no_interval_to_promise() -> None:
    a = run(13, rounds=1)
    s = summarise(a, "requests_per_s")
    assert (s["lo"] == s["median"]).all()
    assert (s["hi"] == s["median"]).all()
    assert noise.calibrate(a, "requests_per_s")[1].checks == ()


def test_the_t_table_and_the_median_spread_are_what_they_say() -> None:
    assert noise.t95(4) == 2.132
    assert noise.t95(1e9) < 1.65
    assert noise.t95(4) > noise.t95(5) > noise.t95(11) > noise.t95(100)
    rng = np.random.default_rng(3)
    for n in (2, 3, 5):
        sd = float(np.median(rng.standard_normal((200_000, n)), axis=1).std())
        assert abs(sd - noise.median_sd(n)) < 0.01, n
