"""Minimal twin of servers/prefork.py: 4 forked workers accept on one socket and echo."""

import os
import signal
import socket
import sys

ls = socket.create_server((sys.argv[1], 0), backlog=1024)
for _ in range(4):
    if os.fork() == 0:
        while True:
            conn, _ = ls.accept()
            with conn:
                try:
                    while data := conn.recv(65536):
                        conn.sendall(data)
                except OSError:
                    pass
host, port = ls.getsockname()[:2]
print(f"READY {host} {port} {os.getpid()}", flush=True)
while True:
    signal.pause()
