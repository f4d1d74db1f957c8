"""Concurrent echo server based on threads: CS:APP Fig. 12.14, section 12.3.

The main thread accepts and starts one thread per connection; the thread echoes until the client
leaves, closes the connection and ends. Threads are detached (daemon: nothing joins them), as
the book's thread routine calls pthread_detach. All threads share one address space, so a shared
counter is a global plus a Lock (`--shared-counter lock`).
"""

from __future__ import annotations

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


def thread(connfd: socket.socket, conns: Connections, counter: Counter | None) -> None:
    try:
        echo(connfd, counter)
    finally:
        conns.done(connfd)
        connfd.close()


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    conns = Connections()
    stop_on_signals()
    wakeup = SignalWakeup()  # a stop must interrupt accept(): see SignalWakeup
    listenfd.setblocking(False)
    accept_backoff, start_failures = Backoff("accept"), Backoff("thread start")
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        while True:
            connfd = accept(listenfd, accept_backoff, wakeup)
            if not conns.add(connfd):
                connfd.close()
                continue
            try:
                start_thread(thread, connfd, conns, counter)
            except RuntimeError as err:  # can't start new thread: drop this client only
                start_failures.note(OSError(0, str(err)))
                conns.done(connfd)
                connfd.close()
                continue
    except Stop:
        pass
    finally:
        listenfd.close()
        wakeup.close()
        conns.end_all()
    print_stats(counter)
    return 0
