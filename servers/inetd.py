"""Fork + exec per connection, as inetd runs a simple service: the "exec" of fork/exec/waitpid.

The parent is the process server of CS:APP Fig. 12.5 (accept, fork, close connfd, reap in a
SIGCHLD handler). The child makes the connection its stdin and stdout with dup2 (CS:APP 10.9)
and execs a handler that knows nothing about sockets: the system's `cat` (default) or, with
`--handler python`, servers/inetd_handler.py, which pays for a whole interpreter start per
connection. Compared with `process`, this adds exec's cost: a new program image, a new address
space, the dynamic loader.

`--shared-counter`: an exec'd program keeps nothing of the parent's memory (a shared mapping
does not survive exec), and `cat` counts nothing. So only `--handler python` takes the switch:
`naive` (the handler counts privately, the parent reports 0) or `pipe` (the handler inherits the
pipe's write end and reports once at exit).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from servers.common import (
    Backoff,
    ServerConfig,
    SignalWakeup,
    Stop,
    accept,
    announce_ready,
    deferring,
    open_listenfd,
    print_stats,
    stop_on_signals,
)
from servers.counter import PipeCounter, make
from servers.forking import Children, child_exit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see servers.common)
if TYPE_CHECKING:
    from servers.xray import Xray

HANDLER = Path(__file__).with_name("inetd_handler.py")


def which(program: str) -> str:
    """`program`'s path on $PATH, found once in the parent. execvp in every child would try
    each $PATH entry in turn: strace counted 9 execve calls per connection, 8 of them failing."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or ".", program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    raise OSError(f"{program}: not found on PATH")


def handler_argv(cfg: ServerConfig, counter: object) -> list[str]:
    if cfg.handler == "cat":
        return [which("cat")]
    mode = cfg.shared_counter or "none"
    if isinstance(counter, PipeCounter):
        mode = str(counter.wfd)
    return [sys.executable, "-I", "-S", str(HANDLER), mode]


def exec_handler(
    listenfd: socket.socket,
    connfd: socket.socket,
    argv: list[str],
    counter: object,
    xray: Xray | None = None,
    slot: int = -1,
) -> None:
    """In the child: the connection becomes stdin and stdout, then the handler replaces us.
    With an X-ray, the child stamps its start, its close of listenfd and its exec call (what
    the exec'd program does is seen only through its rusage, at the reap)."""
    if xray is not None:
        xray.stamp(slot, xray.START)
    listenfd.close()
    if xray is not None:
        xray.stamp(slot, xray.LISTEN_CLOSED)
    os.dup2(connfd.fileno(), 0)
    os.dup2(connfd.fileno(), 1)
    connfd.close()
    if isinstance(counter, PipeCounter):
        os.set_inheritable(counter.wfd, True)
    # Python ignores SIGPIPE and exec keeps ignored signals ignored: give cat the default back.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if xray is not None:
        xray.stamp(slot, xray.EXEC)
    os.execv(argv[0], argv)


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    argv = handler_argv(cfg, counter)
    collect = deferring(counter.collect) if isinstance(counter, PipeCounter) else None
    xray = None
    if cfg.xray:
        from servers.xray import Xray  # noqa: PLC0415 - only the X-ray cells pay for it

        xray = Xray(cfg.xray, cfg.name)
    if cfg.gc_freeze:
        import gc  # noqa: PLC0415 - a teaching switch

        gc.freeze()
    children = Children()
    children.install_reaper(on_reap=collect, xray=xray)
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    stop_on_signals()
    wakeup = SignalWakeup()  # SIGCHLD and SIGTERM both handled: see SignalWakeup
    listenfd.setblocking(False)
    accept_backoff, fork_failures = Backoff("accept"), Backoff("fork")
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        while True:
            connfd = accept(listenfd, accept_backoff, wakeup)
            slot = xray.slot() if xray is not None else -1
            t_accept = t_fork = time.monotonic_ns()
            try:
                pid = children.fork()
            except BlockingIOError as err:  # EAGAIN: out of processes; drop this client only
                fork_failures.note(err)
                connfd.close()
                continue
            if pid == 0:
                # The handler's own count (if any) is its business: no child_done here.
                child_exit(None, exec_handler, listenfd, connfd, argv, counter, xray, slot)
            t_forked = time.monotonic_ns()
            connfd.close()
            if xray is not None:
                xray.conn(slot, pid, t_accept, t_fork, t_forked, time.monotonic_ns())
    except Stop:
        pass
    finally:
        listenfd.close()
        children.end_all()
        wakeup.close()
        if xray is not None:
            xray.write()
    print_stats(counter)
    return 0
