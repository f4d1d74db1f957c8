"""Process control for the forking servers (process, inetd, prefork): fork, reap, and end children.

CS:APP 8.5 and 12.1: a parent that forks must reap what it forks, or its children stay zombies.
The book's SIGCHLD handler (Fig. 12.5) reaps with `waitpid(-1, WNOHANG)` in a loop because
signals do not queue (8.5.5): one pending SIGCHLD may stand for many exited children. The
`naive` reaper calls waitpid once per signal to show what goes wrong otherwise.

A stop (SIGTERM/SIGINT) must not land between fork() and the parent's record of the child (it
would leave a child nobody ends), nor unwind a just-forked child into the parent's accept loop.
Both are kept out by deferring the stop over that stretch (STOP_DEFERRED: the handler notes the
signal, and it is raised where it is safe), not by blocking signals around fork as Fig. 8.40
does: `signal.pthread_sigmask` builds a set of enum members on every call, and the Python code
it runs touches pages that every fork has just made copy-on-write. Measured with `make
bench-servers`: the three sigmask calls per connection cost the process server 0.82x of its
minimal twin's connections/s on their own. A child reaped before the parent recorded it (Fig.
8.40's race) leaves a stale pid in `live`; `end_all` asks waitpid before signalling any pid, so a
pid that is no longer this server's child is never signalled.
"""

from __future__ import annotations

# _signal: the C functions behind `signal`. signal.signal() turns the old handler into an enum
# member and, when that handler is a Python function, gets there through a raised and caught
# ValueError: in a just-forked child that walk through the enum machinery touched ~43 pages
# (~100 us of copy-on-write faults, measured) and alone made the minimal twin 0.72x as fast.
import _signal
import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from servers.common import STOP_DEFERRED, Counter, Stop, log

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see servers.common)
if TYPE_CHECKING:
    from typing import NoReturn

    from servers.xray import Xray


_STOPS = {signal.SIGTERM, signal.SIGINT}
_MASKED_CHILD = False  # in a child forked with graceful_stop: its stop signals are blocked


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
        self._xray: Xray | None = None

    def install_reaper(
        self,
        *,
        naive: bool = False,
        on_reap: Callable[[], None] | None = None,
        xray: Xray | None = None,
    ) -> None:
        """Reap in a SIGCHLD handler (Fig. 12.5); `on_reap` runs after (e.g. drain a pipe).

        The handler is one plain function, the loop written out: every function a forking
        parent runs writes its code object (reference counts, the interpreter's inline caches)
        into pages the last fork made copy-on-write, so a handler that called a method per
        child, through a bound method, cost faults on every connection (measured with `make
        bench-servers`)."""
        live = self.live
        self._xray = xray
        if xray is not None:
            signal.signal(signal.SIGCHLD, _xray_reaper(live, xray, naive, on_reap))
            return

        def sigchld(signum: int, frame: FrameType | None) -> None:
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                live.discard(pid)
                if naive:
                    break  # the bug: one waitpid per signal, but signals do not queue
            if on_reap is not None:
                on_reap()

        signal.signal(signal.SIGCHLD, sigchld)

    def fork(self, *, graceful_stop: bool = True) -> int:
        """fork(); 0 in the child (with the parent's stop handlers undone). Raises
        BlockingIOError on EAGAIN (out of processes): the caller drops that one connection.

        `graceful_stop=False` leaves the child's SIGTERM/SIGINT at their default action: the
        kernel ends the child without waking its interpreter. A child with nothing to report
        (no shared counter) should take it: a parent stopping 3,000 children that each had to
        run a Python handler, on one CPU, did not finish within the 2 s stop budget.

        In the child, the stop stays deferred until child_exit() enters its try: a stop that
        arrived since fork is raised there, and the child ends instead of unwinding into the
        parent's accept loop and its `finally` (seen: children printing STATS and reading the
        parent's counter pipe dry)."""
        deferred = STOP_DEFERRED
        deferred.depth += 1
        # A child with a count to report keeps Fig. 8.40's mask: its stop signals stay blocked
        # until child_exit() unblocks them. With the deferral alone, 1 stop in ~10 left such a
        # child echoing for seconds with its SIGTERM delivered but its handler never run
        # (test_no_update_is_lost_when_the_stop_comes_mid_stream); those cells pay for the mask.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS) if graceful_stop else None
        try:
            pid = os.fork()
        except BaseException:
            deferred.leave()
            raise
        finally:
            if old is not None and pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if pid == 0:
            global _MASKED_CHILD  # one flag per process, set once after fork
            _MASKED_CHILD = graceful_stop
            handler = _child_stop if graceful_stop else _signal.SIG_DFL  # plain ints: no enum
            _signal.signal(_signal.SIGTERM, handler)
            _signal.signal(_signal.SIGINT, handler)
            return 0
        self.live.add(pid)
        # deferred.leave() written out (no call on the path every fork takes): a stop that came
        # during fork is raised now, with the child recorded.
        deferred.depth -= 1
        if deferred.pending is not None and deferred.depth == 0:
            deferred.raise_pending()
        return pid

    def end_all(self, grace_s: float = 1.5, drain: Callable[[], None] | None = None) -> None:
        """Stop: SIGTERM every child, reap them all, SIGKILL whatever outlives `grace_s`.
        `drain` (the `message` counter's collect) runs while waiting: a child blocked writing
        its count into a full pipe finishes its write and ends."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not abandon the children
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # reap here, not in the handler
        # The kernel's record of this parent's children, not only ours: the process server's
        # plain path forks without recording (see servers/process.py), and a stop that landed
        # between a fork and its record left that child out of `live`.
        self.live |= children_of(os.getpid())
        for pid in list(self.live):
            # SIGCHLD is SIG_DFL now: a child that exits stays a zombie until waited for, so
            # its pid cannot be reused while we look. ChildProcessError: reaped before it was
            # recorded (see the module's header), no longer ours to signal.
            try:
                done, _, rusage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                self.live.discard(pid)
                continue
            if done:
                self.live.discard(pid)
                if self._xray is not None:
                    self._xray.reaped(pid, time.monotonic_ns(), rusage)
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic_ns() + int(grace_s * 1e9)
        killed = False
        while True:
            try:
                pid, _, rusage = os.wait4(-1, os.WNOHANG if not killed else 0)
            except ChildProcessError:
                break  # no children left
            if pid:
                self.live.discard(pid)
                if self._xray is not None:  # reaped at the stop: still the connection's end
                    self._xray.reaped(pid, time.monotonic_ns(), rusage)
                continue
            if time.monotonic_ns() > deadline:
                log(f"{len(self.live)} children ignored SIGTERM; killing them")
                for pid in list(self.live):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
                continue
            if drain is not None:
                drain()
            time.sleep(0.002)
        self.live.clear()


def children_of(parent: int) -> set[int]:
    """Every process whose parent is `parent`, zombies included, from /proc.

    Read once, at the stop: a scan of the machine's processes costs milliseconds, and the
    record layer's /proc parser is imported only then, so the forking parent stays lean."""
    from records.procfs import processes  # noqa: PLC0415 - at the stop only (see above)

    return {p.pid for p in processes() if p.ppid == parent}


def _xray_reaper(
    live: set[int], xray: Xray, naive: bool, on_reap: Callable[[], None] | None
) -> Callable[[int, FrameType | None], None]:
    """The same handler, reaping with wait4 (waitpid plus the child's rusage) for the X-ray."""

    def sigchld(signum: int, frame: FrameType | None) -> None:
        handler = time.monotonic_ns()
        # A stop's handler can run between any two lines of this one: deferred, so a child
        # reaped here is always recorded (seen: the last connection's reap lost, 1 stop in 3).
        STOP_DEFERRED.depth += 1
        try:
            while True:
                try:
                    pid, _, rusage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                live.discard(pid)
                xray.reaped(pid, handler, rusage)
                if naive:
                    break
            if on_reap is not None:
                on_reap()
        finally:
            STOP_DEFERRED.leave()

    return sigchld


def child_exit(
    counter: Counter | None, body: Callable[..., None], *args: object, graceful: bool | None = None
) -> NoReturn:
    """Run a child's work, `body(*args)`, and leave with os._exit: a child must never return
    into the parent's accept loop, nor flush the parent's stdio buffers or run its atexit
    handlers. `graceful` (True/False) sets the child's stop handlers here, for a caller that
    forked with os.fork() itself (see Children.fork for what it means)."""
    if graceful is not None:
        handler = _child_stop if graceful else _signal.SIG_DFL  # plain ints: no enum
        _signal.signal(_signal.SIGTERM, handler)
        _signal.signal(_signal.SIGINT, handler)
    code = 0
    try:
        if _MASKED_CHILD:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)  # blocked since fork (see there)
        STOP_DEFERRED.depth -= 1  # deferred since fork (see Children.fork): raised here
        if STOP_DEFERRED.pending is not None and STOP_DEFERRED.depth == 0:
            STOP_DEFERRED.raise_pending()
        body(*args)
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
