"""Echo server on an event loop: asyncio's Protocol API on the default (selector) loop.

The event-driven model of CS:APP 12.2 in library form: one thread, one loop multiplexing every
connection; the loop calls `data_received` for each chunk and the protocol writes it back. The
same `EchoProtocol` and `Acceptor` run on uvloop (servers.uvloop_server), so the two differ only in
the loop.

Flow control: a client that sends faster than it reads would make `transport.write` buffer
without bound. When the transport's write buffer passes its high-water mark it calls
`pause_writing`; we stop reading from that client until `resume_writing`, so memory stays at about
one high-water mark per connection even with multi-MiB messages from many clients.

Why we accept ourselves instead of `loop.create_server`: neither loop follows the project's rule
for EMFILE/ENFILE (back off and retry, one log line per episode, no busy spin). Python 3.11's
selector loop stays in its accept loop after EMFILE (cpython gh-151615): a traceback and a retry
per attempt, most of a core and megabytes of stderr, and a SIGTERM in the episode could fail
("Invalid file descriptor: -1"). uvloop's libuv sheds waiting clients instead (its reserve-fd
trick). So `Acceptor` watches the listening socket with `add_reader`, accepts a bounded burst and
hands each socket to `connect_accepted_socket`; out of descriptors, it stops watching for a
growing pause (common.Backoff), as servers.multiplex does. Accepting is not on the echo path.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
from collections.abc import Callable
from typing import cast

from servers.common import (
    Backoff,
    Counter,
    ServerConfig,
    announce_ready,
    log,
    open_listenfd,
    print_stats,
)
from servers.counter import make

# Accept a burst, then let established clients have their turn; readiness is level-triggered,
# so connections left in the queue wake us again on the next iteration.
ACCEPTS_PER_WAKE = 100

Started = asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]


class EchoProtocol(asyncio.Protocol):
    def __init__(self, live: set[asyncio.Transport], counter: Counter | None) -> None:
        self.live = live
        self.counter = counter
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only the same interface.
        self.transport = cast(asyncio.Transport, transport)
        self.live.add(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self.counter is not None:
            self.counter.add(len(data))  # one shared update per chunk: a plain global, one thread

    def eof_received(self) -> None:
        """Half-close from the client: returning None lets the transport close itself once
        everything it holds has been written back."""

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()  # the client is not reading: stop reading from it

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.live.discard(self.transport)


class Acceptor:
    """Accept on `sock` for the running loop; pause accepting while out of descriptors."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.backoff = Backoff("accept")
        self.retry: asyncio.TimerHandle | None = None
        self.starting: set[Started] = set()
        self.failed = 0  # accepted sockets the loop could not make a transport of
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self.accept_ready)

    def accept_ready(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return  # the queue is empty
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as err:
                # Out of descriptors or memory (RESOURCE_ERRNOS), or anything else: a raise
                # would leave the reader armed and the loop spinning. Stop watching a while.
                self.loop.remove_reader(self.sock.fileno())
                self.retry = self.loop.call_later(self.backoff.note(err), self.resume)
                return
            task: Started = self.loop.create_task(
                self.loop.connect_accepted_socket(self.factory, conn)
            )
            self.starting.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(functools.partial(self.started, conn))

    def resume(self) -> None:
        self.retry = None
        self.loop.add_reader(self.sock.fileno(), self.accept_ready)

    def started(self, conn: socket.socket, task: Started) -> None:
        self.starting.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():  # cancelled: only by close(), at stop
                self.failed += 1
                if self.failed == 1:  # the first says why; close() reports the count
                    log(f"accept: connection not started: {task.exception()!r}")
            conn.close()  # a no-op if the transport already closed it

    async def close(self) -> None:
        """Stop accepting; abandon connections still being set up."""
        if self.retry is not None:
            self.retry.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in self.starting:
            task.cancel()
        await asyncio.gather(*self.starting, return_exceptions=True)
        if self.failed:
            log(f"accept: {self.failed} accepted connections not started")


async def serve(cfg: ServerConfig, counter: Counter | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    live: set[asyncio.Transport] = set()
    sock = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    acceptor = Acceptor(loop, sock, lambda: EchoProtocol(live, counter))
    announce_ready(sock)
    await stop.wait()
    await acceptor.close()
    for transport in list(live):
        transport.abort()  # end every connection; connection_lost runs on the next iterations
    for _ in range(1000):  # bounded: connection_lost is scheduled by abort(), a few hops away
        if not live:
            break
        await asyncio.sleep(0)


def run(
    cfg: ServerConfig, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(cfg, counter))
    print_stats(counter)
    return 0
