"""The fork-per-connection server's promises and the book's warnings, shown (CS:APP 12.1).

* 500 sequential short connections: every child reaped, the parent's descriptors back to baseline;
* `--leak-connfd`: the parent keeps one descriptor per finished client, sockets in CLOSE_WAIT,
  and with a low descriptor limit accept fails with EMFILE: the server backs off (one log line)
  and stays up;
* `--naive-reaper`: a deterministic zombie -- stop the parent, let children exit, continue it:
  one SIGCHLD, one waitpid, zombies left; the looping reaper leaves none;
* the parent never imported asyncio, uvloop, threading or multiprocessing (a fork's cost grows
  with what the parent has loaded).

Waits are on observable state (/proc) with a deadline, never a bare sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from test_servers import CLIENT_TIMEOUT_S, echo_one, echo_session

from bench.launch import ServerProcess
from records.procfs import processes, read_stat
from servers.common import MODULES_FILE_ENV

DEADLINE_S = 10.0


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    """Poll /proc-backed state until `condition` holds; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every child of `pid`, zombies included, from /proc/*/stat."""
    return [(p.pid, p.state) for p in processes() if p.ppid == pid]


def zombies(pid: int) -> int:
    return sum(1 for _, state in children(pid) if state == "Z")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def state_of(pid: int) -> str:
    st = read_stat(pid)
    assert st is not None, f"process {pid} is gone"
    return st.state


def close_wait_count(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_CLOSE_WAIT and c.laddr.port == port)


def test_500_short_connections_leave_no_zombie_and_no_descriptor(start_server: Any) -> None:
    server = start_server("process")
    baseline = fd_count(server.pid)
    for i in range(500):
        with socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S) as s:
            echo_one(s, bytes([i % 256]))
    wait_for("every child to exit and be reaped", lambda: not children(server.pid))
    assert zombies(server.pid) == 0
    assert fd_count(server.pid) == baseline
    report = server.stop()
    assert report.clean_exit, report


def test_leak_connfd_shows_descriptors_and_close_wait_growing(start_server: Any) -> None:
    server = start_server("process", "--leak-connfd")
    baseline = fd_count(server.pid)
    clients = 20
    for _ in range(clients):
        # No half-close here: the client would wait for an EOF that never comes, since the
        # parent still holds the connection open (the leak's first visible symptom).
        with socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S) as s:
            echo_one(s, b"hello")
    wait_for("the children to exit", lambda: not children(server.pid))
    # One descriptor per finished client, each a socket the peer has closed: CLOSE_WAIT.
    assert fd_count(server.pid) == baseline + clients
    wait_for(
        f"{clients} sockets in CLOSE_WAIT",
        lambda: close_wait_count(server.pid, server.port) == clients,
    )
    report = server.stop()
    assert report.clean_exit, report


def test_leak_connfd_runs_into_emfile_and_backs_off(start_server: Any) -> None:
    nofile = 24
    server = start_server("process", "--leak-connfd", nofile=nofile)
    # More clients than free descriptors; none waits for an answer (later ones are never
    # accepted), all are closed at once.
    for _ in range(nofile + 10):
        socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S).close()
    wait_for("the descriptor table to fill", lambda: fd_count(server.pid) == nofile)
    # The server's stderr (the launcher's file, read through /proc) is the signal that accept
    # failed and the back-off began.
    wait_for("the EMFILE line", lambda: "EMFILE" in Path(f"/proc/{server.pid}/fd/2").read_text())
    wait_for("the children to exit", lambda: not children(server.pid))
    assert server.alive(), "EMFILE must not crash the server"
    report = server.stop()
    assert report.clean_exit, report
    emfile_lines = [line for line in report.stderr_tail if "EMFILE" in line]
    assert len(emfile_lines) == 1, report.stderr_tail  # one line per episode, not per failure


def _zombies_after_stop_and_continue(server: ServerProcess, n: int) -> int:
    """Serve n clients, stop the parent, let all n children exit, continue the parent, and
    return how many zombies are left once its SIGCHLD handler has run."""
    socks = [socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S)]
    try:
        for _ in range(n - 1):
            socks.append(socket.create_connection((server.host, server.port), timeout=5))
        for s in socks:
            echo_one(s, b"x")  # each one is being served: its child exists
        wait_for(f"{n} children", lambda: len(children(server.pid)) == n)
        os.kill(server.pid, signal.SIGSTOP)
        wait_for("the parent to stop", lambda: state_of(server.pid) == "T")
    finally:
        for s in socks:
            s.close()
    # The children see EOF and exit; their parent cannot reap them while stopped.
    wait_for(f"{n} zombies", lambda: zombies(server.pid) == n)
    os.kill(server.pid, signal.SIGCONT)
    # One SIGCHLD was pending (signals do not queue): its handler reaps one child or all.
    wait_for("the SIGCHLD handler to run", lambda: zombies(server.pid) < n)
    return zombies(server.pid)


def test_naive_reaper_leaves_zombies(start_server: Any) -> None:
    server = start_server("process", "--naive-reaper")
    left = _zombies_after_stop_and_continue(server, 5)
    assert left >= 1, "one waitpid per SIGCHLD must leave zombies behind"
    assert left == 4
    report = server.stop()  # stopping reaps them all: nothing left in the group
    assert report.clean_exit, report


def test_looping_reaper_leaves_no_zombie(start_server: Any) -> None:
    server = start_server("process")
    left = _zombies_after_stop_and_continue(server, 5)
    wait_for("every child reaped", lambda: not children(server.pid), deadline_s=2)
    assert left == 0
    report = server.stop()
    assert report.clean_exit, report


def test_process_parent_does_not_import_what_it_does_not_need(start_server: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp, "modules")
        server = start_server("process", env={**os.environ, MODULES_FILE_ENV: str(dump)})
        modules = set(dump.read_text().split())
        assert echo_session(server.host, server.port, [b"ok"]) == 2
        server.stop()
    assert "servers.process" in modules  # the dump is real
    for heavy in ("asyncio", "uvloop", "threading", "multiprocessing", "concurrent.futures"):
        assert heavy not in modules, f"the forking parent imported {heavy}"
    # The CLI's own imports stay in the interpreter that parsed the options (servers.lean):
    # argparse drags in shutil and three compression libraries, every fork's to copy.
    for cli_only in ("argparse", "dataclasses", "typing", "shutil", "bz2", "records.registry"):
        assert cli_only not in modules, f"the forking parent kept the CLI's {cli_only}"
    # Nor what a virtual environment's site imports (an editable install's finder: pathlib...).
    for site_only in ("site", "pathlib", "re", "ipaddress", "urllib"):
        assert site_only not in modules, f"the forking parent kept site's {site_only}"


def _churn(addr: tuple[str, int], served: list[int], stop: threading.Event) -> None:
    """Short connections as fast as one client can make them, bounded in count and time: until
    `stop`, 5,000 connections or 10 s; an error means the server is stopping."""
    end = time.monotonic() + 10.0
    for _ in range(5_000):
        if stop.is_set() or time.monotonic() > end:
            return
        try:
            with socket.create_connection(addr, timeout=2) as c:
                echo_one(c, b"x")
        except (OSError, EOFError):
            return
        served[0] += 1


def test_a_stop_in_the_middle_of_a_fork_storm_leaves_nothing(start_server: Any) -> None:
    """The plain path records no child: the parent finds them in /proc when it stops, and a stop
    that reaches a just-forked child before it reset its handlers must end that child, not run
    the parent's cleanup in it. Stopped 12 times while two clients connect as fast as they can,
    each stop lands somewhere in accept, fork or a child's first steps: SIGTERM to the parent
    (what the runner sends) or SIGINT to the whole process group (Ctrl-C in a terminal), which
    reaches the children too."""
    for i in range(12):
        server = start_server("process")
        served = [0]
        stop = threading.Event()
        args = ((server.host, server.port), served, stop)
        clients = [threading.Thread(target=_churn, args=args) for _ in range(2)]
        for t in clients:
            t.start()
        try:
            wait_for("50 connections served", lambda: served[0] >= 50)  # noqa: B023 - waited here
            if i % 2:
                os.killpg(server.pgid, signal.SIGINT)
                server.popen.wait(timeout=5)
            report = server.stop()
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=15)
        assert report.exit_code == 0, report
        assert report.leftovers == [], report
        assert report.clean_exit, report
        assert report.stdout_lines == [], report  # no child ran the parent's stop and printed
