"""Connection per request: connect, one echo, close, the load of CS:APP Fig. 12.5 (issue 3).

Connect, send one message, read the echo, close: the load that makes CS:APP's
Figure 12.5 server fork a child per request. Written with raw non-blocking sockets in one
epoll set of our own that the loop watches as a single descriptor (`_Poller`), rather than
transports or per-socket `add_reader`: a transport, or uvloop's poll handle per socket, costs
more than the whole request (see _Poller for the syscall counts).

Shared parts (Run, the message format, socket helpers) are in loadgen/client.py.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import select
import time
from collections.abc import Callable

from loadgen.client import (
    IP_BIND_ADDRESS_NO_PORT,
    RECONNECT_DELAY_S,
    Run,
    Stream,
    classify,
)

_IN = select.EPOLLIN
_IN_OUT = select.EPOLLIN | select.EPOLLOUT
POLL_BATCH = 256  # ready per-request sockets handled per loop wake-up
SOCK_STREAM_NONBLOCK = _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK


class _Poller:
    """One epoll set for all of a run's per-request sockets, watched by the loop as one fd.

    Per connection this costs one epoll_ctl(ADD) (close() removes the socket from the set), where
    `loop.add_reader`/`add_writer` per socket cost uvloop a poll handle, an ioctl and ~12
    epoll_ctl calls per connection (strace -c -f: half of them failing DEL/MOD), and a transport
    per connection costs more still. The loop wakes once for a batch of ready sockets.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.slots: dict[int, _Slot] = {}  # fd -> the slot whose socket it is
        loop.add_reader(self.ep.fileno(), self._ready)

    def _ready(self) -> None:
        slots = self.slots
        # Each slot closes only its own socket while handling its event, so a descriptor number
        # reused within the batch belongs to a slot whose event was already handled.
        for fd, events in self.ep.poll(0, POLL_BATCH):
            slot = slots.get(fd)
            if slot is not None:
                slot.on_event(events)

    def close(self) -> None:
        if not self.ep.closed:
            self.loop.remove_reader(self.ep.fileno())
            self.ep.close()
        self.slots.clear()


class _Slot(Stream):
    """One concurrent request stream: connect, send, read the echo, close, repeat.

    The message is sent right after the non-blocking connect() returns EINPROGRESS: on loopback
    the handshake has completed by then, so the send goes through without waiting for
    writability; if it has not (EAGAIN), the slot waits for EPOLLOUT and sends then. A failed
    connect shows up as the send's error (ECONNREFUSED, ...), so no getsockopt(SO_ERROR).
    """

    def __init__(
        self, run: Run, poller: _Poller, uid: int, sources: list[str | None], first_due_ns: int
    ) -> None:
        self.run = run
        self.poller = poller
        self.uid = uid
        self.sources = sources
        self.src_i = uid % len(sources)
        self.seq = 0
        self.sock: _socket.socket | None = None
        self.fd = -1
        self.msg = b""
        self.buf = bytearray(run.size)  # reused for every echo of this slot
        self.view = memoryview(self.buf)
        self.off = 0
        self.sent = 0
        self.connected = False
        self.sent_at = 0  # when this request began (connect), for latency and the timeout sweep
        self.due = first_due_ns
        self.busy = False
        self.active = False
        self.timer: asyncio.TimerHandle | None = None
        self.served = False

    def begin(self) -> None:
        self.active = True
        self.run.inflight += 1
        if self.run.interval_ns is None:
            self.start()
        else:
            self._schedule(time.monotonic_ns())

    def _schedule(self, now: int) -> None:
        if self.due <= now:
            self.start()
        else:
            self.timer = self.run.loop.call_later((self.due - now) / 1e9, self._fire)

    def _fire(self) -> None:
        self.timer = None
        run = self.run
        if run.recording and run.interval_ns is not None:
            now = time.monotonic_ns()
            if now > self.due:
                run.lateness.add(now - self.due)  # the client's own lateness, as in _Conn
        self.start()

    def start(self) -> None:
        run = self.run
        if run.stopping:
            self._retire()
            return
        sources = self.sources
        src = sources[self.src_i]
        self.src_i = (self.src_i + 1) % len(sources)
        self.sent_at = time.monotonic_ns()
        self.busy = True
        # The C socket type, non-blocking from birth: no Python-level wrapper object, no
        # separate fcntl/ioctl to make it non-blocking.
        sock = _socket.socket(_socket.AF_INET, SOCK_STREAM_NONBLOCK)
        try:
            if src is not None:
                # Pick the source port at connect() time, per (src, dst) pair (see make_socket).
                sock.setsockopt(_socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
            rc = sock.connect_ex(run.addr)
        except OSError as exc:
            sock.close()
            self._failed(*classify(exc))
            return
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(*classify(rc))
            return
        self.sock = sock
        self.fd = fd = sock.fileno()
        self.connected = False
        self.seq += 1
        self.msg = run.message(self.uid, self.seq)
        self.sent = 0
        self.off = 0
        self.poller.slots[fd] = self
        if self._send_more():
            self.poller.ep.register(fd, _IN if self.sent == run.size else _IN_OUT)

    def _on_connected(self) -> None:
        run = self.run
        self.connected = True
        run.c.connections_opened += 1
        if run.recording:
            run.connect.add(time.monotonic_ns() - self.sent_at)
            run.c.bytes_sent += run.size

    def _send_more(self) -> bool:
        """Send what is left of the message; False when the slot failed (and was restarted)."""
        sock = self.sock
        assert sock is not None
        sent = self.sent
        try:
            n = sock.send(self.msg if sent == 0 else memoryview(self.msg)[sent:])
        except BlockingIOError:
            return True  # still connecting (or a full buffer): EPOLLOUT says when
        except OSError as exc:
            self._failed(*classify(exc))
            return False
        if not self.connected:
            self._on_connected()
        self.sent = sent + n
        return True

    def on_event(self, events: int) -> None:
        if self.sent < self.run.size and not self._on_sendable(events):
            return
        sock = self.sock
        assert sock is not None
        off = self.off
        try:
            n = sock.recv_into(self.view[off:] if off else self.buf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._failed(*classify(exc))
            return
        self._received(n)

    def _on_sendable(self, events: int) -> bool:
        """An event while the message is not all sent: True when there may be echo to read."""
        if not self._send_more():
            return False
        if self.sent == self.run.size:
            self.poller.ep.modify(self.fd, _IN)
        # Readable before connected means an error, which the send above has reported.
        return bool(events & _IN) and self.connected

    def _received(self, n: int) -> None:
        run = self.run
        off = self.off
        if n == 0:
            self._failed("short_read", None)
            return
        run.rx_total += n
        off += n
        self.off = off
        if off < run.size:
            return
        if self.buf != self.msg:
            run.rx_total -= run.size  # not verified: not counted as echoed
            self._failed("mismatch", None)
            return
        now = time.monotonic_ns()
        self._close()
        self.busy = False
        if run.recording:
            c = run.c
            c.completed += 1
            c.bytes_received += run.size
            if not self.served:
                self.served = True
                run.served += 1
            if run.interval_ns is None:
                run.latency.add(now - self.sent_at)
            else:
                run.latency.add(now - min(self.due, self.sent_at))  # as in _Conn
                run.service.add(now - self.sent_at)
        if run.stopping:
            self._retire()
        elif run.interval_ns is None:
            self.start()
        else:
            self.due += run.interval_ns
            self._schedule(now)

    def _close(self) -> None:
        sock = self.sock
        if sock is not None:
            # close() also drops the socket from the epoll set (its only reference).
            self.poller.slots.pop(self.fd, None)
            sock.close()
            self.sock = None
            self.fd = -1

    def _failed(self, kind: str, detail: str | None) -> None:
        self.run.error(kind, detail)
        self.fail_restart()

    def fail_restart(self) -> None:
        run = self.run
        self._close()
        self.busy = False
        if run.stopping:
            self._retire()
            return
        if run.interval_ns is not None:
            self.due += run.interval_ns
        self.timer = run.loop.call_later(RECONNECT_DELAY_S, self._fire)

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._close()


def make_slots(
    run: Run, uids: list[int], sources: list[str | None], first_due: Callable[[int], int]
) -> list[_Slot]:
    poller = _Poller(run.loop)
    run.closers.append(poller.close)
    slots = [_Slot(run, poller, uid, sources, first_due(i)) for i, uid in enumerate(uids)]
    run.conns.update(slots)
    return slots
