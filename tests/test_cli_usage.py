"""One usage-error path for every echobench command line (issue 10): a bad option is one line
on stderr naming the command, `usage error`, and exit status 2 -- never argparse's usage block,
never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    ("servers", ["process", "--no-such-option"]),
    ("servers", ["thread", "--leak-connfd"]),  # a switch the thread server does not take
    ("loadgen", ["--target", "127.0.0.1:1", "--connections", "many"]),
    ("bench", ["run", "--no-such-option"]),
    ("bench", ["twins", "c-epoll"]),  # a server with no twin: caught after parsing
    ("microbench", ["--no-such-option"]),
    ("analysis", ["report"]),  # a missing argument
]


@pytest.mark.parametrize(("module", "argv"), CASES, ids=[f"{m}-{a[-1]}" for m, a in CASES])
def test_a_usage_error_is_one_line_and_exit_2(module: str, argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert module in lines[0] and "usage error" in lines[0], lines[0]
    assert proc.stdout == ""
