"""The runner's monitor on real servers: what it sees in a process tree.

The fork-per-connection server (CS:APP Fig. 12.5) holds one child per connection; those
children share most of their pages with the parent copy-on-write, so the tree's PSS (shared pages
split between sharers) must come out below its RSS (shared pages counted in every process).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
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


# A tree whose one child lives in the second half of every 20 ms period, counted from the window's
# start edge: alive 8 ms of every 20, so 0.4 children on average over the window.
_PERIODIC = """
import os, sys, time
t0, n = int(sys.argv[1]), int(sys.argv[2])
print("READY", flush=True)
for k in range(n):
    time.sleep(max(0.0, (t0 + k * 20_000_000 + 10_000_000 - time.monotonic_ns()) / 1e9))
    pid = os.fork()
    if pid == 0:
        time.sleep(0.008)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_the_window_looks_see_a_periodic_load_as_its_time_average() -> None:
    """The open loop's schedule starts at the window's start edge; a monitor that then looked
    every 0.2 s exactly would see the same instant of every 20 ms cycle (here: always the half
    with no child, 0 on average where 0.4 are alive). Its looks are spread at random instead,
    so their mean estimates the time average."""
    window_s = 4.0
    t0 = time.monotonic_ns() + 300_000_000
    tree = subprocess.Popen(
        [sys.executable, "-c", _PERIODIC, str(t0), str(int(window_s / 0.02))],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert tree.stdout is not None
        assert tree.stdout.readline().strip() == b"READY"
        read_fd, write_fd = os.pipe()
        monitor = Monitor(tree.pid)
        monitor.watch_window(read_fd)
        monitor.start()
        os.write(write_fd, f"{t0} {t0 + int(window_s * 1e9)}".encode())
        os.close(write_fd)
        assert tree.wait(timeout=window_s + 10) == 0
        data = monitor.stop()
    finally:
        if tree.poll() is None:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()
        if tree.stdout is not None:
            tree.stdout.close()
    assert data.window_start is not None
    assert data.window_end is not None
    looks = data.samples[data.window_start + 1 : data.window_end]
    assert len(looks) >= 12
    gaps = [b.t_s - a.t_s for a, b in itertools.pairwise(looks)]
    assert max(gaps) > 1.3 * min(gaps)  # not one fixed step
    mean = sum(s.processes - 1 for s in looks) / len(looks)
    assert 0.1 < mean < 0.8, (mean, [s.processes for s in looks])  # 0.4 expected; 0 if aliased
