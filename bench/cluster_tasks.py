"""The worker side of a cluster cell (docs/scale-out.md): what runs on the Dask workers.

`serve` starts the cell's server on the worker that offers `server`, monitors it and stops it;
`shard` runs one `python -m loadgen` shard on a worker that offers `client`. Both talk to the
runner (bench/cluster.py) only through the scheduler's queues and events, and convert times to
the scheduler's clock (`_to_scheduler`), since each host's CLOCK_MONOTONIC is its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.cell import (
    DEADLINE,
    STOPPED,
    end_group,
    prime,
    server_run_from,
    stop_watched,
    supervise,
)
from bench.launch import ServerProcess, ServerStartError, StopReport
from bench.memguard import MemoryGuard
from bench.monitor import Monitor, server_connections
from bench.profile import CellSpec
from bench.verdict import last_line
from records import loadargs, schema

SERVER, CLIENT = "server", "client"
CONNECT_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0  # for the server to be ready, and for every shard to reach the barrier
STOP_TIMEOUT_S = 30.0  # for the server's worker to stop it and send back what it saw
POLL_S = 0.1


class ClusterError(Exception):
    """The cluster cannot run a benchmark (unreachable, or no worker for a role): one line."""


@dataclass(frozen=True, slots=True)
class Worker:
    address: str
    host: str
    roles: tuple[str, ...]


def host_of(address: str) -> str:
    """The host part of a Dask address (tcp://10.0.0.1:40000 -> 10.0.0.1)."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]")


def _dask() -> Any:
    """The `distributed` package, imported only by cluster runs (and typed loosely: it is)."""
    try:
        import distributed  # noqa: PLC0415 - one machine's runs never need Dask
    except ImportError:
        raise ClusterError(
            "--cluster needs the 'distributed' package (pip install distributed)"
        ) from None
    return distributed


def _take(queue: Any) -> Any:
    """The next item of a Dask queue, or raise TimeoutError at once when it is empty (a
    timed-out `get` makes the scheduler log an error per poll)."""
    if queue.qsize() == 0:
        raise TimeoutError
    return queue.get()


def _clock_offset_ns() -> int:
    """The scheduler's clock minus this host's, as the Dask worker running us estimates it."""
    return int(_dask().get_worker().scheduler_delay * 1e9)


def _to_scheduler(mono_ns: int, offset_ns: int) -> int:
    """A CLOCK_MONOTONIC instant of this host as a time on the scheduler's clock (UNIX ns)."""
    return mono_ns + (time.time_ns() - time.monotonic_ns()) + offset_ns


def _from_scheduler(sched_ns: int, offset_ns: int) -> int:
    return sched_ns - offset_ns - (time.time_ns() - time.monotonic_ns())


def _usable(cpus: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """`cpus` if this host has them all, else None (unpinned there, and said so)."""
    if cpus is None or not set(cpus) <= os.sched_getaffinity(0):
        return None
    return cpus


# --------------------------------------------------------------------------- server worker


@dataclass(frozen=True, slots=True)
class ServeOrder:
    key: str  # names this cell's queues and events
    spec: CellSpec
    cpus: tuple[int, ...] | None
    monitor_interval_s: float


@dataclass(frozen=True, slots=True)
class ServeOutcome:
    worker: str
    host: str
    hostname: str
    clock_offset_s: float
    cpus: tuple[int, ...] | None  # as pinned on that host (None: it lacked the planned CPUs)
    start_failure: str | None
    run: schema.ServerRun
    report: StopReport | None
    monitor: schema.MonitorData | None
    monitor_hz: float
    pss_max_age_s: float | None
    primed: int
    died_during: int | None
    memory_stop: str | None
    window_ns: tuple[int, int]  # the window the monitor sampled, on this host's clock


def serve(order: ServeOrder) -> ServeOutcome:
    """A Dask task on the server's worker: start the server on this host's address, monitor it,
    prime it, publish its address, sample the first shard's window, stop it when told."""
    d = _dask()
    worker = d.get_worker()
    host, offset_ns = host_of(worker.address), _clock_offset_ns()
    spec = order.spec
    stop, target = d.Event(f"{order.key}/stop"), d.Queue(f"{order.key}/target")
    windows = d.Queue(f"{order.key}/window")
    cpus = _usable(order.cpus)
    base = {
        "worker": worker.address,
        "host": host,
        "hostname": socket.gethostname(),
        "clock_offset_s": offset_ns / 1e9,
        "cpus": cpus,
    }
    try:
        server = ServerProcess.start(
            spec.server, spec.server_args, cpus=cpus, nofile=spec.nofile, host=host
        )
    except ServerStartError as exc:
        run = server_run_from(
            None, spec.server, [spec.server, *spec.server_args], None, exc.stderr_tail
        )
        target.put(None)
        return ServeOutcome(
            **base,
            start_failure=f"server did not start: {exc}{last_line(exc.stderr_tail)}",
            run=run,
            report=None,
            monitor=None,
            monitor_hz=0.0,
            pss_max_age_s=None,
            primed=0,
            died_during=None,
            memory_stop=None,
            window_ns=(0, 0),
        )
    others = tuple(sorted(os.sched_getaffinity(0) - set(cpus or ())))
    monitor = Monitor(
        server.pgid,
        order.monitor_interval_s,
        cpus=others or None,  # off the server's CPUs, as on one machine
        close_wait_port=server.port if spec.close_wait else None,
    )
    window_r, window_w = os.pipe()
    monitor.watch_window(window_r)
    monitor.start()
    guard = MemoryGuard.of(spec.memory_cap_mb, spec.mem_available_floor)
    primed, window, memory_stop, died = 0, (0, 0), None, None
    try:
        with contextlib.suppress(OSError):
            primed = prime(server.host, server.port, spec.params.size)
        target.put([server.host, server.port, primed])
        while not stop.wait(POLL_S / 2):
            if window == (0, 0):
                with contextlib.suppress(TimeoutError):
                    t0, t1 = _take(windows)
                    window = (_from_scheduler(t0, offset_ns), _from_scheduler(t1, offset_ns))
                    with contextlib.suppress(OSError):
                        os.write(window_w, f"{window[0]} {window[1]}\n".encode())
            why = guard.check(monitor.latest())
            if why is not None and memory_stop is None:
                memory_stop = (
                    f"stopped at {server_connections(server.port)} connections: memory ({why})"
                )
                stop.set()
        if not server.alive():
            died = server.popen.returncode
    finally:
        monitor_data, report = stop_watched(server, monitor, window_w)
    return ServeOutcome(
        **base,
        start_failure=None,
        run=server_run_from(server, spec.server, server.argv, report),
        report=report,
        monitor=monitor_data,
        monitor_hz=monitor.achieved_hz(),
        pss_max_age_s=monitor.pss.max_age_s if monitor.pss.partial_samples else None,
        primed=primed,
        died_during=died,
        memory_stop=memory_stop,
        window_ns=window,
    )


# --------------------------------------------------------------------------- client workers


@dataclass(frozen=True, slots=True)
class ShardOrder:
    key: str
    index: int
    # This shard's whole load, aimed at the server: its share of the connections and of an open
    # loop's rate, its worker processes, the hosts the cluster names. Only its CPUs are chosen on
    # its host, from `cpus`.
    config: schema.LoadConfig
    cpus: tuple[int, ...] | None
    limit_s: float


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    index: int
    worker: str
    host: str
    hostname: str
    clock_offset_s: float
    window_start_ns: int | None  # on the scheduler's clock
    load: schema.LoadResult | None
    failure: str | None
    kind: schema.FailureKind = "load"  # "cluster": its worker failed, not its load generator


def shard(order: ShardOrder) -> ShardOutcome:
    """A Dask task on a client worker: reach the barrier, run this shard's load generator to
    its end (or until `stop`), hand back its whole result."""
    d = _dask()
    worker = d.get_worker()
    offset_ns = _clock_offset_ns()
    go, stop = d.Event(f"{order.key}/go"), d.Event(f"{order.key}/stop")
    d.Queue(f"{order.key}/arrived").put(order.index)
    window_start: list[int] = []

    def outcome(load: schema.LoadResult | None, failure: str | None) -> ShardOutcome:
        return ShardOutcome(
            order.index,
            worker.address,
            host_of(worker.address),
            socket.gethostname(),
            offset_ns / 1e9,
            window_start[0] if window_start else None,
            load,
            failure,
        )

    deadline = time.monotonic() + START_TIMEOUT_S
    while not go.wait(POLL_S):
        if stop.is_set() or time.monotonic() > deadline:
            return outcome(None, "stopped before the barrier opened")
    workdir = Path(tempfile.mkdtemp(prefix="echobench-shard-"))
    out = workdir / "load.json"
    window_r, window_w = os.pipe()
    argv = loadargs.argv(
        replace(order.config, cpus=_usable(order.cpus)),
        output=out,
        window_fd=window_w,
        parent_pid=os.getpid(),
        python=sys.executable,  # this host's interpreter
    )

    def forward_window() -> None:
        # "T0 T_END" on this host's clock, ~0.1 s before the window opens: to the scheduler's
        # clock, and (shard 0) on to the server's monitor.
        with os.fdopen(window_r, "rb") as f:
            line = f.readline().split()
        if len(line) == 2:
            t0, t1 = (_to_scheduler(int(x), offset_ns) for x in line)
            window_start.append(t0)
            if order.index == 0:
                d.Queue(f"{order.key}/window").put([t0, t1])

    reader = threading.Thread(target=forward_window, daemon=True)
    reader.start()
    failure: str | None = None
    err = workdir / "stderr"
    try:
        with open(err, "wb") as errf:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=errf,
                stderr=errf,
                start_new_session=True,
                pass_fds=(window_w,),
            )
        os.close(window_w)
        try:
            ended = supervise(popen, order.limit_s, stop, poll_s=POLL_S)
            code = ended.code
            if ended.why == STOPPED:
                failure = "stopped by the runner"
            elif ended.why == DEADLINE:
                failure = f"load generator still running after {order.limit_s:.0f} s"
        finally:
            end_group(popen)
        reader.join(timeout=1.0)
        tail = err.read_text(errors="replace").splitlines()[-10:]
        load = None
        with contextlib.suppress(schema.SchemaError):
            load = schema.read_load(out)
        if failure is None and load is None:
            failure = f"load generator exited with code {code}, no result{last_line(tail)}"
        elif failure is None and load is not None and not load.complete:
            failure = f"load incomplete (exit {code}): {load.failure or 'no reason given'}"
        return outcome(load, failure)
    finally:
        for path in (out, err):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()
