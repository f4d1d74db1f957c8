"""Microbenchmark figures for the report, read only through `records.micro`.

The microbenchmarks (fork + waitpid, fork + exec, thread start, task creation, IPC round trips,
shared counters: CS:APP 12.1.2's "overhead for process control and IPC") write
`microbench.json` (pytest-benchmark) and `microbench_c.json` (the C floor) into the run
directory; `records.micro.read_microbench(run_dir)` is their one reader. This module turns
its `MicroResult`s into a DataFrame, one row per (name, language), in microseconds per
operation, so the chart and the scorecard never look at the files themselves. A run without
microbenchmarks gives an empty frame and a reason, shown as "not measured in this run".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.stats import Figure
from records.micro import MicrobenchError, read_microbench

COLUMNS = [
    "name",
    "op",
    "group",
    "impl",
    "placement",
    "median_us",
    "min_us",
    "max_us",
    "rounds",
    "what",
]


def read(run_dir: Path) -> tuple[pd.DataFrame, str]:
    """A run's microbenchmark figures, or an empty frame and why there are none. Called once
    per run, by `analysis.results.read_run`: every other module reads `Run.micro`."""
    try:
        results = read_microbench(run_dir)
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


@dataclass(frozen=True)
class LikeForLike:
    """The report's like-for-like IPC figures, both ends on different CPUs (us, medians): a
    message and its answer between processes (pipe) and between threads (queue.Queue), and a
    locked counter update shared by 2 processes (shm) and by 2 threads (threading.Lock)."""

    pipe: float | None
    queue: float | None
    shm: float | None
    lock: float | None


def like_for_like(m: pd.DataFrame) -> LikeForLike:
    return LikeForLike(
        figure(m, "rtt.pipe[split]"),
        figure(m, "rtt.thread_queue[split]"),
        figure(m, "counter.shm_lock.2w[split]"),
        figure(m, "counter.thread_lock.2w[split]"),
    )


def fig(m: pd.DataFrame, name: str, impl: str = "python") -> Figure | None:
    """One microbenchmark as a Figure: its median over rounds, [min-max], rounds as n."""
    if m.empty:
        return None
    sel = m[(m["name"] == name) & (m["impl"] == impl)]
    if sel.empty:
        return None
    r = sel.iloc[0]
    return Figure(
        float(r["median_us"]),
        float(r["min_us"]),
        float(r["max_us"]),
        int(r["rounds"]),
        float("nan"),
        False,
    )


def figure(m: pd.DataFrame, name: str, impl: str = "python") -> float | None:
    """Median microseconds of one named microbenchmark, or None when not measured."""
    f = fig(m, name, impl)
    return f.median if f is not None else None


# Every microbenchmark in words, in reading order, with what it belongs to. A report names a
# benchmark by what it does ("pipe round trip between two processes on different CPUs"), never
# by its key; the order puts like beside like (a 1 GB fork beside the other forks).
_PLACE = {"shared": "on one CPU", "split": "on different CPUs", "n/a": ""}
_WORDS: list[tuple[str, str, str]] = [
    ("fork_wait.small_parent", "fork + exit + waitpid, small parent", "creating work"),
    ("fork_wait.pytest_parent", "fork + exit + waitpid, pytest-sized parent", "creating work"),
    ("fork_wait.heap_100mb", "fork + exit + waitpid, parent with 100 MiB touched", "creating work"),
    ("fork_wait.heap_1gb", "fork + exit + waitpid, parent with 1 GiB touched", "creating work"),
    ("fork_exec_wait.true", "fork + exec /bin/true + waitpid", "creating work"),
    ("posix_spawn.true", "posix_spawn /bin/true + wait", "creating work"),
    ("subprocess_run.true", "subprocess.run(/bin/true)", "creating work"),
    ("mp_start_join.fork", "multiprocessing Process start + join (fork)", "creating work"),
    (
        "mp_start_join.forkserver",
        "multiprocessing Process start + join (forkserver)",
        "creating work",
    ),
    ("mp_start_join.spawn", "multiprocessing Process start + join (spawn)", "creating work"),
    ("thread_start_join", "thread start + join", "creating work"),
    ("asyncio_task.default", "asyncio task create + await (default loop)", "creating work"),
    ("asyncio_task.uvloop", "asyncio task create + await (uvloop)", "creating work"),
    ("rtt.pipe", "pipe round trip between two processes", "message between processes"),
    ("rtt.socketpair", "socketpair round trip between two processes", "message between processes"),
    (
        "rtt.mp_pipe",
        "multiprocessing Pipe round trip between two processes",
        "message between processes",
    ),
    (
        "rtt.mp_queue",
        "multiprocessing Queue round trip between two processes",
        "message between processes",
    ),
    (
        "rtt.thread_queue",
        "queue.Queue round trip between two threads",
        "message inside one process",
    ),
    ("rtt.thread_pipe", "pipe round trip between two threads", "message inside one process"),
    (
        "rtt.asyncio_queue.default",
        "asyncio.Queue round trip between two tasks (default loop)",
        "message inside one process",
    ),
    (
        "rtt.asyncio_queue.uvloop",
        "asyncio.Queue round trip between two tasks (uvloop)",
        "message inside one process",
    ),
    ("counter.shm_lock", "counter in shared memory + process lock", "shared counter"),
    ("counter.thread_lock", "counter under threading.Lock", "shared counter"),
    ("counter.asyncio_nolock", "plain counter (no lock needed)", "shared counter"),
    ("counter.thread_plain", "a store to a variable the threads share", "shared counter"),
    ("counter.pipe_message", "one message per update over a pipe, to the parent", "shared counter"),
]


def _split(name: str) -> tuple[str, str]:
    """('rtt.pipe', 'split') from 'rtt.pipe[split]'."""
    base, _, rest = name.partition("[")
    return base, rest.rstrip("]")


def words(name: str) -> str:
    """A benchmark key in plain words: 'rtt.pipe[split]' -> 'pipe round trip between two
    processes on different CPUs'."""
    base, place = _split(name)
    workers = ""
    if base.endswith((".1w", ".2w")):
        base, n = base.rsplit(".", 1)
        count = int(n[0])
        one, many = (
            ("task", "tasks")
            if "asyncio" in base
            else ("process", "processes")
            if "shm" in base or "message" in base
            else ("thread", "threads")
        )
        workers = f", {count} {many if count > 1 else one}"
    for key, text, _ in _WORDS:
        if base == key:
            where = _PLACE.get(place, place)
            return f"{text}{workers}{' ' + where if where else ''}"
    return name


def category(name: str) -> str:
    base = _split(name)[0].removesuffix(".1w").removesuffix(".2w")
    return next((cat for key, _, cat in _WORDS if key == base), "other")


def order(name: str) -> tuple[int, str]:
    """Sort key: the reading order of _WORDS, then the key (placements side by side)."""
    base = _split(name)[0].removesuffix(".1w").removesuffix(".2w")
    keys = [k for k, _, _ in _WORDS]
    return (keys.index(base) if base in keys else len(keys), name)
