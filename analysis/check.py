"""`python -m analysis check-report RUN_DIR`: open report.html in headless Chromium.

Takes a screenshot (RUN_DIR/report-screenshot.png) and reads back, from Chromium's rendered DOM,
how many of the report's images decoded and how many errors the page saw (the report's inline
script writes `data-images="k/n"` and `data-errors="e"` on <body> after the load event: failed
loads, script errors, console.error), and which of the required sections are there. Passes only
when every image loaded, no error was seen and no section is missing. Chromium runs in its own
process group with a fresh profile directory and no network features, and is ended by its
process group if it hangs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Sections a report must have (anchors of its level-2 headings, see document.slug).
REQUIRED_SECTIONS = (
    "in-one-screen",
    "glossary",
    "the-csapp-1212-scorecard",
    "fork-exec-waitpid",
    "why-is-ipc-a-disadvantage",
    "which-model-when-what-each-server-spends-at-load",
    "how-sure-method-and-noise",
)
TIMEOUT_S = 90.0
# issue 21: a report its reader finishes. The opening fits one screen; the main report reads in
# one sitting; the appendix (every cell, every note, the manifest) is its own page, linked.
OPENING_MAX_WORDS = 350
OPENING_MAX_TABLE_ROWS = 6
REPORT_MAX_WORDS = 8000
APPENDIX = "appendix.md"


class CheckError(Exception):
    pass


@dataclass(frozen=True)
class CheckResult:
    screenshot: Path
    images_loaded: int
    images_total: int
    errors: int = 0
    missing_sections: tuple[str, ...] = ()
    shape: tuple[str, ...] = ()  # what breaks the report's length promises (report_shape)

    @property
    def ok(self) -> bool:
        return (
            self.images_total > 0
            and self.images_loaded == self.images_total
            and self.errors == 0
            and not self.missing_sections
            and not self.shape
        )


def words(markdown: str) -> int:
    """Words as a reader meets them: table rules and cell bars are not words."""
    return sum(
        1
        for line in markdown.splitlines()
        if not re.fullmatch(r"\|?(-+\|)+-*", line.strip())
        for token in line.split()
        if token != "|"
    )


def _section(markdown: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    return m.group(1) if m else ""


def report_shape(run_dir: Path) -> tuple[str, ...]:
    """The report's length promises, each broken one a line: the opening in one screen (at
    most 350 words and one table of at most 6 rows), the report under 8,000 words, the
    appendix on its own page and linked."""
    md = run_dir / "report.md"
    if not md.exists():
        return (f"{md}: no report",)
    text = md.read_text(encoding="utf-8")
    problems = []
    opening = _section(text, "In one screen")
    if not opening:
        problems.append("no 'In one screen' section")
    n = words(opening)
    if n > OPENING_MAX_WORDS:
        problems.append(f"the opening is {n} words (at most {OPENING_MAX_WORDS})")
    tables = re.findall(r"(?:^\|.*\n)+", opening, re.M)
    if len(tables) > 1:
        problems.append(f"the opening has {len(tables)} tables (at most 1)")
    for t in tables:
        rows = len(t.strip().splitlines()) - 2  # header and rule
        if rows > OPENING_MAX_TABLE_ROWS:
            problems.append(
                f"the opening's table has {rows} rows (at most {OPENING_MAX_TABLE_ROWS})"
            )
    total = words(text)
    if total > REPORT_MAX_WORDS:
        problems.append(f"the report is {total:,} words (at most {REPORT_MAX_WORDS:,})")
    if not (run_dir / APPENDIX).exists():
        problems.append(f"no {APPENDIX} beside the report")
    elif f"]({APPENDIX})" not in text:
        problems.append(f"the report does not link {APPENDIX}")
    return tuple(problems)


def find_browser() -> str | None:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


def _end_group(pgid: int) -> None:
    """End every process left in chromium's group (zygote, GPU and renderer helpers) and wait,
    bounded, until the group is gone; orphaned helpers are reaped by init."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic_ns() + 5_000_000_000
    while time.monotonic_ns() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _run(argv: list[str]) -> str:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # chromium forks helpers: end them all by process group
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CheckError(f"chromium did not finish within {TIMEOUT_S:.0f} s") from None
    finally:
        _end_group(proc.pid)
    if proc.returncode != 0:
        raise CheckError(f"chromium exited with status {proc.returncode}")
    return out


def check_report(run_dir: Path, browser: str | None = None, screenshot: bool = True) -> CheckResult:
    html = run_dir / "report.html"
    if not html.exists():
        raise CheckError(f"{html}: no report (run `python -m analysis report {run_dir}` first)")
    exe = browser or find_browser()
    if exe is None:
        raise CheckError("chromium not found (Debian: apt-get install -y chromium)")
    shot = run_dir / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    url = html.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="echobench-chromium-") as profile:
        common = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
        ]
        if screenshot:
            _run([*common, f"--screenshot={shot}", "--window-size=1400,4000", url])
        dom = _run([*common, "--virtual-time-budget=5000", "--dump-dom", url])
    if screenshot and (not shot.exists() or shot.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n"):
        raise CheckError("chromium wrote no screenshot")
    m = re.search(r'data-images="(\d+)/(\d+)"', dom)
    if m is None:
        raise CheckError("the report's image check did not run (no data-images on <body>)")
    e = re.search(r'data-errors="(\d+)"', dom)
    missing = tuple(s for s in REQUIRED_SECTIONS if f'id="{s}"' not in dom)
    errors = int(e.group(1)) if e else 0
    return CheckResult(
        shot, int(m.group(1)), int(m.group(2)), errors, missing, report_shape(run_dir)
    )
