"""Concurrent echo server based on I/O multiplexing: CS:APP section 12.2 (Fig. 12.8's loop).

One thread, one selector (epoll here), and a small state machine per connection: the loop
waits until the listening socket or some connected socket is ready, then does exactly the I/O
that will not block. A connection is either *reading* (waiting for its next chunk) or *writing*
(a chunk the kernel would not take at once is pending); it never reads while a chunk is pending,
so a client that does not read back slows only itself and memory stays at one chunk per client.

Stopping: SIGTERM/SIGINT write a byte to a socketpair the selector watches
(signal.set_wakeup_fd), so the loop notices at once without a handler raising mid-update.
EMFILE/ENFILE on accept: stop watching the listening socket for a growing pause, then resume.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import signal
import socket
import time
from types import FrameType

from servers.common import (
    CHUNK,
    RESOURCE_ERRNOS,
    Backoff,
    Counter,
    ServerConfig,
    announce_ready,
    open_listenfd,
    print_stats,
)
from servers.counter import make

ACCEPTS_PER_WAKE = 64  # accept a burst, but let established clients have their turn


class Conn:
    __slots__ = ("pending", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = memoryview(b"")  # the unsent rest of the current chunk


class Multiplexer:
    def __init__(self, listenfd: socket.socket, counter: Counter | None) -> None:
        self.listenfd = listenfd
        self.counter = counter
        self.sel = selectors.DefaultSelector()
        self.backoff = Backoff("accept")
        self.accept_paused_until = 0
        self.chunk_len: dict[Conn, int] = {}
        self.stopping = False

    def serve(self, wake: socket.socket) -> None:
        self.sel.register(self.listenfd, selectors.EVENT_READ, "listen")
        self.sel.register(wake, selectors.EVENT_READ, "wake")
        while not self.stopping:
            timeout = None
            if self.accept_paused_until:
                now = time.monotonic_ns()
                if now >= self.accept_paused_until:
                    self.accept_paused_until = 0
                    self.sel.register(self.listenfd, selectors.EVENT_READ, "listen")
                else:
                    timeout = (self.accept_paused_until - now) / 1e9
            for key, mask in self.sel.select(timeout):
                if key.data == "listen":
                    self.accept_ready()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        wake.recv(64)
                elif mask & selectors.EVENT_WRITE:
                    self.write_ready(key.data)
                else:
                    self.read_ready(key.data)

    def accept_ready(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, _ = self.listenfd.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in RESOURCE_ERRNOS:  # out of descriptors: pause accepting
                    delay_ns = int(self.backoff.note(err) * 1e9)
                    self.accept_paused_until = time.monotonic_ns() + delay_ns
                    self.sel.unregister(self.listenfd)
                    return
                if err.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def read_ready(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:  # reset: this client only
            self.close(conn)
            return
        if not data:  # EOF, and nothing pending: the client is done
            self.close(conn)
            return
        self.chunk_len[conn] = len(data)
        conn.pending = memoryview(data)
        self.write_ready(conn, first=True)

    def write_ready(self, conn: Conn, *, first: bool = False) -> None:
        try:
            sent = conn.sock.send(conn.pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(conn)
            return
        conn.pending = conn.pending[sent:]
        if conn.pending:
            if first:  # stop reading until this chunk is out
                self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        if self.counter is not None:
            self.counter.add(self.chunk_len[conn])  # one update per chunk, once fully echoed
        if not first:
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def close(self, conn: Conn) -> None:
        self.sel.unregister(conn.sock)
        self.chunk_len.pop(conn, None)
        conn.sock.close()

    def close_all(self) -> None:
        for key in list(self.sel.get_map().values()):
            if isinstance(key.data, Conn):
                self.close(key.data)
        self.sel.close()


def run(cfg: ServerConfig) -> int:
    counter = make(cfg.shared_counter) if cfg.shared_counter else None
    listenfd = open_listenfd(cfg.host, cfg.port, cfg.backlog)
    listenfd.setblocking(False)
    mux = Multiplexer(listenfd, counter)
    wake, wake_w = socket.socketpair()
    wake.setblocking(False)
    wake_w.setblocking(False)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        mux.stopping = True  # the wakeup byte ends the current select()

    old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        announce_ready(listenfd)  # inside try: a SIGTERM right after READY is a clean stop
        mux.serve(wake)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        mux.close_all()
        for sock in (listenfd, wake, wake_w):
            sock.close()
    print_stats(counter)
    return 0
