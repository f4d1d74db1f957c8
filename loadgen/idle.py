"""Idle connections for the scale sweep (issue 7): opened first, held, proven alive at the end.

"How many clients can this server hold?" is a question about mostly idle clients: a fork server
holds one process per connection (CS:APP 12.1), a thread server one thread, an event loop one
entry in its epoll set. A scale cell therefore opens N idle connections before the measured
phase, echoes one message on each (so the server has really taken it -- accepted, forked, given
it a thread -- and it is not merely queued in the listen backlog, where connect() already
succeeds), keeps them open without traffic while a few active connections measure latency, and
at the end sends one message on each and checks its echo byte for byte: a connection the server
accepted but can no longer serve (no process, thread or worker behind it) is counted dead.

Idle sockets are plain non-blocking sockets driven by `loop.sock_*` calls, kept apart from the
active connections' protocol objects (loadgen/client.py), so the hot path of the measured
connections is untouched. Every wait is bounded by a deadline for the whole set, not per socket:
10,000 connections that each time out one after another would otherwise take hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from loadgen.client import CONNECT_CONCURRENCY, classify, make_socket
from records.limits import open_deadline_s

VERIFY_CONCURRENCY = 512
# Echoed once when a connection opens: proof the server took it (its echo is read in full, so it
# can never be mistaken for the end-of-run check's echo).
HELLO = b"idle connection, served once at open\n"


class IdleSet:
    """One worker's idle connections."""

    def __init__(self, host: str, port: int, size: int, timeout_s: float) -> None:
        self.addr = (host, port)
        self.size = size
        self.timeout_s = timeout_s
        self.socks: list[socket.socket] = []
        self.errors: dict[str, int] = {}
        self.details: dict[str, int] = {}
        self.opened = 0
        self.alive = 0

    def _error(self, exc: BaseException) -> None:
        kind, _ = classify(exc)
        self._error_kind(kind)

    def _error_kind(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        key = f"idle:{kind}"
        self.details[key] = self.details.get(key, 0) + 1

    async def _echo(self, sock: socket.socket, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, message)
        got = b""
        while len(got) < len(message):
            chunk = await loop.sock_recv(sock, len(message) - len(got))
            if not chunk:
                raise ConnectionResetError("closed by the server")
            got += chunk
        if got != message:
            raise ValueError("idle echo differs from what was sent")

    async def open(self, sources: list[str | None], stop: asyncio.Event, hello: bytes) -> None:
        """Open one connection per entry of `sources` (its source address) and echo `hello` on
        it, all bounded: a connection counts as opened once the server has answered on it."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + open_deadline_s(len(sources), self.timeout_s)
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(src: str | None) -> None:
            async with sem:
                left = min(self.timeout_s, deadline - time.monotonic())
                if left <= 0 or stop.is_set():
                    self._error(TimeoutError())
                    return
                try:
                    sock = make_socket(src)
                except OSError as exc:
                    self._error(exc)
                    return
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, self.addr), left)
                    left = min(self.timeout_s, deadline - time.monotonic())
                    await asyncio.wait_for(self._echo(sock, hello), max(left, 0.001))
                except ValueError:
                    sock.close()
                    self._error_kind("mismatch")
                    return
                except (OSError, TimeoutError) as exc:
                    sock.close()
                    self._error(exc)
                    return
                self.socks.append(sock)
                self.opened += 1

        await asyncio.gather(*(one(s) for s in sources))

    async def verify(self, message: bytes) -> None:
        """One echo on every held connection, within one timeout for the whole set."""
        deadline = time.monotonic() + self.timeout_s
        sem = asyncio.Semaphore(VERIFY_CONCURRENCY)

        async def one(sock: socket.socket) -> None:
            async with sem:
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    await asyncio.wait_for(self._echo(sock, message), left)
                except ValueError:
                    self._error_kind("mismatch")
                    return
                except (OSError, TimeoutError) as exc:
                    self._error(exc)
                    return
                self.alive += 1

        await asyncio.gather(*(one(s) for s in self.socks))

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.socks.clear()
