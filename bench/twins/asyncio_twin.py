"""Minimal twin of servers/asyncio_server.py (and uvloop_server.py with `uvloop`)."""

import asyncio
import os
import sys
import typing


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, sys.argv[1], 0, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"READY {host} {port} {os.getpid()}", flush=True)
    await asyncio.Event().wait()


if len(sys.argv) > 2 and sys.argv[2] == "uvloop":
    import uvloop

    uvloop.install()
asyncio.run(main())
