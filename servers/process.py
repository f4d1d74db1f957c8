"""Concurrent echo server based on processes: CS:APP Fig. 12.5, section 12.1.

The parent accepts a connection and forks a child to serve it. The child closes its copy of the
listening socket, echoes, and exits; the parent closes its copy of the connected socket (else the
connection is never freed: `--leak-connfd` shows what happens) and goes back to accept. A SIGCHLD
handler reaps children with waitpid(-1, WNOHANG) in a loop (`--naive-reaper` reaps once per
signal and leaves zombies, because signals do not queue, section 8.5.5).

Written flat, as the figure is: the whole per-connection path of the parent and of the child is
in `run()`, with helpers only off that path. In a forking Python server, every function run
after a fork writes its code object (call counts and the interpreter's inline caches), and every
page written is a copy-on-write fault (CS:APP 12.1.2, 9.8.3). Measured with `make
bench-servers` (connections/s against a minimal twin under the C client): the same server
written with an accept() helper, Children.fork() and a child_exit(partial(...)) body made
0.83-0.85x the twin's connections/s; flat, it is within the noise of the twin. This module
imports nothing heavier than socket/signal/os, and it runs in the lean interpreter of
servers.lean, for the same reason.

`--xray FILE` records each connection's steps (servers.xray) and `--gc-freeze` moves every
object the parent has into the garbage collector's permanent generation before the first fork,
so a collection never walks (and writes) them.
"""

from __future__ import annotations

import socket
import time

from servers.common import (
    CHUNK,
    Backoff,
    Counter,
    ServerConfig,
    SignalWakeup,
    Stop,
    accept_failed,
    announce_ready,
    deferring,
    echo,
    open_listenfd,
    print_stats,
    stop_on_signals,
)
from servers.counter import PipeCounter, make
from servers.forking import Children, child_exit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see servers.common)
if TYPE_CHECKING:
    from servers.xray import Xray


def child(listenfd: socket.socket, connfd: socket.socket, counter: Counter | None) -> None:
    listenfd.close()  # Child closes its listening socket
    if counter is not None:
        echo(connfd, counter)  # Child services client
        return
    try:  # echo() written out: one function fewer in every child (see the module's header)
        while data := connfd.recv(CHUNK):
            connfd.sendall(data)
    except OSError:
        pass  # the client reset or vanished: this child is done


def xray_child(
    listenfd: socket.socket, connfd: socket.socket, counter: Counter | None, xray: Xray, slot: int
) -> None:
    """child(), stamping each step into this connection's X-ray slot."""
    xray.stamp(slot, xray.START)
    listenfd.close()
    xray.stamp(slot, xray.LISTEN_CLOSED)
    try:
        if data := connfd.recv(CHUNK):
            if counter is not None:
                counter.add(len(data))
            connfd.sendall(data)
            xray.stamp(slot, xray.FIRST_ECHO)
            echo(connfd, counter)
    except OSError:
        pass
    xray.stamp(slot, xray.EXIT)


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    collect = deferring(counter.collect) if isinstance(counter, PipeCounter) else None
    xray = None
    if cfg.xray:
        from servers.xray import Xray  # noqa: PLC0415 - only the X-ray cells pay for it

        xray = Xray(cfg.xray, cfg.name)
    children = Children()
    children.install_reaper(naive=cfg.naive_reaper, on_reap=collect, xray=xray)
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    stop_on_signals()
    wakeup = SignalWakeup()  # SIGCHLD and SIGTERM both handled: see SignalWakeup
    listenfd.setblocking(False)
    accept_backoff, fork_failures = Backoff("accept"), Backoff("fork")
    graceful = counter is not None  # a child with a count to report ends through Python
    leaked: list[socket.socket] = []
    if cfg.gc_freeze:
        import gc  # noqa: PLC0415 - a teaching switch

        gc.freeze()
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        while True:
            try:
                connfd, _ = listenfd.accept()
            except BlockingIOError:  # nobody queued: sleep until a client or a signal
                wakeup.wait_readable(listenfd)
                continue
            except OSError as err:  # out of descriptors (EMFILE...): back off, keep serving
                accept_failed(err, accept_backoff)
                continue
            if xray is not None:
                slot, t_accept = xray.slot(), time.monotonic_ns()
            try:
                t_fork = time.monotonic_ns() if xray is not None else 0
                pid = children.fork(graceful_stop=graceful)
            except BlockingIOError as err:  # EAGAIN: out of processes; drop this client only
                fork_failures.note(err)
                connfd.close()
                continue
            if pid == 0:  # child
                if xray is not None:
                    child_exit(counter, xray_child, listenfd, connfd, counter, xray, slot)
                child_exit(counter, child, listenfd, connfd, counter)  # never returns
            if xray is not None:
                t_forked = time.monotonic_ns()
            if cfg.leak_connfd:
                leaked.append(connfd)  # the bug: a reference kept, the descriptor never closed
            else:
                connfd.close()  # Parent closes connected socket (important!)
            if xray is not None:
                xray.conn(slot, pid, t_accept, t_fork, t_forked, time.monotonic_ns())
    except Stop:
        pass
    finally:
        listenfd.close()
        children.end_all()
        wakeup.close()
        for conn in leaked:
            conn.close()
        if xray is not None:
            xray.write()
    print_stats(counter)
    return 0
