"""What the load generator can do, in one place: the profile refuses a cell beyond these before
any cell runs (`show-profile` says so in one line), and the load generator enforces them too."""

from __future__ import annotations

MAX_CONNECTIONS = 10_000  # measured connections of one load, and idle ones besides
MAX_SIZE = 1 << 20  # bytes per message
