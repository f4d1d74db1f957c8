"""Concurrent echo server based on processes: CS:APP Fig. 12.5, section 12.1.

The parent accepts a connection and forks a child to serve it. The child closes its copy of the
listening socket, echoes, and exits; the parent closes its copy of the connected socket (else the
connection is never freed: `--leak-connfd` shows what happens) and goes back to accept. A SIGCHLD
handler reaps children with waitpid(-1, WNOHANG) in a loop (`--naive-reaper` reaps once per
signal and leaves zombies, because signals do not queue, section 8.5.5).

Written flat, as the figure is: the parent's fork and the child's whole life (two lines that
give SIGTERM/SIGINT back their default action, close, echo, _exit) are in `run()`, with helpers
only off that path. In a forking Python server every function run after a fork writes its code
object (reference counts, the interpreter's inline caches) and every page written is a
copy-on-write fault (CS:APP 12.1.2, 9.8.3), so each helper on the path costs every connection.
Measured with `make bench-servers` (connections/s against a minimal twin under the C client,
alternated rounds): with an accept() helper, Children.fork() and a child_exit(partial(...)) body
0.83-0.85x the twin; with Children.fork()'s stop deferral and record of each child still on the
path 0.88x (0.82..0.92); as below, in an interpreter started without the site module
(servers.cli, servers.lean), 0.91x (0.89..0.95) against the twin run with the same -S, and 0.99x
against the twin as a user runs it.

What stays on the path, and why:
* the child's two `_signal.signal` calls: a stop must end the children in the kernel, not by
  waking one interpreter per child (3,000 of them did not stop within 2 s on one CPU);
* the non-blocking accept with SignalWakeup: without it a stop that arrives while the SIGCHLD
  handler runs waits for the next signal (1 stop in 50 hung).
What left it: the parent's record of each child. At the stop the parent finds its children in
/proc (servers.forking.children_of), and a stop that reaches a just-forked child before its
handlers are reset is ended by the first line of `finally`. The shared-count cells still fork
through Children.fork (`serve_counted`): a child with a count to report must finish it.

`--xray FILE` records each connection's steps (servers.xray) and `--gc-freeze` moves every
object the parent has into the garbage collector's permanent generation before the first fork,
so a collection never walks (and writes) them.
"""

from __future__ import annotations

import _signal
import os
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
from servers.counter import MessageCounter, PipeCounter, make
from servers.forking import Children, child_exit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see servers.common)
if TYPE_CHECKING:
    from servers.xray import Xray


def serve_counted(
    children: Children, listenfd: socket.socket, connfd: socket.socket, counter: Counter
) -> int:
    """One connection of the shared-count cells (the IPC question): a child with a count to
    report must end through Python and finish its report, so it is forked with the stop
    deferred and its stop signals blocked (servers.forking) instead of the plain path's two
    lines. Returns the child's pid; raises BlockingIOError when out of processes."""
    pid = children.fork(graceful_stop=True)
    if pid == 0:
        child_exit(counter, child, listenfd, connfd, counter)  # never returns
    return pid


def child(listenfd: socket.socket, connfd: socket.socket, counter: Counter) -> None:
    listenfd.close()  # Child closes its listening socket
    echo(connfd, counter)  # Child services client, counting every chunk


def xray_child(listenfd: socket.socket, connfd: socket.socket, xray: Xray, slot: int) -> None:
    """The plain child's steps, each stamped into this connection's X-ray slot."""
    xray.stamp(slot, xray.START)
    listenfd.close()
    xray.stamp(slot, xray.LISTEN_CLOSED)
    try:
        if data := connfd.recv(CHUNK):
            connfd.sendall(data)
            xray.stamp(slot, xray.FIRST_ECHO)
            while data := connfd.recv(CHUNK):
                connfd.sendall(data)
    except OSError:
        pass
    xray.stamp(slot, xray.EXIT)


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    collect = deferring(counter.collect) if isinstance(counter, PipeCounter) else None
    drain = counter if isinstance(counter, MessageCounter) else None  # read as messages come
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
    leaked: list[socket.socket] = []
    parent = os.getpid()
    if cfg.gc_freeze:
        import gc  # noqa: PLC0415 - a teaching switch

        gc.freeze()
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        while True:
            try:
                connfd, _ = listenfd.accept()
            except BlockingIOError:  # nobody queued: sleep until a client or a signal
                wakeup.wait_readable(listenfd, drain)
                continue
            except OSError as err:  # out of descriptors (EMFILE...): back off, keep serving
                accept_failed(err, accept_backoff)
                continue
            if xray is not None:
                slot, t_accept = xray.slot(), time.monotonic_ns()
            t_fork = time.monotonic_ns() if xray is not None else 0
            try:
                if counter is not None:
                    pid = serve_counted(children, listenfd, connfd, counter)
                else:
                    pid = os.fork()
            except BlockingIOError as err:  # EAGAIN: out of processes; drop this client only
                fork_failures.note(err)
                connfd.close()
                continue
            if pid == 0:  # Child
                # The parent's stop handlers undone: a stop ends this child in the kernel,
                # without waking its interpreter (servers.forking.Children.fork says why).
                _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
                _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
                try:
                    if xray is not None:
                        xray_child(listenfd, connfd, xray, slot)
                    else:
                        listenfd.close()  # Child closes its listening socket
                        while data := connfd.recv(CHUNK):  # Child services client
                            connfd.sendall(data)
                except OSError:
                    pass  # the client reset or vanished: this child is done
                finally:
                    os._exit(0)  # Child exits (never into the parent's loop)
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
        if os.getpid() != parent:
            os._exit(0)  # a stop that reached a just-forked child before its handlers were reset
        listenfd.close()
        children.end_all(drain=None if drain is None else drain.collect)
        wakeup.close()
        for conn in leaked:
            conn.close()
        if xray is not None:
            xray.write()
    print_stats(counter)
    return 0
