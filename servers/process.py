"""Concurrent echo server based on processes: CS:APP Fig. 12.5, section 12.1.

The parent accepts a connection and forks a child to serve it. The child closes its copy of the
listening socket, echoes, and exits; the parent closes its copy of the connected socket (else the
connection is never freed: `--leak-connfd` shows what happens) and goes back to accept. A SIGCHLD
handler reaps children with waitpid(-1, WNOHANG) in a loop (`--naive-reaper` reaps once per
signal and leaves zombies, because signals do not queue, section 8.5.5).

This module deliberately imports nothing heavier than socket/signal/os: every fork copies the
parent's page tables and every touched page is a copy-on-write fault in the child (12.1.2).
"""

from __future__ import annotations

import socket
from functools import partial

from servers.common import (
    Backoff,
    Counter,
    ServerConfig,
    SignalWakeup,
    Stop,
    accept,
    announce_ready,
    deferring,
    echo,
    open_listenfd,
    print_stats,
    stop_on_signals,
)
from servers.counter import PipeCounter, make
from servers.forking import Children, child_exit


def child(listenfd: socket.socket, connfd: socket.socket, counter: Counter | None) -> None:
    listenfd.close()  # Child closes its listening socket
    echo(connfd, counter)  # Child services client


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    collect = deferring(counter.collect) if isinstance(counter, PipeCounter) else None
    children = Children()
    children.install_reaper(naive=cfg.naive_reaper, on_reap=collect)
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    stop_on_signals()
    wakeup = SignalWakeup()  # SIGCHLD and SIGTERM both handled: see SignalWakeup
    listenfd.setblocking(False)
    accept_backoff, fork_failures = Backoff("accept"), Backoff("fork")
    leaked: list[socket.socket] = []
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        while True:
            connfd = accept(listenfd, accept_backoff, wakeup)
            try:
                pid = children.fork(graceful_stop=counter is not None)
            except BlockingIOError as err:  # EAGAIN: out of processes; drop this client only
                fork_failures.note(err)
                connfd.close()
                continue
            fork_failures.ok()
            if pid == 0:  # child
                child_exit(counter, partial(child, listenfd, connfd, counter))
            if cfg.leak_connfd:
                leaked.append(connfd)  # the bug: a reference kept, the descriptor never closed
            else:
                connfd.close()  # Parent closes connected socket (important!)
    except Stop:
        pass
    finally:
        listenfd.close()
        children.end_all()
        wakeup.close()
        for conn in leaked:
            conn.close()
    print_stats(counter)
    return 0
