"""The fork X-ray (issue 13): real forking servers record every connection, and the reader joins
and summarises what they wrote.

Each case starts the server with --xray, makes 30 connections (connect, 64 B echo, close),
stops it with SIGTERM and reads the file: every connection is recorded, its steps are in Fig.
12.5's order on one clock, the reap carries the child's rusage, nothing is dropped.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import server_param

from bench import profile
from records import xray
from servers.common import ServerConfig

CONNECTIONS = 30


@pytest.mark.parametrize(
    ("name", "args"),
    [
        server_param("process", ()),
        server_param("process", ("--gc-freeze",), id="process-gc-freeze"),
        server_param("inetd", ()),
        server_param("c-process", ()),
    ],
)
def test_xray_records_every_connection_in_order(
    start_server: Any, tmp_path: Path, name: str, args: tuple[str, ...]
) -> None:
    path = tmp_path / "xray.txt"
    server = start_server(name, "--xray", str(path), *args)
    for i in range(CONNECTIONS):
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            payload = bytes([i]) * 64
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += sock.recv(64)
            assert got == payload
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1) == b""
    report = server.stop()
    assert report.clean_exit, report
    xf = xray.read(path)
    assert xf.dropped == 0
    assert len(xf.connections) == CONNECTIONS
    for c in xf.connections:
        s = c.steps
        assert s["accept"] <= s["fork_start"] <= s["fork_end"] <= s["parent_closed"]
        assert s["fork_start"] < s["child_start"] <= s["listenfd_closed"]
        last_child = s.get("exit", s.get("exec"))
        assert last_child is not None
        assert s["listenfd_closed"] <= last_child
        assert last_child < s["reaped"]
        assert s["handler"] <= s["reaped"]
        assert c.child is not None
        assert c.child["minflt"] > 0
    summary = xray.summarise(xf, None)
    assert summary.connections == CONNECTIONS
    assert summary.incomplete == 0
    assert summary.steps_us["fork"].p50 > 0
    assert summary.timeline_us["accept"] == 0
    assert summary.timeline_us["reaped"] > 0
    assert summary.parent_vmpte_kb is not None
    assert summary.parent_vmpte_kb > 0


def test_a_bad_xray_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("xray 1 process\nconn 0 1 2 three 4 5\n")
    with pytest.raises(xray.XrayError, match=r"bad.txt:2: not a number"):
        xray.read(path)


def test_the_config_crosses_to_the_lean_interpreter_whole() -> None:
    cfg = ServerConfig(
        name="process",
        host="::1",
        port=5,
        shared_counter="pipe",
        xray="/x",
        leak_connfd=True,
        gc_freeze=True,
    )
    assert ServerConfig.from_argv(cfg.to_argv()) == cfg
    plain = ServerConfig(name="inetd")
    assert ServerConfig.from_argv(plain.to_argv()) == plain


def test_only_forking_servers_take_the_xray_scenario() -> None:
    with pytest.raises(profile.ProfileError, match=r"record no X-ray"):
        profile.build({"scenarios": [{"name": "xray", "servers": ["process", "thread"]}]})
    with pytest.raises(profile.ProfileError, match=r"take no --gc-freeze"):
        profile.build({"scenarios": [{"name": "xray", "gc_freeze": ["c-process"]}]})
