"""How a benchmark states what it measured: names, groups, placement, and replayed clocks.

Every benchmark records the same `extra_info` keys (see `describe`), which is what
`records.micro` reads back: the pytest test id is for people, `extra_info["name"]` is the
stable name the analysis joins Python and C figures on.

Most benchmarks let pytest-benchmark time the operation itself (`pedantic` with `iterations=N`:
N operations inside one timed region, divided by N). Some operations cannot be timed from the
pytest process: a fork from a *small* parent happens in another interpreter, an asyncio task is
created and awaited inside a running loop, a contended counter's cost is the wall time of
several workers. Those measure themselves with `perf_counter_ns` and hand pytest-benchmark their
per-operation figures through `ReplayClock`: a timer that advances by exactly the measured
durations, so pytest-benchmark's statistics and JSON are the measured figures, unchanged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Literal

import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from microbench.placement import name_with
from records.schema import MicroPlacement

Group = Literal["process-control", "ipc", "shared-counter"]
LoopKind = Literal["default", "uvloop"]


def on_fresh_loop(kind: LoopKind, coro: Coroutine[object, object, list[float]]) -> list[float]:
    """Run a self-timing coroutine on a new event loop of `kind`, closed afterwards: each
    asyncio figure starts from a loop no other benchmark has used."""
    loop: asyncio.AbstractEventLoop = (
        uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    )
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@dataclass(frozen=True, slots=True)
class Effort:
    """How hard to measure: `fast` (tests, quick profile) or normal (`make bench`)."""

    fast: bool

    def pick(self, fast: int, normal: int) -> int:
        return fast if self.fast else normal


def describe(
    benchmark: BenchmarkFixture,
    *,
    op: str,
    group: Group,
    placement: MicroPlacement,
    cpus: Sequence[int],
    batch: int,
    what: str,
    **extra: object,
) -> None:
    """Label a benchmark: the keys `records.micro` relies on, plus free-form extras."""
    benchmark.group = group
    benchmark.extra_info.update(
        name=name_with(op, placement),
        op=op,
        group=group,
        language="python",
        placement=placement,
        cpus=list(cpus),
        batch=batch,  # operations per timed round: the figures are per operation
        what=what,
        **extra,
    )


class ReplayClock:
    """A pytest-benchmark timer that advances by durations measured elsewhere.

    Use it with `@pytest.mark.benchmark(timer=REPLAY)` and `replay(benchmark, per_op_ns)`.
    """

    __name__ = "replay_clock"  # how pytest-benchmark names the timer in its JSON

    def __init__(self) -> None:
        self._now_s = 0.0
        self._pending: deque[float] = deque()

    def __call__(self) -> float:
        return self._now_s

    def load(self, per_op_ns: Sequence[float]) -> None:
        self._pending = deque(float(ns) for ns in per_op_ns)

    def tick(self) -> None:
        """The replayed 'operation': the clock moves by the next measured duration."""
        self._now_s += self._pending.popleft() / 1e9

    @property
    def pending(self) -> int:
        return len(self._pending)


REPLAY = ReplayClock()


def timed(
    benchmark: BenchmarkFixture,
    target: Callable[[], object],
    *,
    rounds: int,
    iterations: int,
    warmup_rounds: int = 1,
) -> None:
    """pytest-benchmark's pedantic mode: `iterations` calls per timed round, divided by it."""
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        target, rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds
    )


def replay(benchmark: BenchmarkFixture, per_op_ns: Sequence[float]) -> None:
    """Record already-measured per-operation durations (ns) as one round each."""
    if not per_op_ns or any(ns <= 0 for ns in per_op_ns):
        raise ValueError(f"measured durations must be positive, got {list(per_op_ns)[:5]}")
    REPLAY.load(per_op_ns)
    timed(benchmark, REPLAY.tick, rounds=len(per_op_ns), iterations=1, warmup_rounds=0)
    if benchmark.disabled:  # --benchmark-disable: pedantic ran the target once, records nothing
        REPLAY.load([])
    elif REPLAY.pending:
        raise RuntimeError(f"{REPLAY.pending} measured durations were not recorded")
