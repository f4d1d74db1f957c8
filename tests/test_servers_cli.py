"""`python -m servers`: the help lists the registry, and misuse is one line on stderr, exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from records.registry import SERVERS
from servers.cli import main


def test_help_lists_every_registered_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servers", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for spec in SERVERS.values():
        row = next(
            (
                line
                for line in proc.stdout.splitlines()
                if line.split()[:1] == [spec.name] and spec.reference in line
            ),
            None,
        )
        assert row is not None, f"{spec.name} missing from --help"
        assert spec.label in row
        assert spec.model.value in row


@pytest.mark.parametrize(
    "argv",
    [
        ["thread", "--leak-connfd"],  # process only
        ["uvloop", "--naive-reaper"],  # process only
        ["process", "--handler", "python"],  # inetd only
        ["process", "--xray", "x.txt", "--shared-counter", "pipe"],  # X-ray: the plain path
        ["asyncio", "--workers", "4"],  # pools only
        ["inetd", "--handler", "perl"],
        ["prefork", "--workers", "0"],
        ["process", "--port", "70000"],
        ["nosuchserver"],
        [],
    ],
    ids=lambda argv: "-".join(argv) or "none",
)
def test_usage_error_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "error" in err


def test_address_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "servers", "thread", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
