"""Minimal twin of servers/multiplex.py: one selector, non-blocking sockets, echo."""

import os
import selectors
import socket
import sys

sel = selectors.DefaultSelector()
ls = socket.create_server((sys.argv[1], 0), backlog=1024)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
host, port = ls.getsockname()[:2]
print(f"READY {host} {port} {os.getpid()}", flush=True)
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        if sock is ls:
            try:
                conn, _ = ls.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = sock.recv(65536)
            if data:
                sock.sendall(data)  # small echoes: the socket buffer takes them whole
                continue
        except BlockingIOError:
            continue
        except OSError:
            pass
        sel.unregister(sock)
        sock.close()
