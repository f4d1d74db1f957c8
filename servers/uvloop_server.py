"""Echo server on uvloop: servers.asyncio_server's EchoProtocol and Acceptor, unchanged, on
libuv's loop.

Nothing here but the loop: the comparison with `asyncio` isolates what the event loop
implementation costs (CS:APP 12.2's event-driven model either way). That includes accepting:
the shared Acceptor backs off on EMFILE where libuv's own listener would shed waiting clients.

What that costs, measured (alternated runs under the C client, one connection per request): the
minimal twin, which lets uvloop accept in C (`loop.create_server`), made 41,368 connections/s;
this server 27,821 (0.68x, 35 against 24 us of CPU per connection); this server with
`create_server` instead of the Acceptor 40,879 (0.99x). So the whole gap `make bench-servers`
shows for uvloop is accepting in Python: a task and a done callback per connection, the price of
the EMFILE rule. Cells with persistent connections do not pay it; connection-per-request cells
do, and read as "uvloop with a Python accept loop". (asyncio's own create_server accepts in
Python too, so the asyncio server is within a few percent of its twin.)
"""

from __future__ import annotations

import uvloop

from servers import asyncio_server
from servers.common import ServerConfig


def run(cfg: ServerConfig) -> int:
    return asyncio_server.run(cfg, loop_factory=uvloop.new_event_loop)
