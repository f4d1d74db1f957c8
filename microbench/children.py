"""Child processes the benchmarks start, and the guarantees around them.

Every child started here is ended by its pid: waited for when it finishes, killed (by pid, never
by name) when it does not finish in time, and reaped either way, inside `finally` so a failing
benchmark or Ctrl-C leaves no orphan and no zombie. Long-lived helpers (the echo children of the
IPC round trips) also put themselves in their own process group and ask the kernel to kill them
if their parent dies (PR_SET_PDEATHSIG), so not even a SIGKILLed benchmark run can orphan them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from microbench.placement import pin_thread

_PR_SET_PDEATHSIG = 1
PARENT_ENV = "MICROBENCH_RUNNER_PID"  # microbench.suite's pid, for the pytest suite it starts


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """In a child: get `sig` when the parent dies, and leave now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def detach_and_guard(parent_pid: int, cpu: int | None) -> None:
    """The first thing a long-lived helper child does: own group, tied to parent, pinned."""
    os.setpgid(0, 0)
    die_with_parent(parent_pid)
    if cpu is not None:
        pin_thread(cpu)


def reap(pid: int, timeout_s: float = 5.0) -> int:
    """Wait up to `timeout_s` for child `pid` to exit, else SIGKILL it; return its wait status."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already reaped elsewhere
        return 0
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return 0
    return status


def _echo_loop(in_fd: int, out_fd: int) -> None:
    """Read one byte, write it back, until EOF: the other end of a round trip."""
    while True:
        data = os.read(in_fd, 1)
        if not data:
            return
        os.write(out_fd, data)


@dataclass(slots=True)
class EchoEnds:
    """The parent's side of a forked echo child: one byte out, the same byte back."""

    kind: Literal["pipe", "socketpair"]
    pid: int
    write_fd: int = -1  # pipe
    read_fd: int = -1  # pipe
    sock: socket.socket | None = None  # socketpair

    def round_trip_pipe(self) -> None:
        os.write(self.write_fd, b"x")
        if os.read(self.read_fd, 1) != b"x":
            raise RuntimeError("pipe echo child returned the wrong byte")

    def round_trip_socket(self) -> None:
        assert self.sock is not None
        self.sock.send(b"x")
        if self.sock.recv(1) != b"x":
            raise RuntimeError("socketpair echo child returned the wrong byte")


@contextlib.contextmanager
def forked_echo(kind: Literal["pipe", "socketpair"], child_cpu: int) -> Iterator[EchoEnds]:
    """Fork a child pinned to `child_cpu` that echoes single bytes over pipes or a socketpair."""
    parent_pid = os.getpid()
    own: list[int] = []  # parent-side fds to close
    theirs: list[int] = []  # child-side fds the parent closes after the fork
    sock: socket.socket | None = None
    if kind == "pipe":
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        own, theirs = [to_child_w, to_parent_r], [to_child_r, to_parent_w]
    else:
        sock, child_sock = socket.socketpair()
        theirs = [child_sock.detach()]
    pid = -1
    try:
        pid = os.fork()
        if pid == 0:  # child: echo until EOF, never return into the parent's code
            code = 1
            try:
                for fd in own:
                    os.close(fd)
                if sock is not None:
                    os.close(sock.detach())  # the parent's end must close here, or no EOF
                detach_and_guard(parent_pid, child_cpu)
                in_fd, out_fd = (theirs[0], theirs[1]) if kind == "pipe" else (theirs[0],) * 2
                _echo_loop(in_fd, out_fd)
                code = 0
            finally:
                os._exit(code)
        for fd in theirs:
            os.close(fd)
        theirs = []
        if kind == "pipe":
            yield EchoEnds(kind, pid, write_fd=own[0], read_fd=own[1])
        else:
            yield EchoEnds(kind, pid, sock=sock)
    finally:
        for fd in own + theirs:
            os.close(fd)
        if sock is not None:
            sock.close()  # EOF: the child's loop ends and it exits
        if pid > 0:
            reap(pid)


def run_json_child(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a helper program in its own session and return the JSON object it prints.

    On timeout or interruption its whole process group is killed and reaped before re-raising.
    """
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.strip()[-500:]}")
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{argv[0]} printed no JSON object: {out[:200]!r}") from exc
    if not isinstance(data, dict):
        raise RuntimeError(f"{argv[0]} printed JSON that is not an object")
    return data
