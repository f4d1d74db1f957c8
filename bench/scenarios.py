"""The scenarios a profile may name, and the keys a profile may hold: the fixed shape of every
scenario (its mode, load model and defaults), as the team fixed them (results/README.md). The
profile reader (bench/profile.py) checks a profile against these and expands it into cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from records.registry import Model

# Every scenario's fixed shape: (mode, load model) and the defaults a profile may override.
SCENARIOS: dict[str, dict[str, Any]] = {
    "concurrency": {"mode": "persistent", "load": "closed", "size": [64]},
    "size": {"mode": "persistent", "load": "closed", "connections": [10]},
    "per-request": {"mode": "per-request", "load": "closed", "size": [64]},
    "open-loop": {
        "mode": "persistent",
        "load": "open",
        "size": [64],
        "connections": [10],
        "rate_fractions": [0.25, 0.5, 0.75],
    },
    # issue 21: every server at one offered rate, open loop, at 10, 100 and 1000 persistent
    # connections: the comparison at load that the server decides. The load generator cannot
    # saturate the cheapest servers on this machine, and a server's CPU per request falls as
    # its load rises (it batches more), so closed-loop figures taken at different rates do not
    # compare: one rate that every server sustains does. A pool gets a worker per connection
    # (`--workers N`): at 4 workers it would serve 4 clients, and its rate would not be this one.
    "at-load": {
        "mode": "persistent",
        "load": "open",
        "size": [64],
        "connections": [10, 100, 1000],
        "rates": [5000],
        "pool_per_connection": True,
    },
    # issue 23: the same servers with their clients a round trip away (bench/link.py): 0 is
    # loopback, the others a link of two namespaces and a delay element. One offered rate, open
    # loop, a new connection per request (each pays its handshake's round trip: a fork server
    # holds rate x RTT children) and persistent connections. Enough slots for every request in
    # flight at 50 ms.
    "link": {
        "mode": "per-request",
        "modes": ["per-request", "persistent"],
        "load": "open",
        "size": [64],
        "connections": [100],
        "rates": [400],
        "rtts_ms": [0, 1, 10, 50],
    },
    "placement": {
        "mode": "persistent",
        "load": "closed",
        "size": [64],
        "connections": [1],
        "placements": ["split", "shared"],
    },
    # issue 21: at one offered rate (open loop), not closed loop: the client saturated before
    # the servers did, so closed-loop cells ran each counter at its own rate, and CPU per
    # request (what a count costs the server) is only comparable at one rate.
    "shared-counter": {
        "mode": "persistent",
        "load": "open",
        "size": [64],
        "connections": [10],
        "rates": [20000],
    },
    # issue 7: `connections` is the total a server holds; `active` of them measure latency in a
    # closed loop and the rest are idle (loadgen --idle: opened first, held, echoed once at end).
    "scale": {
        "mode": "persistent",
        "load": "closed",
        "size": [64],
        "connections": [100, 1000, 3000, 10000],
        "active": 10,
    },
    # issue 7's teaching switches: the process server with the book's bug switched on next to
    # the same server as Fig. 12.5 writes it, under the same connection-per-request load.
    "leak-connfd": {
        "mode": "per-request",
        "load": "closed",
        "size": [64],
        "connections": [10],
        "servers": ["process"],
        "fault_arg": "--leak-connfd",
        "nofile": 256,  # low, so the leak reaches EMFILE within a short cell
        "close_wait": True,
    },
    # issue 13: one connection at a time through each forking server, every step recorded
    # (servers/xray.py, servers/c/process.c): where a fork's cost goes, Python beside C, and
    # the Python servers again with gc.freeze() before the first fork.
    "xray": {
        "mode": "per-request",
        "load": "closed",
        "size": [64],
        "connections": [1],
        "servers": ["process", "inetd", "c-process"],
        "xray": True,
        "gc_freeze": ["process"],  # inetd's child execs cat: nothing of Python is left to fault
    },
    # issue 14: the same servers on 1, 2, 4, ... CPUs, connection per request, the load
    # generator on the rest. Processes can use more cores in Python; threads share one
    # interpreter lock; an event loop is one thread. A count that leaves the load generator
    # fewer CPUs than the server is skipped at run time, and the whole sweep when fewer than two
    # counts fit (bench/runner.py says so in one line).
    "cores": {
        "mode": "per-request",
        "load": "closed",
        "size": [64],
        "connections": [100],
        "servers": ["process", "prefork", "thread", "uvloop"],
        "server_cpus": [1, 2, 4, 8, 16],
    },
    "naive-reaper": {
        "mode": "per-request",
        "load": "closed",
        "size": [64],
        "connections": [10],
        "servers": ["process"],
        "fault_arg": "--naive-reaper",
    },
}
FAULT_SCENARIOS = ("leak-connfd", "naive-reaper")
# The memory guard (bench/cell.py): stop a cell when MemAvailable falls below this share of
# MemTotal, whatever the profile's cap on the server's PSS says.
DEFAULT_MEM_AVAILABLE_FLOOR = 0.15

# The counter each model can keep (servers' --shared-counter); "off" (null) is always run too.
DEFAULT_COUNTER_MODES: dict[str, list[str]] = {
    Model.PROCESS.value: ["naive", "shm", "pipe"],
    Model.THREAD.value: ["lock"],
    Model.EVENT.value: ["global"],
}

PLACEMENTS = ("split", "shared", "unpinned")


# --------------------------------------------------------------------------- the TOML, typed
# issue 22: a profile is read by the record layer's one typed reader (records.schema.from_dict):
# every key's type is checked there, unknown keys refused there. What is left to bench/profile.py
# is what types cannot say: ranges, names that must exist, keys that only fit some scenarios.


@dataclass(frozen=True, slots=True)
class ScenarioTable:
    """One [[scenarios]] table as a profile writes it (None: the scenario's own default)."""

    name: str
    why: str = ""
    servers: list[str] | None = None
    connections: list[int] | None = None
    size: list[int] | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    rate_fractions: list[float] | None = None
    rates: list[float] | None = None
    placements: list[str] | None = None
    counter_modes: dict[str, list[str]] | None = None
    counter_off: bool = True
    server_args: dict[str, list[str]] | None = None
    active: int | None = None
    memory_cap_mb: float | None = None
    nofile: int | None = None
    gc_freeze: list[str] | None = None
    server_cpus: list[int] | None = None
    modes: list[str] | None = None  # the link scenario: per-request and/or persistent
    rtts_ms: list[float] | None = None  # the link scenario: round trips, 0 = loopback


@dataclass(frozen=True, slots=True)
class MicrobenchTable:
    run: bool = False
    fast: bool = True


@dataclass(frozen=True, slots=True)
class ProfileTable:
    """A whole profile as its TOML says it (bench/profiles/*.toml)."""

    scenarios: list[ScenarioTable]
    name: str = "custom"
    description: str = ""
    trials: int = 3
    duration_s: float = 1.0
    warmup_s: float = 0.5
    timeout_s: float = 5.0
    time_budget_s: float | None = None
    servers: list[str] | None = None
    server_args: dict[str, list[str]] = field(default_factory=dict)
    placement: str = "split"
    microbench: MicrobenchTable = field(default_factory=MicrobenchTable)
    client_workers: int | None = None
    memory_cap_mb: float | None = None
    mem_available_floor: float = DEFAULT_MEM_AVAILABLE_FLOOR


# A one-item list may be written as its item (`connections = 10`): widened before the typed read.
_LIST_KEYS = frozenset(
    {"servers", "connections", "size", "rate_fractions", "rates", "placements", "gc_freeze",
     "server_cpus", "modes", "rtts_ms"}
)  # fmt: skip


def widen(table: Mapping[str, Any]) -> dict[str, Any]:
    """`table` with every scalar written for a list key made a one-item list."""
    return {
        k: [v] if k in _LIST_KEYS and isinstance(v, str | int | float) else v
        for k, v in table.items()
    }
