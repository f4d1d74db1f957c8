"""Hostile and innocent clients for the fault suite (issue 7), and what /proc says about a server.

The fault tests attack a real server over real loopback sockets and then look at the server the
way an operator would: its descriptors (/proc/PID/fd), its sockets' TCP states (/proc/net/tcp),
its process group's members and their states (zombies: CS:APP 8.4.3), its CPU time
(/proc/PID/stat). Everything here is bounded in count and time, and every socket it opens is
closed by whoever asked for it (pytest runs with `filterwarnings = error`: an unclosed socket's
ResourceWarning fails the test).

The innocent client (`EchoClient`) verifies byte-exact echoes and counts the bytes it lost, so
every test can say "bytes lost: 0 wherever the connection was not the one attacked".
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from bench.launch import StopReport
from records.procfs import group_members, read_stat

# /proc/net/tcp's `st` column (include/net/tcp_states.h)
TCP_ESTABLISHED = 0x01
TCP_SYN_RECV = 0x03
TCP_CLOSE_WAIT = 0x08
TCP_LISTEN = 0x0A

CLK_TCK = os.sysconf("SC_CLK_TCK")

_T = TypeVar("_T")


# --------------------------------------------------------------------------- limits


@contextlib.contextmanager
def raised_nofile(needed: int) -> Iterator[int]:
    """Raise this process's soft RLIMIT_NOFILE towards the hard limit for the block.

    The test process itself holds a thousand sockets in the slowloris test; the default soft
    limit (often 1024) would make the attacker, not the server, fail first.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target < needed:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    try:
        yield target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------- /proc readers


def fd_count(pid: int) -> int:
    """Open descriptors of `pid` (the process, all its threads share one table)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets `pid` holds open, from the `socket:[N]` links in /proc/PID/fd."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return set()  # exited while we looked
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), from /proc/PID/stat, in seconds."""
    st = read_stat(pid)
    assert st is not None, f"process {pid} is gone"
    return st.cpu_s


@dataclass(frozen=True, slots=True)
class TcpEntry:
    local_port: int
    remote_port: int
    state: int
    rx_queue: int  # for a LISTEN socket: the current length of the accept queue
    inode: int


def tcp_entries(port: int) -> list[TcpEntry]:
    """The IPv4 TCP sockets of this network namespace (/proc/net/tcp) with `port` at either end.

    The table holds every socket of the machine (thousands of TIME_WAITs while other tests run),
    so lines are filtered on the port's hex text before being parsed.
    """
    needle = f":{port:04X} "
    entries = []
    with open("/proc/net/tcp") as f:
        next(f)  # header
        for line in f:
            if needle not in line:
                continue
            parts = line.split()
            local, remote, state = parts[1], parts[2], int(parts[3], 16)
            rx_queue = int(parts[4].split(":")[1], 16)
            entries.append(
                TcpEntry(
                    local_port=int(local.split(":")[1], 16),
                    remote_port=int(remote.split(":")[1], 16),
                    state=state,
                    rx_queue=rx_queue,
                    inode=int(parts[9]),
                )
            )
    return entries


def close_wait_count(server_port: int) -> int:
    """Server-side sockets of `server_port` in CLOSE_WAIT: the peer closed, the server has not."""
    return sum(
        1
        for e in tcp_entries(server_port)
        if e.local_port == server_port and e.state == TCP_CLOSE_WAIT
    )


def accept_queue_len(server_port: int) -> int:
    """Connections the kernel completed that the server has not accept()ed yet."""
    return sum(
        e.rx_queue
        for e in tcp_entries(server_port)
        if e.local_port == server_port and e.state == TCP_LISTEN
    )


def zombies(pgid: int) -> list[int]:
    """Pids of the zombies (state Z) in process group `pgid`."""
    return [pid for pid, state, _ in group_members(pgid) if state == "Z"]


def live_children(pgid: int, leader: int) -> list[int]:
    """Pids in the group other than the leader that are not zombies."""
    return [pid for pid, state, _ in group_members(pgid) if pid != leader and state != "Z"]


def owner_of_connection(pgid: int, server_port: int, client_port: int) -> list[int]:
    """The group members that hold the server end of the client's connection.

    Finds the server-side socket (local = server port, remote = the client's port) in
    /proc/net/tcp, then the processes whose descriptor table holds that inode: in the process
    server that is exactly the child serving the client (the parent closed its connfd, Fig. 12.5).
    """
    inodes = {
        e.inode
        for e in tcp_entries(server_port)
        if e.local_port == server_port and e.remote_port == client_port and e.inode
    }
    if not inodes:
        return []
    return [pid for pid, _, _ in group_members(pgid) if socket_inodes(pid) & inodes]


def wait_for(
    probe: Callable[[], _T], ok: Callable[[_T], bool], timeout_s: float, poll_s: float = 0.02
) -> _T:
    """Poll `probe` until `ok(value)` or the deadline; return the last value either way.

    Used to wait on an observable event (a zombie reaped, a child appearing), so a slow machine
    only makes the test slower, never wrong; the caller asserts on the returned value.
    """
    deadline = time.monotonic_ns() + int(timeout_s * 1e9)
    while True:
        value = probe()
        if ok(value) or time.monotonic_ns() >= deadline:
            return value
        time.sleep(poll_s)


# --------------------------------------------------------------------------- innocent client


class EchoError(Exception):
    """The echo did not come back whole: `kind` is reset, closed, timeout or mismatch."""

    def __init__(self, kind: str, got: int, expected: int) -> None:
        super().__init__(f"{kind} after {got} of {expected} bytes")
        self.kind = kind
        self.got = got
        self.expected = expected


@dataclass
class EchoClient:
    """A blocking client that checks every echo byte for byte and keeps the score.

    An echo that times out stays *pending*: `finish()` can collect it later (a starved client
    is served once the stalled ones leave), so "late" and "lost" are told apart.
    """

    host: str
    port: int
    timeout_s: float = 10.0
    sent: int = 0
    echoed_ok: int = 0
    mismatched: int = 0  # bytes whose echo came back different: must stay 0 everywhere
    latencies_ns: list[int] = field(default_factory=list)
    sock: socket.socket | None = None
    _pending: tuple[bytes, bytearray, int] | None = None  # payload, bytes so far, t0

    @property
    def lost(self) -> int:
        """Bytes sent whose exact echo has not come back (pending, cut off, or wrong)."""
        return self.sent - self.echoed_ok

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)

    @property
    def local_port(self) -> int:
        assert self.sock is not None
        port: int = self.sock.getsockname()[1]
        return port

    def echo(self, data: bytes) -> int:
        """Send `data`, read its echo; returns the round trip in ns or raises EchoError."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        assert self._pending is None, "finish() the pending echo first"
        self.sent += len(data)
        self._pending = (data, bytearray(), time.perf_counter_ns())
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            self._pending = None
            raise EchoError("reset", 0, len(data)) from None
        return self._collect()

    def finish(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` more for the pending echo; round trip in ns or EchoError."""
        assert self.sock is not None
        assert self._pending is not None
        self.sock.settimeout(timeout_s)
        try:
            return self._collect()
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout_s)

    def _collect(self) -> int:
        assert self.sock is not None
        assert self._pending is not None
        data, got, t0 = self._pending
        try:
            while len(got) < len(data):
                chunk = self.sock.recv(min(len(data) - len(got), 1 << 20))
                if not chunk:
                    self._pending = None
                    raise EchoError("closed", len(got), len(data))
                got += chunk
        except TimeoutError:
            raise EchoError("timeout", len(got), len(data)) from None  # still pending
        except (ConnectionResetError, BrokenPipeError):
            self._pending = None
            raise EchoError("reset", len(got), len(data)) from None
        self._pending = None
        if bytes(got) != data:
            self.mismatched += len(data)
            raise EchoError("mismatch", len(got), len(data))
        dt = time.perf_counter_ns() - t0
        self.echoed_ok += len(data)
        self.latencies_ns.append(dt)
        return dt

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def payload(i: int, size: int) -> bytes:
    """A payload that differs per message, so a misrouted or stale echo is a mismatch."""
    seed = struct.pack("!I", i)
    return (seed * (size // 4 + 1))[:size]


# --------------------------------------------------------------------------- attackers


@dataclass
class StalledSockets:
    """Non-blocking sockets opened by `open_stalled`; the caller closes them."""

    socks: list[socket.socket]
    connected: int  # handshake completed and the first bytes written
    pending: int  # connect still in progress when the deadline came (the server's queue is full)

    def close(self, reset: bool = False) -> None:
        for s in self.socks:
            if reset:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        self.socks = []


def open_stalled(
    host: str, port: int, n: int, first: bytes = b"x", timeout_s: float = 15.0
) -> StalledSockets:
    """Open `n` connections that each send `first` and then stall (slowloris).

    Non-blocking connects, so a server whose accept queue is full (a thread pool whose workers are
    all taken) makes connects *pending*, which is counted, instead of blocking the test.
    """
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    connected = 0
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, f"connect: {os.strerror(rc)}")
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        while sel.get_map() and time.monotonic_ns() < deadline:
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj  # type: ignore[assignment]
                sel.unregister(s)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect: {os.strerror(err)}")
                s.send(first)
                connected += 1
        pending = len(sel.get_map())
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()
    return StalledSockets(socks, connected, pending)


def reset_storm(host: str, port: int, n: int, size: int = 64, timeout_s: float = 30.0) -> int:
    """`n` connections that each send `size` bytes and reset at once (SO_LINGER 0, close).

    Sequential and blocking on connect: the connect only completes once the kernel has room in
    the server's accept queue, so the storm goes at the speed the server can take it. Returns
    how many connections were made and reset before the deadline.
    """
    linger0 = struct.pack("ii", 1, 0)
    data = b"r" * size
    deadline = time.monotonic_ns() + int(timeout_s * 1e9)
    done = 0
    for _ in range(n):
        if time.monotonic_ns() >= deadline:
            break
        with socket.create_connection((host, port), timeout=5.0) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
            with contextlib.suppress(OSError):
                s.sendall(data)  # an earlier reset of ours may have raced the send: fine
        done += 1
    return done


class Swarm:
    """`n` non-blocking clients that each send one message and wait for its echo.

    Each client ends up *served* (its exact echo came back), *mismatched* (it came back
    different: a bug), *shed* (the server closed or reset it before echoing: a server may shed
    load when it runs out of descriptors) or is still *waiting* (never accepted, or accepted and
    not yet served). The caller calls `close()`.
    """

    def __init__(self, host: str, port: int, n: int, size: int = 64) -> None:
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.payloads: list[bytes] = []
        self.got: list[bytearray] = []
        self.state: list[str] = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.socks.append(s)
                s.setblocking(False)
                rc = s.connect_ex((host, port))
                if rc not in (0, errno.EINPROGRESS):
                    raise OSError(rc, f"connect: {os.strerror(rc)}")
                self.payloads.append(payload(i, size))
                self.got.append(bytearray())
                self.state.append("connecting")
                self.sel.register(s, selectors.EVENT_WRITE, i)
        except BaseException:
            self.close()
            raise

    def count(self, state: str) -> int:
        return self.state.count(state)

    def pump(self, timeout_s: float) -> bool:
        """Handle socket events for up to `timeout_s`; True if any client changed state."""
        progressed = False
        deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        while self.sel.get_map():
            left = (deadline - time.monotonic_ns()) / 1e9
            if left <= 0:
                break
            for key, _ in self.sel.select(timeout=left):
                self._event(key.data)
                progressed = True
        return progressed

    def _event(self, i: int) -> None:
        s = self.socks[i]
        if self.state[i] == "connecting":
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._end(i, "shed")
                return
            try:
                s.send(self.payloads[i])  # 64 B always fits an empty socket buffer
            except OSError:
                self._end(i, "shed")
                return
            self.state[i] = "waiting"
            self.sel.modify(s, selectors.EVENT_READ, i)
            return
        try:
            chunk = s.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self._end(i, "shed")
            return
        self.got[i] += chunk
        want = self.payloads[i]
        if len(self.got[i]) >= len(want):
            self._end(i, "served" if bytes(self.got[i]) == want else "mismatched")
        elif not want.startswith(bytes(self.got[i])):
            self._end(i, "mismatched")

    def _end(self, i: int, state: str) -> None:
        self.sel.unregister(self.socks[i])
        self.state[i] = state

    def bytes_lost(self) -> int:
        """Bytes of served-or-mismatched clients that did not come back exactly (must be 0)."""
        return sum(len(self.payloads[i]) for i, st in enumerate(self.state) if st == "mismatched")

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
        self.sel.close()


# --------------------------------------------------------------------------- the fault table
# Every fault test adds a row (tests/test_faults.py prints them all at its end).


@dataclass(frozen=True, slots=True)
class Row:
    fault: str
    server: str
    survived: bool
    outcome: str
    bytes_lost: int  # on connections that were not the attacked ones


ROWS: list[Row] = []


def fault_table_text() -> str:
    lines = [
        "| fault | server | survived | outcome | bytes lost (innocent) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.fault} | {r.server} | {'yes' if r.survived else 'NO'} | {r.outcome} "
        f"| {r.bytes_lost} |"
        for r in ROWS
    ]
    return "\n".join(lines)


def assert_clean(report: StopReport, name: str) -> None:
    assert report.exit_code == 0, f"{name}: exit {report.exit_code}: {report.stderr_tail}"
    assert not report.leftovers, f"{name}: left behind {report.leftovers}"


def ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


@contextlib.contextmanager
def closing(*clients: EchoClient) -> Iterator[None]:
    try:
        yield
    finally:
        for c in clients:
            c.close()
