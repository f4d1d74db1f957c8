"""Minimal twin of servers/inetd.py: accept, fork, dup2 onto stdin/stdout, exec cat, loop reaper."""

import os
import signal
import socket
import sys
import warnings  # noqa: F401 - os.execvp imports it in every child; site has, -S does not


def reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


signal.signal(signal.SIGCHLD, reap)
ls = socket.create_server((sys.argv[1], 0), backlog=1024)
host, port = ls.getsockname()[:2]
print(f"READY {host} {port} {os.getpid()}", flush=True)
while True:
    conn, _ = ls.accept()
    if os.fork() == 0:
        ls.close()
        os.dup2(conn.fileno(), 0)
        os.dup2(conn.fileno(), 1)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvp("cat", ["cat"])
    conn.close()
