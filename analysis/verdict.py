"""Verdicts that can fail: the rule every scorecard claim maps its figures through.

A claim of the book predicts a direction ("a process is slower than a thread"). The run gives,
for each side, a median with an interval: the interval that holds a repeat run's median 90% of
the time (analysis/noise.py), or a microbenchmark's [min-max] over rounds. The rule, the same
for every comparison:

* **confirmed**: the intervals do not overlap, in the direction the book predicts;
* **contradicted**: they do not overlap, in the other direction: this machine disagrees with
  the book, and the report says so plainly (a finding, not a failure);
* **not confirmed**: they overlap, with at least MIN_TRIALS on each side: the predicted
  difference is inside this run's noise;
* **inconclusive**: a side is missing, has fewer than MIN_TRIALS, is client-saturated or
  starved (it did not measure what its label says), so the run cannot decide.

A claim made of several comparisons (its parts) shows every part's verdict, and its own verdict
is what the decided parts agree on: confirmed when every part that could decide confirms (the
undecided ones are named: "confirmed by the microbenchmarks; end to end undecided"), likewise
contradicted or not confirmed; **mixed** when decided parts disagree; inconclusive when no part
could decide. Never "not confirmed" when nothing overlapped (issue 21). The threshold is the
data's own spread, not a fixed percentage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from analysis.stats import Figure

MIN_TRIALS = 3


class Verdict(StrEnum):
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not confirmed"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    MIXED = "mixed"


RULE = (
    "confirmed when the two intervals (each holds a repeat run's median 90% of the time) do "
    "not overlap in the book's "
    "direction; contradicted when they do not overlap the other way; not confirmed when they "
    f"overlap with at least {MIN_TRIALS} trials each; inconclusive when a side is missing, "
    "client-saturated, starved or has fewer trials"
)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    why: str


def usable(f: Figure | None) -> str | None:
    """Why a figure cannot decide anything, or None when it can."""
    if f is None:
        return "not measured in this run"
    if f.starved:
        return "a cell did not serve every client it names"
    if f.saturated:
        return "client-saturated: the load generator was the limit"
    if f.n < MIN_TRIALS:
        return f"only {f.n} trial(s)"
    return None


def less(low: Figure | None, high: Figure | None, what: str) -> Outcome:
    """The book predicts `low` < `high` (e.g. conn/s of a process vs a thread server)."""
    for f in (low, high):
        bad = usable(f)
        if bad:
            return Outcome(Verdict.INCONCLUSIVE, f"{what}: {bad}")
    assert low is not None
    assert high is not None
    if low.hi < high.lo:
        return Outcome(Verdict.CONFIRMED, f"{what}: the intervals do not overlap")
    if low.lo > high.hi:
        return Outcome(
            Verdict.CONTRADICTED, f"{what}: the other way round, beyond the trials' spread"
        )
    return Outcome(Verdict.NOT_CONFIRMED, f"{what}: the intervals overlap (inside the noise)")


def combine(outcomes: Iterable[Outcome]) -> Verdict:
    decided = {o.verdict for o in outcomes if o.verdict != Verdict.INCONCLUSIVE}
    if not decided:
        return Verdict.INCONCLUSIVE
    if len(decided) == 1:
        return decided.pop()
    return Verdict.MIXED


_ORDER = (Verdict.CONFIRMED, Verdict.CONTRADICTED, Verdict.NOT_CONFIRMED, Verdict.INCONCLUSIVE)
_PART_WORDS = {
    Verdict.CONFIRMED: "confirmed",
    Verdict.CONTRADICTED: "contradicted",
    Verdict.NOT_CONFIRMED: "not confirmed (inside the noise)",
    Verdict.INCONCLUSIVE: "undecided",
}


def parts_text(outcomes: list[Outcome]) -> str:
    """Every part's verdict, grouped: 'a; b. undecided: c (why)'. The group that gives the
    claim its verdict comes first, unlabelled; a one-part claim is just its reason."""
    if len(outcomes) == 1:
        return outcomes[0].why
    verdict = combine(outcomes)
    groups = []
    for v in sorted(_ORDER, key=lambda v: v != verdict):
        whys = [o.why for o in outcomes if o.verdict == v]
        if whys:
            head = "" if v == verdict else f"{_PART_WORDS[v]}: "
            groups.append(head + "; ".join(whys))
    return ". ".join(groups)
