"""A load, handed over whole: the LoadConfig checked in one place and rendered to the load
generator's command line in one place.

A cell's LoadConfig is built when its profile is expanded (`bench.profile`) and checked there by
`problem`, so a profile the load generator would refuse fails in `show-profile`, before any cell
runs. When the cell runs, the runner aims it at the server it started (`aimed`), fills in what
only the run knows (client CPUs, workers, the open loop's measured rate) and renders it to argv
(`argv`); `python -m loadgen` parses that back into the same LoadConfig (a test checks the round
trip), checks it again with `problem` plus what depends on the machine, and sends it whole to its
workers. No field is copied by hand on the way.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from records.limits import MAX_CONNECTIONS, MAX_SIZE, MAX_SOURCE_ADDRS, MAX_WORKERS
from records.schema import LoadConfig

LOOPBACK = "127.0.0.1"  # where a cell's load is aimed until its server says where it listens
# Connections to a 127.x target are spread over 127.0.0.2..9 by default: one source address has
# only ~28,000 ephemeral ports, which a per-request cell uses up within seconds.
DEFAULT_LOOPBACK_SOURCES = 8


def default_source_addrs(host: str) -> int:
    return DEFAULT_LOOPBACK_SOURCES if host.startswith("127.") else 0


def problem(c: LoadConfig, *, rate_pending: bool = False) -> str | None:
    """What makes this load impossible to run anywhere (one sentence), or None.

    Target and machine (loopback or cluster host, CPUs present, open-files limit) are checked
    by the load generator itself. `rate_pending`: an open loop's rate is measured in the run, so a
    profile's open-loop cells have none yet.
    """
    most = min(MAX_WORKERS, c.connections)
    rate_ok = (c.rate is not None and c.rate > 0) or (c.rate is None and rate_pending)
    checks = (
        (
            1 <= c.connections <= MAX_CONNECTIONS,
            f"--connections must be 1..{MAX_CONNECTIONS}, got {c.connections}",
        ),
        (
            0 <= c.idle_connections <= MAX_CONNECTIONS,
            f"--idle must be 0..{MAX_CONNECTIONS}, got {c.idle_connections}",
        ),
        (
            not c.idle_connections or c.mode == "persistent",
            "--idle only applies to --mode persistent",
        ),
        (1 <= c.size <= MAX_SIZE, f"--size must be 1..{MAX_SIZE} bytes, got {c.size}"),
        (0 < c.duration_s <= 3600, f"--duration must be in (0, 3600] seconds, got {c.duration_s}"),
        (0 <= c.warmup_s <= 600, f"--warmup must be in [0, 600] seconds, got {c.warmup_s}"),
        (0 < c.timeout_s <= 120, f"--timeout must be in (0, 120] seconds, got {c.timeout_s}"),
        (
            1 <= c.workers <= most,
            f"--workers must be 1..{most} (at most one per connection), got {c.workers}",
        ),
        (c.load != "open" or rate_ok, f"open loop needs a positive --rate, got {c.rate}"),
        (c.load == "open" or c.rate is None, "--rate only applies to --load open"),
        (0 <= c.source_addrs <= MAX_SOURCE_ADDRS, f"--source-addrs must be 0..{MAX_SOURCE_ADDRS}"),
    )
    return next((why for ok, why in checks if not ok), None)


def aimed(c: LoadConfig, host: str, port: int) -> LoadConfig:
    """The load aimed at a server, with the source addresses that suit its address."""
    return replace(c, host=host, port=port, source_addrs=default_source_addrs(host))


def argv(
    c: LoadConfig,
    *,
    output: Path | None = None,
    window_fd: int | None = None,
    parent_pid: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """`python -m loadgen ...` for exactly this LoadConfig; the options that are not part of
    the load (where to write, whom to tell the window, whose death ends it) are keywords."""
    host = f"[{c.host}]" if ":" in c.host else c.host
    out = [
        python,
        "-m",
        "loadgen",
        "--target",
        f"{host}:{c.port}",
        "--connections",
        str(c.connections),
        "--mode",
        c.mode,
        "--load",
        c.load,
        "--size",
        str(c.size),
        "--duration",
        f"{c.duration_s!r}",
        "--warmup",
        f"{c.warmup_s!r}",
        "--workers",
        str(c.workers),
        "--source-addrs",
        str(c.source_addrs),
        "--timeout",
        f"{c.timeout_s!r}",
    ]
    if c.rate is not None:
        out += ["--rate", f"{c.rate!r}"]
    if c.cpus is not None:
        out += ["--cpus", ",".join(map(str, c.cpus))]
    if c.idle_connections:
        out += ["--idle", str(c.idle_connections)]
    if c.cluster_hosts:
        out += ["--cluster-hosts", ",".join(c.cluster_hosts)]
    if output is not None:
        out += ["--output", str(output)]
    if window_fd is not None:
        out += ["--window-fd", str(window_fd)]
    if parent_pid is not None:
        out += ["--parent-pid", str(parent_pid)]
    return out
