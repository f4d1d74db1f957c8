"""Minimal twin of servers/threadpool.py: 4 threads take connections from a bounded queue."""

import os
import queue
import socket
import sys
import threading

q: queue.Queue[socket.socket] = queue.Queue(16)


def worker() -> None:
    while True:
        conn = q.get()
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


for _ in range(4):
    threading.Thread(target=worker, daemon=True).start()
ls = socket.create_server((sys.argv[1], 0), backlog=1024)
host, port = ls.getsockname()[:2]
print(f"READY {host} {port} {os.getpid()}", flush=True)
while True:
    conn, _ = ls.accept()
    q.put(conn)
