"""Process control for the forking servers (process, inetd, prefork): fork, reap, and end children.

CS:APP 8.5 and 12.1: a parent that forks must reap what it forks, or its children stay zombies.
The book's SIGCHLD handler (Fig. 12.5) reaps with `waitpid(-1, WNOHANG)` in a loop because
signals do not queue (8.5.5): one pending SIGCHLD may stand for many exited children. The
`naive` reaper calls waitpid once per signal to show what goes wrong otherwise.

SIGCHLD, SIGTERM and SIGINT are blocked around fork() and the bookkeeping after it (Fig. 8.40's
race): a child that exits at once must not be reaped before the parent has recorded it, and a stop
must not land between fork and record and leave a child nobody will end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from servers.common import STOP_DEFERRED, Counter, Stop, log

_FORK_MASK = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


def _child_stop(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if STOP_DEFERRED.depth:  # inside a shared-count update: stop right after it
        STOP_DEFERRED.pending = name
        return
    raise Stop(name)


class Children:
    """The parent's record of its live children."""

    def __init__(self) -> None:
        self.live: set[int] = set()
        self._naive = False
        self._on_reap: Callable[[], None] | None = None

    def install_reaper(
        self, *, naive: bool = False, on_reap: Callable[[], None] | None = None
    ) -> None:
        """Reap in a SIGCHLD handler (Fig. 12.5); `on_reap` runs after (e.g. drain a pipe)."""
        self._naive = naive
        self._on_reap = on_reap
        signal.signal(signal.SIGCHLD, self._sigchld)

    def _sigchld(self, signum: int, frame: FrameType | None) -> None:
        if self._naive:
            self.reap_one()  # the bug: one waitpid per signal, but signals do not queue
        else:
            while self.reap_one():
                pass
        if self._on_reap is not None:
            self._on_reap()

    def reap_one(self) -> bool:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return False
        self.live.discard(pid)
        return True

    def fork(self, *, graceful_stop: bool = True) -> int:
        """fork(); 0 in the child (with the parent's handlers undone). Raises BlockingIOError on
        EAGAIN (out of processes): the caller drops that one connection and goes on.

        `graceful_stop=False` leaves the child's SIGTERM/SIGINT at their default action: the
        kernel ends the child without waking its interpreter. A child with nothing to report
        (no shared counter) should take it: a parent stopping 3,000 children that each had to
        run a Python handler, on one CPU, did not finish within the 2 s stop budget."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_MASK)
        pid = -1
        try:
            pid = os.fork()
            if pid == 0:
                # The child ends on SIGTERM/SIGINT by unwinding (so a counter can report), and
                # does not reap: it has no children.
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)  # the parent's wakeup socket is the parent's business
                handler = _child_stop if graceful_stop else signal.SIG_DFL
                signal.signal(signal.SIGTERM, handler)
                signal.signal(signal.SIGINT, handler)
            else:
                self.live.add(pid)
            return pid
        finally:
            # The child keeps SIGTERM/SIGINT blocked until child_exit unblocks them inside its
            # try: a Stop raised anywhere between here and there would unwind the child into
            # the parent's accept loop and its `finally` (seen: children printing STATS and
            # reading the parent's counter pipe dry, a pipe count of 0).
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def end_all(self, grace_s: float = 1.5) -> None:
        """Stop: SIGTERM every child, reap them all, SIGKILL whatever outlives `grace_s`."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not abandon the children
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # reap here, not in the handler
        for pid in list(self.live):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic_ns() + int(grace_s * 1e9)
        killed = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG if not killed else 0)
            except ChildProcessError:
                break  # no children left
            if pid:
                self.live.discard(pid)
                continue
            if time.monotonic_ns() > deadline:
                log(f"{len(self.live)} children ignored SIGTERM; killing them")
                for pid in list(self.live):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
                continue
            time.sleep(0.002)
        self.live.clear()


def child_exit(counter: Counter | None, body: Callable[[], None]) -> NoReturn:
    """Run a child's work and leave with os._exit: a child must never return into the parent's
    accept loop, nor flush the parent's stdio buffers or run its atexit handlers."""
    code = 0
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_MASK)  # blocked since fork (see there)
        body()
    except Stop:
        pass
    except BaseException as exc:
        log(f"child {os.getpid()}: {type(exc).__name__}: {exc}")
        code = 1
    try:
        if counter is not None:
            # The stop arrives twice (the process group's SIGTERM and the parent's): the second
            # must not raise inside the report and lose a pipe counter's whole count.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            counter.child_done()
    finally:
        os._exit(code)
