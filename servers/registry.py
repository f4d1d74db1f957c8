"""The one registry of echo servers.

Every concurrency model the suite compares is named here once. The CLI (`python -m servers`),
the tests (a test fails if a registered server has no coverage), the runner's profiles and the
report's labels all read this table, so a server is added in exactly one place.

Modules are named, not imported: `python -m servers process` must not pay for asyncio or
uvloop in the parent it forks from (a fork's cost grows with the parent's memory and imports,
CS:APP 12.1.2), so `load()` imports a model's module only when it is chosen.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType


class Model(StrEnum):
    """How a server gets concurrency: the axis of CS:APP chapter 12."""

    PROCESS = "process"  # 12.1: one address space per connection or per worker
    THREAD = "thread"  # 12.3: threads share one address space
    EVENT = "event"  # 12.2: one thread multiplexes descriptors


class Role(StrEnum):
    """What a server stands for in the book's argument: claims name servers by role, never by
    their place in a sort order."""

    BOOK_PROCESS = "book-process"  # CS:APP Fig. 12.5: the process-based server under test
    BOOK_THREAD = "book-thread"  # CS:APP Fig. 12.14: its threaded twin
    FORK_EXEC = "fork-exec"  # fork + exec per connection: nothing of the parent is kept
    PROCESS_POOL = "process-pool"
    THREAD_POOL = "thread-pool"
    EVENT_LOOP = "event-loop"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    model: Model
    module: str  # dotted path; imported lazily by load()
    label: str  # short human label for charts and tables
    description: str
    reference: str  # where the model comes from (book figure or practice)
    role: Role
    forks_per_connection: bool = False

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


_SPECS = (
    ServerSpec(
        "process",
        Model.PROCESS,
        "servers.process",
        "fork per connection",
        "parent accepts and forks a child per client; SIGCHLD handler reaps in a loop",
        "CS:APP Fig. 12.5",
        role=Role.BOOK_PROCESS,
        forks_per_connection=True,
    ),
    ServerSpec(
        "inetd",
        Model.PROCESS,
        "servers.inetd",
        "fork + exec per connection",
        "child dup2s the connection onto stdin/stdout and execs a handler (cat or python)",
        "fork/exec/waitpid (CS:APP 8.4), inetd",
        role=Role.FORK_EXEC,
        forks_per_connection=True,
    ),
    ServerSpec(
        "prefork",
        Model.PROCESS,
        "servers.prefork",
        "prefork workers",
        "N worker processes accept on one shared listening socket",
        "Apache prefork, gunicorn sync",
        role=Role.PROCESS_POOL,
    ),
    ServerSpec(
        "thread",
        Model.THREAD,
        "servers.thread",
        "thread per connection",
        "main thread accepts and starts a detached thread per client",
        "CS:APP Fig. 12.14",
        role=Role.BOOK_THREAD,
    ),
    ServerSpec(
        "threadpool",
        Model.THREAD,
        "servers.threadpool",
        "prethreaded pool",
        "N worker threads take connected sockets from a bounded buffer (sbuf)",
        "CS:APP Fig. 12.28",
        role=Role.THREAD_POOL,
    ),
    ServerSpec(
        "multiplex",
        Model.EVENT,
        "servers.multiplex",
        "I/O multiplexing (selectors)",
        "one thread, one selector, a state machine per connection",
        "CS:APP 12.2",
        role=Role.EVENT_LOOP,
    ),
    ServerSpec(
        "asyncio",
        Model.EVENT,
        "servers.asyncio_server",
        "asyncio",
        "asyncio Protocol on the default event loop",
        "asyncio",
        role=Role.EVENT_LOOP,
    ),
    ServerSpec(
        "uvloop",
        Model.EVENT,
        "servers.uvloop_server",
        "uvloop",
        "the asyncio Protocol server on uvloop (libuv)",
        "uvloop",
        role=Role.EVENT_LOOP,
    ),
)

SERVERS: dict[str, ServerSpec] = {spec.name: spec for spec in _SPECS}


def by_role(role: Role) -> str:
    """The one server that plays `role` (the book's two servers); the first for shared roles."""
    return next(spec.name for spec in _SPECS if spec.role == role)


def get(name: str) -> ServerSpec:
    try:
        return SERVERS[name]
    except KeyError:
        known = ", ".join(SERVERS)
        raise KeyError(f"unknown server {name!r} (known: {known})") from None
