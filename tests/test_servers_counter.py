"""`--shared-counter` (issue 5, server side): one byte counter shared by every connection.

Under 20 concurrent clients, every exact mode reports exactly the bytes echoed (`shm` and `pipe`
for the process models, `lock` for threads, `global` for event loops), with at least one update
per message; `naive` (a plain global in each forked child) reports fewer -- the parent's own copy,
which no child ever touched. A mode that does not fit the server's model is a usage error.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from test_servers import echo_session, log_uniform_sizes, run_clients

from records.registry import SERVERS

CLIENTS = 20

# (id, server, args, exact?) -- every server in every mode it declares in the registry.
CASES: list[tuple[str, str, tuple[str, ...], bool]] = []
for _name, _spec in SERVERS.items():
    _extra: tuple[str, ...] = ("--handler", "python") if _name == "inetd" else ()
    for _mode in _spec.counter_modes:
        CASES.append(
            (f"{_name}-{_mode}", _name, (*_extra, "--shared-counter", _mode), _mode != "naive")
        )


def test_every_server_has_a_counter_case() -> None:
    """Every Python server counts (the C servers are floors, with no counter to compare)."""
    python = {name for name, spec in SERVERS.items() if spec.native is None}
    assert {name for _, name, _, _ in CASES} == python


@pytest.mark.parametrize(
    ("name", "args", "exact"), [pytest.param(n, a, e, id=i) for i, n, a, e in CASES]
)
def test_shared_counter_counts_echoed_bytes(
    start_server: Any, name: str, args: tuple[str, ...], exact: bool
) -> None:
    rng = random.Random(f"counter-{args}")
    plans = [
        [rng.randbytes(n) for n in log_uniform_sizes(rng, 3, hi=256 * 1024)] for _ in range(CLIENTS)
    ]
    server = start_server(name, *args)

    echoed = sum(run_clients(CLIENTS, lambda i: echo_session(server.host, server.port, plans[i])))

    report = server.stop()
    assert report.clean_exit, report
    assert report.stats is not None, report.stdout_lines
    assert report.stdout_lines == [
        f"STATS bytes={report.stats['bytes']} updates={report.stats['updates']}"
    ]
    if exact:
        assert report.stats["bytes"] == echoed
        messages = sum(len(p) for p in plans)
        assert (
            messages <= report.stats["updates"] <= echoed
        )  # one update per chunk, >= 1 per message
    else:
        assert report.stats["bytes"] < echoed  # each child counted in its own copy
        assert report.stats == {"bytes": 0, "updates": 0}


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("process", ("--shared-counter", "lock")),
        ("thread", ("--shared-counter", "shm")),
        ("uvloop", ("--shared-counter", "pipe")),
        ("inetd", ("--shared-counter", "pipe")),  # cat counts nothing
        ("inetd", ("--handler", "python", "--shared-counter", "shm")),  # no mapping across exec
    ],
)
def test_mode_that_does_not_fit_the_model_is_a_usage_error(
    name: str, args: tuple[str, ...]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servers", name, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "shared-counter" in proc.stderr


STOP_ROUNDS = 4
STOP_CLIENTS = 6
STOP_MAX_MSG = 4096


def _stream(host: str, port: int, seed: int, going: threading.Event, got: list[int]) -> None:
    """Echo random messages until the server goes away (bounded: 20,000 messages, 20 s);
    `got[0]` counts every echoed byte that arrived, partial echoes included."""
    rng = random.Random(seed)
    deadline = time.monotonic() + 20.0
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=5) as s:
        for i in range(20_000):
            if time.monotonic() > deadline:
                break
            payload = rng.randbytes(rng.randint(1, STOP_MAX_MSG))
            s.sendall(payload)
            need = len(payload)
            while need:
                chunk = s.recv(need)
                if not chunk:
                    return
                got[0] += len(chunk)
                need -= len(chunk)
            if i == 20:
                going.set()


@pytest.mark.parametrize(
    ("name", "args"), [pytest.param(n, a, id=i) for i, n, a, exact in CASES if exact]
)
def test_no_update_is_lost_when_the_stop_comes_mid_stream(
    start_server: Any, name: str, args: tuple[str, ...]
) -> None:
    """Issue 11: SIGTERM while every client is echoing as fast as it can, in a loop: every byte
    a client got back is in the count (prefork + shm once reported 1,805,197 of 1,806,000). The
    count may exceed it by less than one message per client: counted, then cut off by the stop
    before it was all sent."""
    for r in range(STOP_ROUNDS):
        server = start_server(name, *args)
        got = [[0] for _ in range(STOP_CLIENTS)]
        going = [threading.Event() for _ in range(STOP_CLIENTS)]
        threads = [
            threading.Thread(
                target=_stream, args=(server.host, server.port, r * 100 + i, going[i], got[i])
            )
            for i in range(STOP_CLIENTS)
        ]
        for t in threads:
            t.start()
        try:
            # pool servers serve only some clients at once: wait for the first few only
            assert any(g.wait(10) for g in going[:1]), "no client got going"
            report = server.stop()
        finally:
            for t in threads:
                t.join(timeout=30)
        echoed = sum(g[0] for g in got)
        assert report.stats is not None, report.stdout_lines
        counted = report.stats["bytes"]
        assert echoed <= counted < echoed + STOP_CLIENTS * STOP_MAX_MSG, (name, args, counted)
