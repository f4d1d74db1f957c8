"""What the load generator can do, in one place: the profile refuses a cell beyond these before
any cell runs (`show-profile` says so in one line), and the load generator enforces them too."""

from __future__ import annotations

MAX_CONNECTIONS = 10_000  # measured connections of one load, and idle ones besides
MAX_SIZE = 1 << 20  # bytes per message
MAX_WORKERS = 64  # load generator worker processes
MAX_SOURCE_ADDRS = 250  # loopback source addresses: 127.0.0.2 .. 127.0.0.251

# Opening idle connections (the scale sweep): a budget per connection on top of one timeout. A
# fork server pinned to one CPU with thousands of children was seen taking ~8 ms per new
# connection here (fork plus the child's copy-on-write faults, competing with its siblings): 10 ms
# keeps that a measurement, while a server that has stopped accepting still ends the phase. A
# server slower than 100 new connections/s is reported as having reached its limit.
OPEN_BUDGET_PER_CONN_S = 0.010


def open_deadline_s(count: int, timeout_s: float) -> float:
    """The longest the opening of `count` idle connections may take: the load generator stops
    there, and the runner sizes its own wait on it."""
    return 2 * timeout_s + count * OPEN_BUDGET_PER_CONN_S
