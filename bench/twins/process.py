"""Minimal twin of servers/process.py: accept, fork, echo, exit, loop reaper, nothing else."""

import os
import signal
import socket
import sys


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
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        os._exit(0)
    conn.close()
