"""Echo server on uvloop: servers.asyncio_server's EchoProtocol and Acceptor, unchanged, on
libuv's loop.

Nothing here but the loop: the comparison with `asyncio` isolates what the event loop
implementation costs (CS:APP 12.2's event-driven model either way). That includes accepting:
the shared Acceptor backs off on EMFILE where libuv's own listener would shed waiting clients.
"""

from __future__ import annotations

import uvloop

from servers import asyncio_server
from servers.common import ServerConfig


def run(cfg: ServerConfig) -> int:
    return asyncio_server.run(cfg, loop_factory=uvloop.new_event_loop)
