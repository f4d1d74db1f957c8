"""`python -m loadgen` as a user runs it: exits, one-line messages, output files, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.procs import echo_server, wait_group_empty

from records.schema import load_load


def loadgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus"], "unrecognized arguments"),
        (["--connections", "0"], "--connections must be"),
        (["--load", "open", "--rate", "-5"], "positive --rate"),
        (["--load", "open"], "positive --rate"),
        (["--size", "2000000"], "--size must be"),
        (["--connections", "2", "--workers", "3"], "--workers must be"),
        (["--target", "10.1.2.3:80"], "neither a loopback address"),
        (["--target", "10.1.2.3:80", "--cluster-hosts", "10.9.9.9"], "nor a host the cluster"),
        (
            ["--target", "10.1.2.3:80", "--cluster-hosts", "10.1.2.3", "--source-addrs", "2"],
            "--source-addrs needs",
        ),
        (["--target", "nonsense"], "HOST:PORT"),
        (["--cpus", "999"], "not available"),
        (["--connections", "10000", "--workers", "1"], "hard limit"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    if needle == "hard limit":
        import resource  # noqa: PLC0415

        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 2 * 10_000 + 64:
            pytest.skip("hard open-files limit is high enough here")
    base = ["--target", "127.0.0.1:9"] if "--target" not in args else []
    p = loadgen(*base, *args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_unreachable_target_is_a_run_failure(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = loadgen("--target", f"127.0.0.1:{free_port()}", "--output", str(out))
    assert p.returncode == 1
    assert "cannot connect" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    r = load_load(out)
    assert not r.complete and r.failure and "cannot connect" in r.failure


def test_complete_run_writes_result_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with echo_server() as (host, port):
        p = loadgen(
            "--target",
            f"{host}:{port}",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--output",
            str(out),
        )
    assert p.returncode == 0, p.stderr
    assert "req/s" in p.stderr.strip().splitlines()[-1]
    r = load_load(out)
    assert r.complete and r.requests > 0 and r.config.source_addrs == 8


def test_sigterm_stops_promptly_and_keeps_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with echo_server() as (host, port):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadgen",
                "--target",
                f"{host}:{port}",
                "--workers",
                "2",
                "--connections",
                "4",
                "--duration",
                "60",
                "--warmup",
                "0",
                "--output",
                str(out),
            ],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # the readiness signal: the measured phase began
            assert "measuring" in line, line
            os.kill(proc.pid, signal.SIGTERM)
            rest = proc.communicate(timeout=20)[1]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 1, rest
    assert "INCOMPLETE" in rest
    assert wait_group_empty(proc.pid) == []  # its workers are gone too
    r = load_load(out)
    assert not r.complete and r.failure is not None and "SIGTERM" in r.failure
    assert len(r.client_cpu) == 2
