"""The live connections of a thread server, so a stop can end the threads serving them.

Python cannot kill a thread (nor should C: CS:APP 12.3's detached threads end themselves). A
thread blocked in recv() ends when its socket is shut down, so a stopping server shuts down
every connection it still serves and waits, within its grace period, for the threads to leave.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Connections:
    def __init__(self) -> None:
        self._live: set[socket.socket] = set()
        self._cond = threading.Condition()
        self._stopping = False

    def add(self, conn: socket.socket) -> bool:
        """Record a connection; False once stopping (the caller closes it instead of serving)."""
        with self._cond:
            if self._stopping:
                return False
            self._live.add(conn)
            return True

    def done(self, conn: socket.socket) -> None:
        """A serving thread is finished with `conn` (and closes it after this)."""
        with self._cond:
            self._live.discard(conn)
            self._cond.notify_all()

    def end_all(self, grace_s: float = 1.5) -> int:
        """Shut down every live connection and wait for their threads; return how many remain."""
        with self._cond:
            self._stopping = True
            for conn in self._live:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            deadline = time.monotonic() + grace_s
            while self._live:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return len(self._live)
