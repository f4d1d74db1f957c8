"""Prethreaded concurrent echo server: CS:APP Fig. 12.28, section 12.5.5.

The main thread accepts connections and inserts them into a bounded buffer (the book's sbuf:
here queue.Queue, which is the same producer-consumer buffer built on a mutex and two condition
variables instead of three semaphores). A fixed set of `--workers` threads each remove a
connection and serve that client until it leaves. So at most N clients are served at once: client
N+1 waits in the buffer (or the listen backlog) until a worker is free -- a result to show, not
hide, with persistent connections.
"""

from __future__ import annotations

import contextlib
import queue
import socket

from servers.common import (
    Backoff,
    Counter,
    ServerConfig,
    SignalWakeup,
    Stop,
    accept,
    announce_ready,
    echo,
    open_listenfd,
    print_stats,
    stop_on_signals,
)
from servers.counter import make
from servers.tracking import Connections, start_thread

SBUFSIZE = 16  # the book's SBUFSIZE


def worker(
    sbuf: queue.Queue[socket.socket | None], conns: Connections, counter: Counter | None
) -> None:
    while (connfd := sbuf.get()) is not None:  # Remove connfd from buffer
        try:
            echo(connfd, counter)  # Service client
        finally:
            conns.done(connfd)
            connfd.close()


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    sbuf: queue.Queue[socket.socket | None] = queue.Queue(maxsize=SBUFSIZE)
    conns = Connections()
    workers = [start_thread(worker, sbuf, conns, counter) for _ in range(cfg.workers)]
    stop_on_signals()
    wakeup = SignalWakeup()  # a stop must interrupt accept(): see SignalWakeup
    listenfd.setblocking(False)
    accept_backoff = Backoff("accept")
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        while True:
            connfd = accept(listenfd, accept_backoff, wakeup)
            if conns.add(connfd):
                sbuf.put(connfd)  # Insert connfd in buffer (blocks while all slots are taken)
            else:
                connfd.close()
    except Stop:
        pass
    finally:
        listenfd.close()
        wakeup.close()
        # Shut down every connection, queued or served: each worker's recv returns EOF, it
        # drains the buffer, then the sentinels end the workers.
        conns.end_all()
        for _ in workers:
            with contextlib.suppress(queue.Full):
                sbuf.put_nowait(None)
        for t in workers:
            t.join(timeout=0.2)
    print_stats(counter)
    return 0
