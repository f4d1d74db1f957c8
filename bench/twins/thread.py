"""Minimal twin of servers/thread.py: a thread per connection, echoes, closes."""

import os
import socket
import sys
import threading


def echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass


ls = socket.create_server((sys.argv[1], 0), backlog=1024)
host, port = ls.getsockname()[:2]
print(f"READY {host} {port} {os.getpid()}", flush=True)
while True:
    conn, _ = ls.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
