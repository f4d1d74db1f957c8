"""Preforked echo server: N worker processes accept on one shared listening socket.

Beyond the book, but built from its parts: the process model of CS:APP 12.1 without a fork per
connection. The parent opens the listening socket, forks `--workers` children that inherit it,
and only supervises: it waits for a worker to die and replaces it. Each worker accepts and
serves one client at a time (Apache's prefork MPM, gunicorn's sync workers); the kernel hands
each incoming connection to one of the workers blocked in accept. At most N clients are served
at once, as in the prethreaded server (Fig. 12.28).
"""

from __future__ import annotations

import os
import signal
import socket
import time

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


def worker(listenfd: socket.socket, counter: Counter | None) -> None:
    backoff = Backoff("accept")
    while True:
        connfd = accept(listenfd, backoff)
        with connfd:
            echo(connfd, counter)


def spawn(children: Children, listenfd: socket.socket, counter: Counter | None) -> None:
    """Fork one worker, retrying (with back-off) while the system is out of processes."""
    failures = Backoff("fork")
    while True:
        try:
            pid = children.fork(graceful_stop=counter is not None)
        except BlockingIOError as err:
            time.sleep(failures.note(err))
            continue
        if pid == 0:
            child_exit(counter, worker, listenfd, counter)
        return


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    children = Children()
    stop_on_signals()
    # A handler (even a no-op) makes SIGCHLD write to the wakeup socket; the parent sleeps in
    # select() on it rather than in os.wait(), which a SIGTERM can miss (see SignalWakeup).
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    wakeup = SignalWakeup()
    try:
        for _ in range(cfg.workers):
            spawn(children, listenfd, counter)
        announce_ready(listenfd)
        while True:
            wakeup.wait_signal()
            while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:  # a worker died: replace it
                children.live.discard(pid)
                if isinstance(counter, PipeCounter):
                    deferring(counter.collect)()
                spawn(children, listenfd, counter)
    except Stop:
        pass
    finally:
        listenfd.close()
        wakeup.close()
        children.end_all()
    print_stats(counter)
    return 0
