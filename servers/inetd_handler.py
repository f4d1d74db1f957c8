"""The Python echo handler that `inetd --handler python` execs for each connection.

Run as `python -I -S inetd_handler.py [MODE]` with the connection as stdin and stdout, like an
inetd service: a whole interpreter starts per connection (the "exec" in fork/exec/waitpid,
CS:APP 8.4), which is the cost this handler exists to show. It imports nothing from the
package (-S skips site-packages) so the start stays as small as Python's can be.

MODE is `none` (default), `naive` (count in this process's memory only: the inetd parent never
sees it) or a descriptor number: the write end of the parent's pipe, which gets one
(bytes, updates) record at exit, the format of servers.counter's pipe mode.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from types import FrameType

CHUNK = 65536
RECORD = struct.Struct("=QQ")  # must match servers.counter._RECORD


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "none"
    signal.signal(signal.SIGTERM, _stop)  # unwind, so a pipe report still goes out
    signal.signal(signal.SIGINT, _stop)
    nbytes = updates = 0
    try:
        while data := os.read(0, CHUNK):
            # Counted before it is echoed: a stop between the two must not lose an echoed chunk.
            # (Both are plain integer updates: one statement, which a signal cannot split.)
            nbytes, updates = nbytes + len(data), updates + 1
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except (_Stop, OSError):
        pass  # stopped, reset or EPIPE: this connection ends
    # A second SIGTERM (the process group's and the parent's) must not cut the report short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if mode.isdigit() and updates:
        os.write(int(mode), RECORD.pack(nbytes, updates))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
