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
    assert module in lines[0], lines[0]
    assert "usage error" in lines[0], lines[0]
    assert proc.stdout == ""


def _echobench(*argv: str) -> subprocess.CompletedProcess[str]:
    """The `echobench` console script's code, run as its installed entry point runs it."""
    return subprocess.run(
        [sys.executable, "-c", "import sys, echobench; sys.exit(echobench.main())", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_echobench_help_lists_every_subcommand() -> None:
    proc = _echobench("--help")
    assert proc.returncode == 0, proc
    for command in ("run", "report", "compare", "check-report", "servers", "loadgen", "micro",
                    "twins", "selfbench"):  # fmt: skip
        assert f"\n  {command} " in proc.stdout, command


@pytest.mark.parametrize(
    "argv", [["no-such-command"], ["bench", "run"], ["servers", "process", "--no-such-option"]]
)
def test_echobench_usage_errors_are_one_line_and_exit_2(argv: list[str]) -> None:
    """A bad command (`echobench`'s own parser) or a bad option of a good one (the command's
    parser): the same one-line path."""
    proc = _echobench(*argv)
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "usage error" in lines[0], lines[0]


def test_echobench_dispatches_to_the_commands_own_line() -> None:
    proc = _echobench("servers", "--help")
    assert proc.returncode == 0, proc
    assert "process" in proc.stdout  # the servers' own help: every registered server
