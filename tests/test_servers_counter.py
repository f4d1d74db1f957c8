"""`--shared-counter` (issue 5, server side): one byte counter shared by every connection.

Under 20 concurrent clients, every exact mode reports exactly the bytes echoed (`shm` and `pipe`
for the process models, `lock` for threads, `global` for event loops), with at least one update
per message; `naive` (a plain global in each forked child) reports fewer -- the parent's own copy,
which no child ever touched. A mode that does not fit the server's model is a usage error.
"""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest
from test_servers import echo_session, log_uniform_sizes, run_clients

from servers.cli import COUNTER_MODES, INETD_COUNTER_MODES
from servers.registry import SERVERS

CLIENTS = 20

# (id, server, args, exact?) -- every server in every mode its model takes.
CASES: list[tuple[str, str, tuple[str, ...], bool]] = []
for _name, _spec in SERVERS.items():
    _extra: tuple[str, ...] = ("--handler", "python") if _name == "inetd" else ()
    for _mode in INETD_COUNTER_MODES if _name == "inetd" else COUNTER_MODES[_spec.model]:
        CASES.append(
            (f"{_name}-{_mode}", _name, (*_extra, "--shared-counter", _mode), _mode != "naive")
        )


def test_every_server_has_a_counter_case() -> None:
    assert {name for _, name, _, _ in CASES} == set(SERVERS)


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
