"""Start a registered echo server as a real process and end it without leaving anything behind.

The runner, the load generator's self-benchmark and the tests all start servers through this one
launcher, so they all keep the same promises:

* the server runs in its own session and process group (`start_new_session=True`), so everything
  it forks can be found by its process-group id and ended by id, never by name;
* readiness is the server's `READY <host> <port> <pid>` line, never a sleep;
* `stop()` sends SIGTERM to the server alone (ending its children is the server's job, and part of
  what is tested), waits, then looks for anything left in the process group -- a live child, a
  zombie -- records it as a leftover, and only then SIGKILLs the group.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Self

from records.procfs import group_members

STDERR_TAIL_LINES = 20


class ServerStartError(RuntimeError):
    """The server exited, or said nothing, before its READY line."""

    def __init__(self, message: str, stderr_tail: list[str]) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


@dataclass(frozen=True, slots=True)
class StopReport:
    exit_code: int | None
    clean_exit: bool  # exited 0 on SIGTERM within the grace period, nothing left in its group
    leftovers: list[str]  # "pid state comm" of what was still there (then killed)
    stderr_tail: list[str]
    stats: dict[str, int] | None  # from a "STATS k=v ..." line on stdout, if any
    stdout_lines: list[str] = field(default_factory=list)
    stop_s: float | None = None  # from SIGTERM until the leader exited (or the grace ran out)
    grace_s: float | None = None  # how long it was given before SIGKILL
    timed_out: bool = False  # the grace ran out: the group was killed


def parse_stats(lines: Sequence[str]) -> dict[str, int] | None:
    """The last `STATS key=value ...` line printed by a server, as a dict of ints."""
    for line in reversed(lines):
        if line.startswith("STATS "):
            stats = {}
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                with contextlib.suppress(ValueError):
                    stats[key] = int(value)
            return stats
    return None


class ServerProcess:
    """A running server. Use as a context manager, or call stop() yourself."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        popen: subprocess.Popen[bytes],
        stderr_file: IO[bytes],
        host: str,
        port: int,
        ready_s: float,
        cpus: tuple[int, ...] | None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the server leads its own group
        self.host = host
        self.port = port
        self.ready_s = ready_s
        self.cpus = cpus
        self._stderr_file = stderr_file
        self._stop_report: StopReport | None = None

    @classmethod
    def start(
        cls,
        name: str,
        args: Sequence[str] = (),
        *,
        cpus: Sequence[int] | None = None,
        nofile: int | None = None,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 15.0,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> ServerProcess:
        """Spawn `python -m servers NAME ARGS --host HOST --port 0` and wait for READY.

        `wrap` turns the argv into the one actually spawned (the runner's cgroup shim, which
        execs the server under the same pid); the server's recorded argv stays its own."""
        argv = [python, "-m", "servers", name, "--host", host, "--port", "0", *args]
        # A file, not a pipe: a chatty server never blocks. Closed by stop().
        stderr_file = tempfile.TemporaryFile()  # noqa: SIM115
        popen = subprocess.Popen(
            wrap(argv) if wrap is not None else argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            start_new_session=True,
            env=env,
        )
        t0 = time.monotonic_ns()
        pinned = tuple(cpus) if cpus is not None else None
        try:
            # Pinned and limited before it can print READY, so everything it serves (and every
            # child it forks, which inherits both) runs under the intended placement and limits.
            if pinned is not None:
                os.sched_setaffinity(popen.pid, pinned)
            if nofile is not None:
                import resource  # noqa: PLC0415 - only the fault tests lower limits

                _, hard = resource.prlimit(popen.pid, resource.RLIMIT_NOFILE)
                resource.prlimit(popen.pid, resource.RLIMIT_NOFILE, (nofile, hard))
            host_, port = _wait_ready(popen, ready_timeout_s)
        except BaseException as exc:
            _kill_group(popen)
            tail = _tail(stderr_file)
            stderr_file.close()
            if isinstance(exc, ServerStartError):
                raise ServerStartError(str(exc), tail) from None
            if isinstance(exc, OSError):
                raise ServerStartError(f"{name}: {exc}", tail) from exc
            raise
        ready_s = (time.monotonic_ns() - t0) / 1e9
        return cls(name, argv, popen, stderr_file, host_, port, ready_s, pinned)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def members(self) -> list[tuple[int, str, str]]:
        return group_members(self.pgid)

    def stop(self, grace_s: float = 2.0, sig: int = signal.SIGTERM) -> StopReport:
        """End the server (idempotent) and report how it went."""
        if self._stop_report is not None:
            return self._stop_report
        t0 = time.monotonic()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
        timed_out = False
        try:
            exit_code: int | None = self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            exit_code = None
            timed_out = True
        stop_s = time.monotonic() - t0
        # Children that outlive their parent, or zombies nobody reaped, are the server's fault.
        leftovers = [f"{pid} {state} {comm}" for pid, state, comm in group_members(self.pgid)]
        _kill_group(self.popen)
        if exit_code is None:
            exit_code = self.popen.returncode
        out = self.popen.stdout.read().decode(errors="replace") if self.popen.stdout else ""
        if self.popen.stdout:
            self.popen.stdout.close()
        stdout_lines = out.splitlines()
        stderr_tail = _tail(self._stderr_file)
        self._stderr_file.close()
        self._stop_report = StopReport(
            exit_code=exit_code,
            clean_exit=exit_code == 0 and not leftovers,
            leftovers=leftovers,
            stderr_tail=stderr_tail,
            stats=parse_stats(stdout_lines),
            stdout_lines=stdout_lines,
            stop_s=round(stop_s, 4),
            grace_s=grace_s,
            timed_out=timed_out,
        )
        return self._stop_report

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_ready(popen: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, int]:
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerStartError(f"no READY line within {timeout_s:.0f} s", [])
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)  # unbuffered: the rest of stdout stays in the pipe for stop()
        if not chunk:
            code = popen.wait()
            raise ServerStartError(f"exited with code {code} before READY", [])
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    if rest:
        raise ServerStartError(f"unexpected output after READY: {rest[:80]!r}", [])
    parts = line.decode(errors="replace").split()
    if len(parts) != 4 or parts[0] != "READY":
        raise ServerStartError(f"expected 'READY host port pid', got {line[:120]!r}", [])
    return parts[1], int(parts[2])


def _kill_group(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the group, and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)


def _tail(f: IO[bytes]) -> list[str]:
    try:
        f.seek(0)
        lines = f.read().decode(errors="replace").splitlines()
    except (OSError, ValueError):
        return []
    return lines[-STDERR_TAIL_LINES:]
