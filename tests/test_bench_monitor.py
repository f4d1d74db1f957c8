"""The runner's monitor on real servers: what it sees in a process tree.

The fork-per-connection server (CS:APP Fig. 12.5) holds one child per connection; those
children share most of their pages with the parent copy-on-write, so the tree's PSS (shared pages
split between sharers) must come out below its RSS (shared pages counted in every process).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bench.launch import ServerProcess
from bench.monitor import Monitor, PssCache, sample_tree


@pytest.fixture
def process_server() -> Iterator[ServerProcess]:
    with ServerProcess.start("process") as server:
        yield server
    assert server.stop().clean_exit


def _echo(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        assert chunk, "server closed the connection"
        got += chunk
    assert got == payload


def test_pss_below_rss_with_50_idle_connections(process_server: ServerProcess) -> None:
    socks: list[socket.socket] = []
    try:
        for i in range(50):
            s = socket.create_connection((process_server.host, process_server.port), timeout=10)
            socks.append(s)
            # One echo proves the child for this connection exists and serves: the readiness
            # signal, instead of a sleep.
            _echo(s, f"hello {i}".encode())
        totals, dropped = sample_tree(process_server.pgid, PssCache(budget_s=None))
        assert totals is not None
        assert dropped == 0
        assert totals.processes == 51  # the parent and one child per connection
        assert totals.zombies == 0
        assert totals.threads >= 51
        assert 0 < totals.pss < totals.rss  # forked children share pages
        assert totals.fds >= 50  # each child holds its connection
    finally:
        for s in socks:
            s.close()


def test_monitor_thread_keeps_reaped_childrens_cpu(
    process_server: ServerProcess,
) -> None:
    monitor = Monitor(process_server.pgid, interval_s=0.05).start()
    try:
        # Work done by children that then exit and are reaped must still show up as the tree's
        # CPU (the leader's children_user/children_sys): 40 short connections, 200 echoes each.
        for _ in range(40):
            with socket.create_connection(
                (process_server.host, process_server.port), timeout=10
            ) as s:
                for _ in range(200):
                    _echo(s, b"x" * 64)
    finally:
        data = monitor.stop()
    assert len(data.samples) >= 3
    first, last = data.samples[0], data.samples[-1]
    assert last.t_s > first.t_s
    # The last sample comes after every child was reaped: their CPU is in the leader's
    # children_user/children_sys, so the tree's cumulative CPU grew with the children's work.
    cpu = [s.cpu_user_s + s.cpu_sys_s for s in data.samples]
    assert cpu[-1] > cpu[0]
    assert last.processes >= 1


def test_monitor_counts_a_vanished_leader_as_dropped() -> None:
    server = ServerProcess.start("thread")
    pgid = server.pgid
    server.stop()  # how it exits is the servers' tests' business; here only that it is gone
    totals, dropped = sample_tree(pgid)
    assert totals is None
    assert dropped == 0
    monitor = Monitor(pgid)
    monitor.sample_now()
    assert monitor.data().samples == []
    assert monitor.data().dropped_samples == 1
