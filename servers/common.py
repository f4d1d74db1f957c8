"""What every echo server shares: its options, the listening socket, the READY line, the echo loop,
the stop signal and the EMFILE back-off.

Kept apart so each server module reads like its CS:APP figure (12.5, 12.14, 12.28, 12.2) and the
differences between them are the concurrency model, not plumbing. This module imports only what
a bare `python` has already loaded (socket, signal, os, select; no dataclasses, no typing): the
forking servers fork from a parent that has loaded it, and a fork's cost grows with what the
parent has imported (CS:APP 12.1.2). Measured (`make bench-servers`): dataclasses, typing,
argparse and the compression modules argparse drags in through shutil made the process server
0.86x the connections/s of a minimal twin on their own: ten more shared libraries whose mappings
every fork copies and every exit tears down.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any, Protocol

# One recv per chunk: 64 KiB is the loopback socket's typical burst, and the size asyncio's own
# transports read in, so the servers echo in comparable chunks.
CHUNK = 65536

# The env var a test sets to see which modules a server imported (one name per line, at READY).
MODULES_FILE_ENV = "ECHOBENCH_MODULES_FILE"


class ServerConfig:
    """The parsed command line; each server reads the fields its model uses.

    A plain class, not a dataclass: see the module's header. `to_argv()`/`from_argv()` carry it
    whole to the lean interpreter a forking server runs in (servers.lean)."""

    __slots__ = (
        "backlog",
        "gc_freeze",
        "handler",
        "host",
        "leak_connfd",
        "naive_reaper",
        "name",
        "port",
        "shared_counter",
        "workers",
        "xray",
    )

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 1024,  # the book's LISTENQ
        workers: int = 4,  # the book's NTHREADS (threadpool) and the prefork worker count
        shared_counter: str | None = None,
        leak_connfd: bool = False,  # process only: teaching switch, CS:APP 12.1.1's warning
        naive_reaper: bool = False,  # process only: teaching switch, signals do not queue
        handler: str = "cat",  # inetd only: what the child execs
        xray: str | None = None,  # forking servers: where to write per-connection records
        gc_freeze: bool = False,  # forking servers: gc.freeze() before the accept loop
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.backlog = backlog
        self.workers = workers
        self.shared_counter = shared_counter
        self.leak_connfd = leak_connfd
        self.naive_reaper = naive_reaper
        self.handler = handler
        self.xray = xray
        self.gc_freeze = gc_freeze

    def to_argv(self) -> list[str]:
        """Every field, in `__slots__` order, as strings ("" for None, "0"/"1" for flags)."""
        out = []
        for key in self.__slots__:
            value = getattr(self, key)
            if isinstance(value, bool):
                value = int(value)
            out.append("" if value is None else str(value))
        return out

    @classmethod
    def from_argv(cls, argv: list[str]) -> ServerConfig:
        """The inverse of to_argv (a private format between the CLI and servers.lean)."""
        if len(argv) != len(cls.__slots__):
            raise ValueError(f"expected {len(cls.__slots__)} config fields, got {len(argv)}")
        f = dict(zip(cls.__slots__, argv, strict=True))
        return cls(
            name=f["name"],
            host=f["host"],
            port=int(f["port"]),
            backlog=int(f["backlog"]),
            workers=int(f["workers"]),
            shared_counter=f["shared_counter"] or None,
            leak_connfd=f["leak_connfd"] == "1",
            naive_reaper=f["naive_reaper"] == "1",
            handler=f["handler"],
            xray=f["xray"] or None,
            gc_freeze=f["gc_freeze"] == "1",
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerConfig) and self.to_argv() == other.to_argv()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"ServerConfig({fields})"


if TYPE_CHECKING:

    class Counter(Protocol):
        """A shared byte counter; servers call add() once per chunk echoed (servers.counter)."""

        def add(self, n: int) -> None: ...

        def child_done(self) -> None: ...

        def totals(self) -> tuple[int, int]: ...

    class Drain(Protocol):
        """A descriptor the accept loop also waits on, read by collect() (`message`)."""

        def fileno(self) -> int: ...

        def collect(self) -> None: ...

else:
    Counter = Drain = object  # only ever annotations outside type checking


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to unwind a blocking accept loop."""


def log(message: str) -> None:
    """One line on stderr: stdout carries only READY and STATS."""
    print(f"servers: {message}", file=sys.stderr, flush=True)


def open_listenfd(host: str, port: int, backlog: int) -> socket.socket:
    """The book's open_listenfd (CS:APP Fig. 11.19): bind, listen, hand back the socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restarted server must not wait out TIME_WAIT of the previous run's connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def announce_ready(sock: socket.socket) -> None:
    """Print `READY <host> <port> <pid>` once the socket listens: runners wait on it, not sleep."""
    host, port = sock.getsockname()[:2]
    dump = os.environ.get(MODULES_FILE_ENV)
    if dump:
        with open(dump, "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(sys.modules)) + "\n")
    print(f"READY {host} {port} {os.getpid()}", flush=True)


def print_stats(counter: Counter | None) -> None:
    if counter is not None:
        nbytes, updates = counter.totals()
        print(f"STATS bytes={nbytes} updates={updates}", flush=True)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if STOP_DEFERRED.depth:  # inside a region a stop must not cut: stop right after it
        STOP_DEFERRED.pending = name
        return
    raise Stop(name)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT unwind the main thread's blocking call (accept, wait) with Stop."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


class _StopDeferred:
    """A region a stop signal must not cut in two: a forked child's SIGTERM handler raises
    Stop, and raised between reading and writing back a shared count (shm: inside the lock) it
    would lose that update. Inside the region the handler only notes the signal; leaving the
    region raises the Stop then. One flag per process: only a child's main thread runs it."""

    __slots__ = ("depth", "pending")

    def __init__(self) -> None:
        self.depth = 0
        self.pending: str | None = None

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.leave()

    def leave(self) -> None:
        """Leave the region; raise the stop that arrived inside it, if any."""
        self.depth -= 1
        if self.depth == 0 and self.pending is not None:
            self.raise_pending()

    def raise_pending(self) -> None:
        """Raise the stop noted inside the region (the caller has left it: depth 0)."""
        why, self.pending = self.pending, None
        raise Stop(why or "stop")


STOP_DEFERRED = _StopDeferred()


def deferring(fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` run as one region a stop cannot cut (a pipe counter's collect: records read from
    the pipe and not yet added would be lost with the Stop)."""

    def run() -> None:
        with STOP_DEFERRED:
            fn()

    return run


def echo(conn: socket.socket, counter: Counter | None) -> None:
    """Send back every byte received, in order, until EOF (CS:APP Fig. 11.22's echo, bytes not
    lines). A peer that resets or vanishes ends this connection only."""
    try:
        if counter is None:
            while data := conn.recv(CHUNK):
                conn.sendall(data)
        else:
            while data := conn.recv(CHUNK):
                # Counted before it is sent, and never cut by a stop: a client that got an echo
                # always finds it in the count (a stop between the two leaves the count one
                # chunk over, which the runner's check allows; under would be a lost update).
                with STOP_DEFERRED:
                    counter.add(len(data))  # one shared update per chunk echoed
                conn.sendall(data)
    except OSError:
        pass  # ECONNRESET, EPIPE, or shut down by the server's stop: this client is gone


# accept() errors that mean "out of descriptors or memory right now", not "this connection".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Backoff:
    """Wait before retrying a call that failed for lack of resources, growing 10 ms -> 100 ms.

    One stderr line per episode, not per failure: under overload the log must not become the
    load. An episode ends when a second passes without a failure, so the path that succeeds
    (every accept, every fork) does nothing at all (see servers.process on why that matters)."""

    MIN_S = 0.010
    MAX_S = 0.100
    EPISODE_GAP_S = 1.0

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay_s = 0.0
        self.failures = 0
        self._last_ns = 0

    def note(self, err: OSError) -> float:
        """Count a failure (logging the first of an episode); return how long to wait."""
        now = time.monotonic_ns()
        if now - self._last_ns > self.EPISODE_GAP_S * 1e9:
            self.failures = 0
            self.delay_s = 0.0
        self._last_ns = now
        if self.failures == 0:
            log(
                f"{self.what}: {errno.errorcode.get(err.errno or 0, err)}; backing off and retrying"
            )
        self.failures += 1
        self.delay_s = min(max(self.MIN_S, self.delay_s * 2), self.MAX_S)
        return self.delay_s

    def failed(self, err: OSError) -> None:
        time.sleep(self.note(err))


class SignalWakeup:
    """Wake a blocked accept loop on every signal, through a socketpair (signal.set_wakeup_fd).

    Why: CPython runs Python-level handlers after a syscall returns EINTR, visiting pending
    signals in signal-number order once. A SIGTERM (15) that arrives while the SIGCHLD (17)
    handler runs is left pending, and PEP 475 retries the blocking accept() at once: the stop
    would wait for the next signal. With a wakeup descriptor in the same select() as the
    listening socket, every signal makes select return and Python code run, so every pending
    handler runs. The same holds for any blocking call: a signal that lands after the last check
    for pending handlers but before the thread enters accept()/wait() is handled in C only, and
    the call then blocks; the wakeup byte stays readable, so select() returns at once. Seen here:
    about one stop in 50 hung in the process, thread and threadpool servers without this."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)

    def wait_readable(self, sock: socket.socket, drain: Drain | None = None) -> None:
        """Block until `sock` is readable; pending signal handlers run on the way. `drain`
        (the `message` counter's pipe) is read whenever it is readable meanwhile."""
        watched: list[Any] = [sock, self._r] if drain is None else [sock, self._r, drain]
        while True:
            readable, _, _ = select.select(watched, [], [])
            if drain is not None and drain in readable:
                with STOP_DEFERRED:  # records read and not yet added would be lost with a Stop
                    drain.collect()
            if self._r in readable:
                with contextlib.suppress(BlockingIOError):
                    while self._r.recv(4096):
                        pass
            if sock in readable:
                return

    def wait_signal(self) -> None:
        """Block until a signal with a Python handler arrives; its handler runs on the way."""
        select.select([self._r], [], [])
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(4096):
                pass

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self._r.close()
        self._w.close()


def accept_failed(err: OSError, backoff: Backoff) -> None:
    """An accept() that failed: wait out a lack of resources (EMFILE, ENFILE, ...), ignore a
    client that gave up while queued, raise anything else."""
    if err.errno in RESOURCE_ERRNOS:
        backoff.failed(err)
    elif err.errno != errno.ECONNABORTED:
        raise err


def accept(
    sock: socket.socket, backoff: Backoff, wakeup: SignalWakeup | None = None
) -> socket.socket:
    """Accept that survives EMFILE/ENFILE: back off and retry, never crash or spin. With
    `wakeup`, `sock` must be non-blocking: accept() first and wait in select() only when no
    client is queued (see SignalWakeup). Accepting first saves a select() per connection while
    clients queue up; a non-blocking accept never sleeps through a signal."""
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            if wakeup is not None:
                wakeup.wait_readable(sock)
            continue  # nobody queued yet, or the client left between select and accept
        except OSError as err:
            accept_failed(err, backoff)
            continue
        return conn
