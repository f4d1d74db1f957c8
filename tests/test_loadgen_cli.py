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

from loadgen.cli import build_parser, config_from_args
from records import loadargs
from records.schema import LoadConfig, read_load


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
    assert len(lines) == 1, p.stderr
    assert needle in lines[0], p.stderr


def test_unreachable_target_is_a_run_failure(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = loadgen("--target", f"127.0.0.1:{free_port()}", "--output", str(out))
    assert p.returncode == 1
    assert "cannot connect" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    r = read_load(out)
    assert not r.complete
    assert r.failure
    assert "cannot connect" in r.failure


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
    r = read_load(out)
    assert r.complete
    assert r.requests > 0
    assert r.config.source_addrs == 8


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
    r = read_load(out)
    assert not r.complete
    assert r.failure is not None
    assert "SIGTERM" in r.failure
    assert len(r.client_cpu) == 2


@pytest.mark.parametrize(
    "config",
    [
        LoadConfig(host="127.0.0.1", port=8080, connections=10, source_addrs=8),
        LoadConfig(
            host="127.0.0.1",
            port=1,
            connections=3,
            load="open",
            rate=1234.567,
            size=1 << 20,
            duration_s=0.25,
            warmup_s=0.0,
            workers=3,
            cpus=(1,),
            source_addrs=0,
            timeout_s=2.5,
        ),
        LoadConfig(
            host="10.200.0.1",
            port=9,
            connections=40,
            idle_connections=960,
            cluster_hosts=("10.200.0.1", "10.200.0.2"),
        ),
        LoadConfig(host="::1", port=9, connections=1, mode="per-request", cpus=(0, 1)),
    ],
)
def test_a_load_config_survives_its_command_line(config: LoadConfig) -> None:
    # The runner hands the load generator its LoadConfig as argv: every field must come back.
    argv = loadargs.argv(config, output=Path("x.json"), window_fd=7, parent_pid=11)
    assert argv[1:3] == ["-m", "loadgen"]
    args = build_parser().parse_args(argv[3:])
    assert config_from_args(args) == config
    assert (args.output, args.window_fd, args.parent_pid) == ("x.json", 7, 11)
