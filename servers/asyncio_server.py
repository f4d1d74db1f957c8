"""Echo server on an event loop: asyncio's Protocol API on the default (selector) loop.

The event-driven model of CS:APP 12.2 in library form: one thread, one loop multiplexing every
connection; the loop calls `data_received` for each chunk and the protocol writes it back. The
same `EchoProtocol` runs on uvloop (servers.uvloop_server), so the two differ only in the loop.

Flow control: a client that sends faster than it reads would make `transport.write` buffer
without bound. When the transport's write buffer passes its high-water mark it calls
`pause_writing`; we stop reading from that client until `resume_writing`, so memory stays at about
one high-water mark per connection even with multi-MiB messages from many clients.

EMFILE/ENFILE on accept is the loop's business: asyncio logs it and stops accepting for a second
(`ACCEPT_RETRY_DELAY`); uvloop's libuv has its own reserve-descriptor trick.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import cast

from servers.common import Counter, ServerConfig, announce_ready, open_listenfd, print_stats
from servers.counter import make


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


async def serve(cfg: ServerConfig, counter: Counter | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    live: set[asyncio.Transport] = set()
    sock = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    server = await loop.create_server(
        lambda: EchoProtocol(live, counter), sock=sock, backlog=cfg.backlog
    )
    announce_ready(sock)
    await stop.wait()
    server.close()  # stop accepting
    for transport in list(live):
        transport.abort()  # end every connection; connection_lost runs on the next iterations
    await server.wait_closed()
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
