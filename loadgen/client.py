"""The hot path: one worker's connections, on one uvloop event loop.

Two connection modes (issue 3):

* persistent -- loadgen/persistent.py: an asyncio Protocol per connection, one message in flight;
* per-request -- loadgen/per_request.py: connect, one echo, close, on raw sockets in one epoll set.

This module holds what both share: the worker's Run (counters, histograms, the fill count, the
timeout sweep), the message format and the socket helpers. The fill phase itself is persistent
mode's (loadgen/persistent.py).

Every echo is compared byte for byte with what was sent. Each message is unique: its first
8 bytes are (connection uid << 40 | sequence number), so a stale, reordered or cross-connection
echo is a mismatch. The rest of the message is one shared pattern, so even 10,000 connections
of 1 MiB messages share one buffer.

Samples go into `SampleBuffer`s (a list append per sample; see hist.py) and are flushed into
HdrHistograms once a second by the timeline ticker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from records.hist import SampleBuffer

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+
SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
CONNECT_CONCURRENCY = 128  # bounded so a 10,000-connection setup never overflows listen backlogs
RECONNECT_DELAY_S = 0.01  # after an error, so a refusing server is not hammered in a hot loop

_ERRNO_KINDS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
    errno.ETIMEDOUT: "timeout",
    errno.EADDRNOTAVAIL: "addr_not_avail",
}


def classify(exc: BaseException | int) -> tuple[str, str | None]:
    """(error kind, detail key or None) for an exception or errno."""
    if isinstance(exc, TimeoutError):
        return "timeout", None
    code = exc if isinstance(exc, int) else getattr(exc, "errno", None)
    if code in _ERRNO_KINDS:
        return _ERRNO_KINDS[code], None
    name = errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
    return "other", f"other:{name}"


def pattern(size: int) -> bytes:
    """The shared body of every message: bytes 8.. of a message of `size` bytes."""
    body = max(0, size - 8)
    block = bytes(range(251))  # a prime length, so the pattern does not align with powers of 2
    return (block * (body // len(block) + 1))[:body]


@dataclass(slots=True)
class Counters:
    """What one phase (warm-up or measured) of one worker counted."""

    completed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    connections_opened: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    details: dict[str, int] = field(default_factory=dict)


class Run:
    """One phase of one worker: the shared state every connection reports into."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        size: int,
        timeout_s: float,
        interval_ns: int | None,
        recording: bool,
    ) -> None:
        self.loop = loop
        self.addr = (host, port)
        self.size = size
        self.tail = pattern(size)
        self.timeout_ns = int(timeout_s * 1e9)
        self.interval_ns = interval_ns  # per-connection send interval (open loop), else None
        self.recording = recording  # False in warm-up: nothing is recorded, bytes still counted
        self.stopping = False
        self.rx_total = 0  # every verified echoed byte received, whatever the phase
        self.c = Counters()
        self.latency = SampleBuffer()
        self.service = SampleBuffer()
        self.connect = SampleBuffer()
        self.lateness = SampleBuffer()  # open loop: timer-driven sends, actual - intended time
        self.unfinished = SampleBuffer()  # in flight at the window's close: wait so far
        self.port_bound = False
        # The fill phase (persistent mode): connections echoed once before the window opens.
        self.filled = 0
        self.fill_last_ns = 0
        self._fill_done: asyncio.Future[None] | None = None
        self.fill_target = 0
        self.window_open = False  # a connection whose fill echo arrives late begins at once
        self.served = 0  # connections that completed a request while recording
        self.due_unsent = 0  # open loop: due in the window, never sent
        self.conns: set[Any] = set()  # live _Conn / _Slot objects, for the timeout sweep
        self.inflight = 0
        self._drained: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.closers: list[Callable[[], None]] = []  # run at the end of drain()

    # ------------------------------------------------------------------ accounting
    def error(self, kind: str, detail: str | None = None) -> None:
        if kind == "addr_not_avail":
            self.port_bound = True
        c = self.c
        c.errors[kind] = c.errors.get(kind, 0) + 1
        if detail:
            c.details[detail] = c.details.get(detail, 0) + 1

    def message(self, uid: int, seq: int) -> bytes:
        stamp = ((uid << SEQ_BITS) | (seq & SEQ_MASK)).to_bytes(8, "little")
        return stamp + self.tail if self.size > 8 else stamp[: self.size]

    def flush(self) -> None:
        self.latency.flush()
        self.service.flush()
        self.connect.flush()
        self.lateness.flush()
        self.unfinished.flush()

    # ------------------------------------------------------------------ fill phase
    def fill_one(self, now: int) -> None:
        self.filled += 1
        self.fill_last_ns = now
        fut = self._fill_done
        if fut is not None and not fut.done() and self.filled >= self.fill_target:
            fut.set_result(None)

    def close_window(self, t0: int, t_end: int) -> None:
        """The window closed at `t_end`: every request still in flight is recorded as waiting
        since its intended (open loop) or actual send, censored at t_end; in open loop, every
        further message that fell due before t_end but was never sent is counted."""
        for conn in self.conns:
            conn.censor(t0, t_end)

    # ------------------------------------------------------------------ in-flight tracking
    def done_one(self) -> None:
        """A connection/slot went idle for good (stopping); resolve the drain when all did."""
        self.inflight -= 1
        if self.inflight <= 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self, limit_s: float) -> int:
        """Stop sending; wait up to `limit_s` for in-flight echoes. Returns how many were left."""
        self.stopping = True
        for conn in list(self.conns):
            conn.on_stop()
        if self.inflight > 0:
            self._drained = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), limit_s)
        left = max(0, self.inflight)
        for conn in list(self.conns):
            conn.abort()
        self.conns.clear()
        self.stop_sweeper()
        for close in self.closers:
            close()
        self.closers.clear()
        return left

    def start_sweeper(self) -> None:
        period = min(0.25, max(0.01, self.timeout_ns / 4e9))

        def sweep() -> None:
            now = time.monotonic_ns()
            limit = self.timeout_ns
            for conn in list(self.conns):
                if conn.busy and now - conn.sent_at > limit:
                    self.error("timeout")
                    conn.fail_restart()
            self._sweeper = self.loop.call_later(period, sweep)

        self._sweeper = self.loop.call_later(period, sweep)

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


# ====================================================================== persistent connections


def make_socket(src: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if src is not None:
            # Pick the source port at connect() time, per (src, dst) pair, not at bind() time
            # from the one global pool: each source address then gets its own ~28,000 ports.
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def not_connected(data: bytes) -> object:
    raise RuntimeError("send before connection_made")


class Stream:
    """What a persistent connection and a per-request slot share at the end of a run: once
    stopped, a stream with nothing in flight retires at once; one with a message in flight
    retires when its echo (or its error) arrives."""

    run: Run
    timer: asyncio.TimerHandle | None
    busy: bool  # a message is in flight
    active: bool  # counted in run.inflight (has work until stopped)

    def on_stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.busy:
            self._retire()

    def _retire(self) -> None:
        if self.active:
            self.active = False
            self.run.done_one()

    due: int
    sent_at: int
    filling: bool = False

    def censor(self, t0: int, t_end: int) -> None:
        run = self.run
        if self.filling:
            # Never served before the window and not since: waited the whole window.
            run.unfinished.add(t_end - t0)
            return
        if not self.active:
            return
        interval = run.interval_ns
        nxt = self.due
        if self.busy:
            since = self.sent_at if interval is None else min(self.due, self.sent_at)
            if since < t_end:
                run.unfinished.add(t_end - since)
            if interval is not None:
                nxt = self.due + interval
        if interval is not None and nxt <= t_end:
            run.due_unsent += (t_end - nxt) // interval + 1
