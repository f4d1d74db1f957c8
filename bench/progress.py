"""One live progress line on stderr: cell i/n, its name, the ETA and the last cell's requests/s.

On a terminal the line is rewritten in place; when stderr is a file or a pipe (CI, `make` output
captured, the tests) every update is a plain line, so a log reads as a history.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    m, s = divmod(seconds, 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, total: int, estimate_s: float, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._estimate_per_cell = estimate_s / total if total else 0.0
        self._done_cells = 0
        self._spent_s = 0.0
        self._last_rps: float | None = None
        self._start = time.monotonic()

    def eta_s(self, remaining: int) -> float:
        # Measured mean once a few cells have run; the profile's estimate until then.
        per = self._spent_s / self._done_cells if self._done_cells else self._estimate_per_cell
        return per * remaining

    def cell_started(self, index: int, name: str) -> None:
        rps = f"{self._last_rps:,.0f} req/s" if self._last_rps is not None else "-"
        line = (
            f"[{index}/{self.total}] {name}  ETA {fmt_duration(self.eta_s(self.total - index + 1))}"
            f"  last {rps}"
        )
        self._write(line)

    def cell_done(self, seconds: float, rps: float | None) -> None:
        self._done_cells += 1
        self._spent_s += seconds
        self._last_rps = rps

    def note(self, text: str) -> None:
        """A message that must stay on screen (a failed cell, a warning)."""
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, line: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + line[:width])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
