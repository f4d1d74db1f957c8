"""The book's two warnings as fault tests (issue 7; split from tests/test_faults.py, issue 22).

* `--leak-connfd` -- the parent that forgets to close connfd climbs to EMFILE, one descriptor
  and one CLOSE_WAIT socket per finished client, while the correct server stays flat.
* `--naive-reaper` -- one waitpid per SIGCHLD leaves zombies under connection bursts, because
  signals do not queue (CS:APP 8.5.5); the reaping loop leaves none.

Each adds its row to the fault table (tests/faultclients.py) that tests/test_faults.py prints.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable

from bench.launch import ServerProcess
from tests.faultclients import (
    ROWS,
    EchoClient,
    EchoError,
    Row,
    assert_clean,
    close_wait_count,
    closing,
    fd_count,
    live_children,
    payload,
    wait_for,
    zombies,
)

# The conftest's `start_server` factory fixture: starts a server, stops it at teardown.
StartServer = Callable[..., ServerProcess]
LOW_NOFILE = 64  # as tests/test_faults.py's descriptor exhaustion
STARVED_PROBE_S = 1.0  # a starved client is starved forever; this only bounds the wait

# --------------------------------------------------------------------------- --leak-connfd


def _short_clients(srv: ServerProcess, n: int, stop_at_limit: bool) -> tuple[list[int], ...]:
    """Up to `n` sequential short clients (connect, echo, close), sampling the parent's
    descriptors after each and its CLOSE_WAIT sockets after every eighth. Stops at the first
    client not served if `stop_at_limit` (and only once the parent is at its descriptor
    limit)."""
    fds, waits, refused = [], [], []
    for i in range(n):
        at_limit = fd_count(srv.pid) >= LOW_NOFILE
        client = EchoClient(srv.host, srv.port, timeout_s=STARVED_PROBE_S if at_limit else 10.0)
        with closing(client):
            try:
                client.echo(payload(i, 64))
            except EchoError as exc:
                if not (at_limit and stop_at_limit):
                    raise AssertionError(f"client {i} not served below the limit: {exc}") from exc
                refused.append(i)
        if refused:
            break
        # The client's FIN reaches the server end at once on loopback; the leaky parent's copy
        # of connfd keeps that end open, in CLOSE_WAIT, after the child has exited.
        fds.append(fd_count(srv.pid))
        if i % 8 == 7:  # /proc/net/tcp lists the whole machine's sockets: sample, not every time
            waits.append(close_wait_count(srv.port))
    return fds, waits, refused


def test_leak_connfd_until_emfile(start_server: StartServer) -> None:
    leaky = start_server("process", "--leak-connfd", nofile=LOW_NOFILE)
    correct = start_server("process", nofile=LOW_NOFILE)
    base_leaky, base_correct = fd_count(leaky.pid), fd_count(correct.pid)
    n = LOW_NOFILE + 16  # past the point where the leaky parent ran out

    fds, _waits, refused = _short_clients(leaky, n, stop_at_limit=True)
    assert refused, f"the leaky parent served all {n} clients: no EMFILE?"
    assert fd_count(leaky.pid) == LOW_NOFILE
    served = len(fds)
    # One leaked descriptor per finished client; CLOSE_WAIT climbs with them.
    assert fds[-1] - base_leaky >= served - 1, fds
    assert all(b >= a for a, b in itertools.pairwise(fds)), fds
    waits_now = wait_for(lambda: close_wait_count(leaky.port), lambda w: w >= served, 5.0)
    assert waits_now >= served, f"{waits_now} CLOSE_WAIT after {served} finished clients"
    assert leaky.alive(), "the leaky server died at EMFILE instead of backing off"

    cfds, cwaits, crefused = _short_clients(correct, n, stop_at_limit=False)
    assert not crefused
    assert len(cfds) == n
    assert max(cfds) <= base_correct + 1, cfds  # flat: connfd closed right after fork
    assert wait_for(lambda: close_wait_count(correct.port), lambda w: w == 0, 5.0) == 0

    leak_report = leaky.stop()
    assert_clean(leak_report, "process --leak-connfd")
    assert any("EMFILE" in line for line in leak_report.stderr_tail), leak_report.stderr_tail
    assert_clean(correct.stop(), "process")
    ROWS.append(
        Row(
            f"--leak-connfd, RLIMIT_NOFILE {LOW_NOFILE}",
            "process --leak-connfd",
            True,
            f"fds {base_leaky}->{fds[-1]}, CLOSE_WAIT 0->{waits_now}; "
            f"client {refused[0] + 1} not accepted (EMFILE)",
            0,
        )
    )
    ROWS.append(
        Row(
            f"--leak-connfd control, RLIMIT_NOFILE {LOW_NOFILE}",
            "process",
            True,
            f"{n} clients served; fds {min(cfds)}..{max(cfds)}; CLOSE_WAIT {max(cwaits)} max",
            0,
        )
    )


# --------------------------------------------------------------------------- --naive-reaper

BURSTS = 6
BURST_SIZE = 16


def _open_burst(srv: ServerProcess, k: int, round_: int) -> list[EchoClient]:
    """`k` clients connect and echo, so `k` children are serving them when this returns."""
    clients = [EchoClient(srv.host, srv.port) for _ in range(k)]
    try:
        for i, c in enumerate(clients):
            c.echo(payload(round_ * k + i, 32))
    except BaseException:
        for c in clients:
            c.close()
        raise
    return clients


def _close_burst(clients: list[EchoClient]) -> int:
    """All close at once, so their children exit within microseconds of each other (and their
    SIGCHLDs can merge). Returns the innocent bytes lost."""
    for c in clients:
        c.close()
    return sum(c.lost for c in clients)


def _zombies_after_burst(srv: ServerProcess) -> int:
    """Zombies once every child of the burst has exited (none alive: an observable event)."""
    left = wait_for(lambda: live_children(srv.pgid, srv.pid), lambda m: not m, timeout_s=10.0)
    assert not left, f"children still alive after their clients left: {left}"
    return len(zombies(srv.pgid))


def test_naive_reaper_bursts(start_server: StartServer) -> None:
    naive = start_server("process", "--naive-reaper")
    correct = start_server("process")
    series, lost = [], 0
    for r in range(BURSTS):
        lost += _close_burst(_open_burst(naive, BURST_SIZE, r))
        series.append(_zombies_after_burst(naive))
    # Zombies only accumulate: each handler call reaps one child and follows at least one exit.
    assert all(b >= a for a, b in itertools.pairwise(series)), series
    natural = series[-1] > 0
    if not natural:
        # Coalescing under a natural burst is likely, not certain: make it certain by stopping
        # the parent while a burst's children exit, so their SIGCHLDs merge into one (8.5.5).
        clients = _open_burst(naive, BURST_SIZE, BURSTS)
        os.kill(naive.pid, signal.SIGSTOP)
        try:
            lost += _close_burst(clients)
            live = wait_for(
                lambda: live_children(naive.pgid, naive.pid), lambda m: not m, timeout_s=10.0
            )
            assert not live
        finally:
            os.kill(naive.pid, signal.SIGCONT)
        series.append(_zombies_after_burst_settled(naive))
    assert series[-1] > 0, f"naive reaper left no zombie: {series}"

    cseries = []
    for r in range(BURSTS):
        lost += _close_burst(_open_burst(correct, BURST_SIZE, r))
        _zombies_after_burst(correct)
        # Transient zombies exist between a child's exit and the handler; once it has run, none.
        cseries.append(len(wait_for(lambda: zombies(correct.pgid), lambda z: not z, 10.0)))
    assert cseries == [0] * BURSTS, cseries
    assert lost == 0

    assert_clean(correct.stop(), "process")
    naive_report = naive.stop()
    assert naive_report.exit_code == 0, naive_report.stderr_tail
    how = "natural bursts" if natural else "SIGSTOP burst (natural bursts left none)"
    ROWS.append(
        Row(
            f"--naive-reaper, {BURSTS}x{BURST_SIZE} bursts",
            "process --naive-reaper",
            True,
            f"zombies after each burst {series} ({how})",
            lost,
        )
    )
    ROWS.append(
        Row(
            f"--naive-reaper control, {BURSTS}x{BURST_SIZE} bursts",
            "process",
            True,
            f"zombies after each burst {cseries}",
            0,
        )
    )


def _zombies_after_burst_settled(srv: ServerProcess) -> int:
    """After SIGCONT the pending SIGCHLD is handled once: wait until that has reaped one."""
    before = len(zombies(srv.pgid))
    after = wait_for(lambda: len(zombies(srv.pgid)), lambda z: z < before, timeout_s=5.0)
    return after
