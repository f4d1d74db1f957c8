"""The one registry of echo servers: metadata on the record layer (issue 22), so the report can
name and style a server without importing the servers package.

Every concurrency model the suite compares is named here once. The CLI (`python -m servers`),
the tests (a test fails if a registered server has no coverage), the runner's profiles and the
report's labels all read this table, so a server is added in exactly one place.

Modules are named, not imported: `python -m servers process` must not pay for asyncio or
uvloop in the parent it forks from (a fork's cost grows with the parent's memory and imports,
CS:APP 12.1.2), so `load()` imports a model's module only when it is chosen.

Each server declares the options it takes (its `options` and `counter_modes`): the CLI offers
exactly those, and the profiles refuse a scenario that needs one a server lacks. The C servers
(`native`, built by `make native` into servers/c/bin) take the same command line and keep the
same contract; the CLI execs them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType

# The C servers' programs, built by `make native` beside their sources in servers/c (the
# registry is metadata on the record layer; the code that starts a server stays in servers/).
NATIVE_DIR = Path(__file__).resolve().parents[1] / "servers" / "c" / "bin"


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
    C_BOOK_PROCESS = "c-book-process"  # Fig. 12.5 in C: what the model costs without Python
    C_BOOK_THREAD = "c-book-thread"  # Fig. 12.14 in C
    CEILING = "ceiling"  # one thread, epoll, in C: the most this machine echoes
    CEILING_URING = "ceiling-uring"  # one thread, io_uring, in C: the second ceiling (issue 24)


class Option(StrEnum):
    """A command-line switch a server may take beyond --host/--port/--backlog."""

    WORKERS = "workers"  # pool size
    LEAK_CONNFD = "leak-connfd"  # teaching bug: the parent keeps connfd (CS:APP 12.1.1)
    NAIVE_REAPER = "naive-reaper"  # teaching bug: one waitpid per SIGCHLD (8.5.5)
    HANDLER = "handler"  # inetd: what the child execs
    XRAY = "xray"  # record every connection's fork, echo, exit and reap (servers.xray)
    GC_FREEZE = "gc-freeze"  # gc.freeze() before the first fork


_PY_FORK = frozenset({Option.XRAY, Option.GC_FREEZE})
LEAN_FLAGS = ("-S",)  # the interpreter flags of a forking Python server (servers.cli)


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
    options: frozenset[Option] = frozenset()
    counter_modes: tuple[str, ...] = ()  # --shared-counter modes (servers.counter)
    native: str | None = None  # the C program in NATIVE_DIR this server execs
    needs: str = "a C compiler"  # what `make native` needs to build it
    # How every chart draws it (issue 21): a colour and a marker no other server has, so a
    # reader tells 11 servers apart in print and in grey. Families share a hue: blues for the
    # Python process models, reds for threads, greens for event loops, purples/black for C.
    colour: str = "#777777"
    marker: str = "o"

    def import_module(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def language(self) -> str:
        return "C" if self.native else "Python"

    @property
    def runs_lean(self) -> bool:
        """A forking Python server: the CLI execs it in servers.lean's interpreter, started
        with LEAN_FLAGS (servers.cli says why); its twin in `make bench-servers` gets the same."""
        return self.native is None and self.model is Model.PROCESS

    def native_path(self) -> Path | None:
        return NATIVE_DIR / self.native if self.native else None

    def available(self) -> str | None:
        """None when the server can run here; else why not, in one line."""
        path = self.native_path()
        if path is not None and not path.exists():
            return f"{self.name}: {path} is not built (run `make native`; it needs {self.needs})"
        if self.model_detail == "io_uring" and _io_uring_disabled():
            return f"{self.name}: io_uring is disabled on this kernel (kernel.io_uring_disabled)"
        return None

    @property
    def model_detail(self) -> str:
        """The mechanism under the model, where the model's name does not say it."""
        return "io_uring" if self.native == "c-uring" else ""


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
        options=_PY_FORK | {Option.LEAK_CONNFD, Option.NAIVE_REAPER},
        counter_modes=("naive", "shm", "pipe", "message"),
        colour="#1f77b4",
        marker="o",
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
        options=_PY_FORK | {Option.HANDLER},
        # An exec'd program keeps no shared mapping, and `cat` counts nothing: only a Python
        # handler counts, privately (naive) or over an inherited pipe (the CLI checks --handler).
        counter_modes=("naive", "pipe"),
        colour="#6baed6",
        marker="v",
    ),
    ServerSpec(
        "prefork",
        Model.PROCESS,
        "servers.prefork",
        "prefork workers",
        "N worker processes accept on one shared listening socket",
        "Apache prefork, gunicorn sync",
        role=Role.PROCESS_POOL,
        options=frozenset({Option.WORKERS}),
        counter_modes=("naive", "shm", "pipe"),
        colour="#08306b",
        marker="s",
    ),
    ServerSpec(
        "thread",
        Model.THREAD,
        "servers.thread",
        "thread per connection",
        "main thread accepts and starts a detached thread per client",
        "CS:APP Fig. 12.14",
        role=Role.BOOK_THREAD,
        counter_modes=("lock", "global"),
        colour="#d62728",
        marker="^",
    ),
    ServerSpec(
        "threadpool",
        Model.THREAD,
        "servers.threadpool",
        "prethreaded pool",
        "N worker threads take connected sockets from a bounded buffer (sbuf)",
        "CS:APP Fig. 12.28",
        role=Role.THREAD_POOL,
        options=frozenset({Option.WORKERS}),
        counter_modes=("lock",),
        colour="#fc9272",
        marker="<",
    ),
    ServerSpec(
        "multiplex",
        Model.EVENT,
        "servers.multiplex",
        "I/O multiplexing (selectors)",
        "one thread, one selector, a state machine per connection",
        "CS:APP 12.2",
        role=Role.EVENT_LOOP,
        counter_modes=("global",),
        colour="#2ca02c",
        marker="D",
    ),
    ServerSpec(
        "asyncio",
        Model.EVENT,
        "servers.asyncio_server",
        "asyncio",
        "asyncio Protocol on the default event loop",
        "asyncio",
        role=Role.EVENT_LOOP,
        counter_modes=("global",),
        colour="#a1d99b",
        marker="P",
    ),
    ServerSpec(
        "uvloop",
        Model.EVENT,
        "servers.uvloop_server",
        "uvloop",
        "the asyncio Protocol server on uvloop (libuv)",
        "uvloop",
        role=Role.EVENT_LOOP,
        counter_modes=("global",),
        colour="#00441b",
        marker="X",
    ),
)

_NATIVE = (
    ServerSpec(
        "c-process",
        Model.PROCESS,
        "servers.native",
        "C fork per connection",
        "Fig. 12.5 in C: fork per client, child closes listenfd, SIGCHLD reaps in a loop",
        "CS:APP Fig. 12.5",
        role=Role.C_BOOK_PROCESS,
        forks_per_connection=True,
        options=frozenset({Option.XRAY}),
        native="c-process",
        colour="#9467bd",
        marker="h",
    ),
    ServerSpec(
        "c-thread",
        Model.THREAD,
        "servers.native",
        "C thread per connection",
        "Fig. 12.14 in C: a detached pthread per client",
        "CS:APP Fig. 12.14",
        role=Role.C_BOOK_THREAD,
        native="c-thread",
        colour="#e377c2",
        marker="*",
    ),
    ServerSpec(
        "c-epoll",
        Model.EVENT,
        "servers.native",
        "C epoll (ceiling)",
        "one thread, epoll, non-blocking sockets: the most this machine echoes",
        "CS:APP 12.2, epoll(7)",
        role=Role.CEILING,
        native="c-epoll",
        colour="#000000",
        marker="d",
    ),
    ServerSpec(
        "c-uring",
        Model.EVENT,
        "servers.native",
        "C io_uring (ceiling)",
        "one thread, io_uring: multishot accept and receive, a provided buffer ring, sends "
        "batched into one io_uring_enter per turn",
        "io_uring(7), liburing",
        role=Role.CEILING_URING,
        native="c-uring",
        needs="a C compiler and liburing's headers (liburing-dev)",
        colour="#7f7f7f",
        marker="p",
    ),
)

SERVERS: dict[str, ServerSpec] = {spec.name: spec for spec in (*_SPECS, *_NATIVE)}


def _io_uring_disabled() -> bool:
    """kernel.io_uring_disabled: 0 lets every process make a ring (Linux 6.6 added the knob)."""
    try:
        return Path("/proc/sys/kernel/io_uring_disabled").read_text().strip() not in ("", "0")
    except OSError:
        return False


def by_role(role: Role) -> str:
    """The one server that plays `role` (the book's two servers); the first for shared roles."""
    return next(spec.name for spec in SERVERS.values() if spec.role == role)


def get(name: str) -> ServerSpec:
    try:
        return SERVERS[name]
    except KeyError:
        known = ", ".join(SERVERS)
        raise KeyError(f"unknown server {name!r} (known: {known})") from None
