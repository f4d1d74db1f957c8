"""Load from other hosts: one cell across a Dask cluster (issue 14; docs/scale-out.md).

When one machine cannot load a server without becoming the bottleneck itself, the load comes
from others, as in every large benchmark. `make bench CLUSTER=tcp://SCHEDULER:8786` runs each
cell's server on a Dask worker that offers the `server` resource and the load generator on the
workers that offer `client`, one shard per client worker:

    runner (this module)           server worker               client workers (1 per shard)
    submit serve ---------------> start server, monitor
           <------ target queue -- host:port (after the primer)
    submit shards -------------------------------------------> arrive (queue), wait on `go`
    all arrived: set `go` ------------------------------------> python -m loadgen ... (pinned)
                                   window queue <------------- shard 0's window (scheduler clock)
                                   monitor samples the edges
           <---------------------------------------------------- each shard's LoadResult
    set `stop` -----------------> stop monitor, then server
           <------ ServeOutcome -- ServerRun, monitor samples, StopReport

Every shard is a whole `python -m loadgen` run, pinned to its host's client CPUs (the worker's
own event loop, heartbeat and profiler never share them) and started with --parent-pid, so it
never outlives its worker. Its result comes back whole, histograms encoded; the runner merges
them exactly (records/merge.py) and judges the cell by the same rules as a local one
(bench/verdict.py). Tasks are submitted with `pure=False` and a key per cell and shard, so
identical shards never collapse into one task.

Clocks: each host's CLOCK_MONOTONIC is its own. A window crosses hosts on the scheduler's clock
(wall clock plus Dask's estimate of each worker's offset from the scheduler, `scheduler_delay`),
and every cell records each host's offset and how far apart the shards' windows opened.

The rule "load stays local" becomes "loopback, or a host the cluster names": the server binds
its worker's address, and the load generator refuses any target outside the cluster's hosts.
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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.cell import (
    CpuPlan,
    Interrupted,
    cell_load,
    cell_result,
    end_group,
    loadgen_limit_s,
    prime,
    server_run_from,
    stop_watched,
    utc_now,
)
from bench.memguard import MemoryGuard
from bench.monitor import DEFAULT_INTERVAL_S, Monitor, server_connections
from bench.profile import CellSpec
from bench.verdict import Reasons, judge, last_line
from records import loadargs, schema
from records.merge import merge_loads
from servers.launch import ServerProcess, ServerStartError, StopReport

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
        "worker": worker.address, "host": host, "hostname": socket.gethostname(),
        "clock_offset_s": offset_ns / 1e9, "cpus": cpus,
    }  # fmt: skip
    try:
        server = ServerProcess.start(
            spec.server, spec.server_args, cpus=cpus, nofile=spec.nofile, host=host
        )
    except ServerStartError as exc:
        run = server_run_from(None, spec.server, [spec.server, *spec.server_args], None,
                              exc.stderr_tail)  # fmt: skip
        target.put(None)
        return ServeOutcome(
            **base, start_failure=f"server did not start: {exc}{last_line(exc.stderr_tail)}",
            run=run, report=None, monitor=None, monitor_hz=0.0, pss_max_age_s=None, primed=0,
            died_during=None, memory_stop=None, window_ns=(0, 0),
        )  # fmt: skip
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
                memory_stop = f"stopped at {server_connections(server.port)} connections: " \
                              f"memory ({why})"  # fmt: skip
                stop.set()
        if not server.alive():
            died = server.popen.returncode
    finally:
        monitor_data, report = stop_watched(server, monitor, window_w)
    return ServeOutcome(
        **base, start_failure=None, run=server_run_from(server, spec.server, server.argv, report),
        report=report, monitor=monitor_data, monitor_hz=monitor.achieved_hz(),
        pss_max_age_s=monitor.pss.max_age_s if monitor.pss.partial_samples else None,
        primed=primed, died_during=died, memory_stop=memory_stop, window_ns=window,
    )  # fmt: skip


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
            order.index, worker.address, host_of(worker.address), socket.gethostname(),
            offset_ns / 1e9, window_start[0] if window_start else None, load, failure,
        )  # fmt: skip

    deadline = time.monotonic() + START_TIMEOUT_S
    while not go.wait(POLL_S):
        if stop.is_set() or time.monotonic() > deadline:
            return outcome(None, "stopped before the barrier opened")
    workdir = Path(tempfile.mkdtemp(prefix="echobench-shard-"))
    out = workdir / "load.json"
    window_r, window_w = os.pipe()
    argv = loadargs.argv(
        replace(order.config, cpus=_usable(order.cpus)), output=out, window_fd=window_w,
        parent_pid=os.getpid(), python=sys.executable,  # this host's interpreter
    )  # fmt: skip

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
                argv, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                start_new_session=True, pass_fds=(window_w,),
            )  # fmt: skip
        os.close(window_w)
        try:
            deadline = time.monotonic() + order.limit_s
            while True:
                try:
                    code = popen.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if stop.is_set():
                        failure = "stopped by the runner"
                        break
                    if time.monotonic() > deadline:
                        failure = f"load generator still running after {order.limit_s:.0f} s"
                        break
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


# --------------------------------------------------------------------------- the runner's side


class Cluster:
    """A connection to a Dask scheduler and the workers it has for each role."""

    def __init__(self, address: str, client: Any, workers: list[Worker]) -> None:
        self.address = address
        self.client = client
        self.workers = workers
        self.server = next(w for w in workers if SERVER in w.roles)
        self.clients = [w for w in workers if CLIENT in w.roles and w is not self.server]
        if not self.clients:  # one worker may offer both (a single-host cluster)
            self.clients = [w for w in workers if CLIENT in w.roles]

    @classmethod
    def connect(cls, address: str) -> Cluster:
        d = _dask()
        try:
            client = d.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        info = client.scheduler_info(n_workers=-1)["workers"]
        workers = sorted(
            (
                Worker(
                    addr,
                    host_of(addr),
                    tuple(r for r in (SERVER, CLIENT) if w.get("resources", {}).get(r, 0) > 0),
                )
                for addr, w in info.items()
            ),
            key=lambda w: w.address,
        )
        missing = [r for r in (SERVER, CLIENT) if not any(r in w.roles for w in workers)]
        if missing:
            client.close()
            raise ClusterError(
                f"the cluster at {address} has no worker offering {' or '.join(missing)} "
                f"(start workers with --resources {missing[0]}=1; see docs/scale-out.md)"
            )
        return cls(address, client, workers)

    def close(self) -> None:
        self.client.close()

    def alive(self) -> set[str]:
        """The workers the scheduler has now. A killed worker's task is never re-run here: it
        was placed on that worker's address, and a restarted worker has another."""
        return set(self.client.scheduler_info(n_workers=-1)["workers"])

    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted({w.host for w in self.workers}))

    def describe(self, server_cpus: tuple[int, ...] | None,
                 client_cpus: tuple[int, ...] | None) -> list[schema.Host]:  # fmt: skip
        """Each worker's host: its roles, clock offset and environment (for the manifest)."""

        def facts(dask_worker: Any) -> dict[str, Any]:
            from bench import environment  # noqa: PLC0415 - runs on each worker

            return {
                "offset": float(dask_worker.scheduler_delay),
                "environment": environment.collect(server_cpus, client_cpus, "cluster"),
            }

        got = self.client.run(facts)
        return [
            schema.Host(
                worker=w.address,
                host=w.host,
                hostname=str(got[w.address]["environment"].get("hostname", "")),
                roles=list(w.roles),
                clock_offset_s=got[w.address]["offset"],
                environment=got[w.address]["environment"],
            )
            for w in self.workers
            if w.address in got
        ]


def unsupported(spec: CellSpec) -> str | None:
    """Why a cell cannot run across hosts (None: it can)."""
    if spec.placement != "split":
        return f"placement {spec.placement!r} means one machine's CPUs"
    if spec.xray:
        return "the X-ray file lives on the server's host"
    if spec.server_cpus is not None:
        return "the cores sweep pins both ends on one machine"
    return None


def split_counts(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal shares (the first ones one larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ClusterCellRun:
    """Runs one CellSpec across the cluster; the same verdict as bench.cell.CellRun."""

    def __init__(
        self,
        spec: CellSpec,
        cluster: Cluster,
        cpus: CpuPlan,
        workers: int,
        stop: threading.Event | None = None,
        git: schema.GitStamp | None = None,
        monitor_interval_s: float | None = None,
        on_pids: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.spec = spec
        self.cluster = cluster
        self.cpus = cpus
        self.workers = workers
        self.stop = stop or threading.Event()
        self.git = git
        self.monitor_interval_s = monitor_interval_s or DEFAULT_INTERVAL_S
        self.on_pids = on_pids or (lambda _info: None)

    def run(self, rate: float | None = None) -> schema.CellResult:
        d = _dask()
        spec, client = self.spec, self.cluster.client
        started = utc_now()
        params = spec.params if rate is None else replace(spec.params, rate=round(rate, 3))
        key = f"{spec.cell_id}/{uuid.uuid4().hex[:12]}"
        stop = d.Event(f"{key}/stop", client=client)
        go = d.Event(f"{key}/go", client=client)
        target_q = d.Queue(f"{key}/target", client=client)
        arrived_q = d.Queue(f"{key}/arrived", client=client)
        server_w = self.cluster.server
        serve_f = client.submit(
            serve, ServeOrder(key, spec, self.cpus.server, self.monitor_interval_s),
            key=f"serve-{key}", pure=False, workers=[server_w.address],
            resources={SERVER: 1}, retries=0,
        )  # fmt: skip
        reasons = Reasons()
        notes: list[str] = []  # where it ran is in the cell's `cluster`, not repeated here
        shards: list[ShardOutcome] = []
        served: ServeOutcome | None = None
        try:
            got = self._wait(lambda: _take(target_q), serve_f, START_TIMEOUT_S)
            if got is None:
                served = self._served(serve_f, stop)
                why = served.start_failure if served else None
                if why:
                    reasons.add("server-start", why)
                else:
                    reasons.add("cluster", "the server's worker gave no address")
            else:
                host, port, _ = got
                shards, why = self._load(key, spec, host, int(port), rate, go, stop,
                                         arrived_q)  # fmt: skip
                if why:
                    reasons.add("cluster", why)
        finally:
            stop.set()
            if served is None:
                served = self._served(serve_f, stop)
            with contextlib.suppress(Exception):
                for q in (target_q, arrived_q):
                    q.close()
        if served is None:
            reasons.first("cluster", "the server's worker did not report back (killed or hung)")
            return cell_result(
                spec, params, reasons, started=started, ended=utc_now(), notes=notes, git=self.git
            )
        return self._judge(params, reasons, notes, served, shards, started)

    def _wait(self, poll: Callable[[], Any], future: Any, limit_s: float) -> Any:
        """`poll()`'s first answer (it raises TimeoutError while there is none), or None when
        `future` ended first or `limit_s` passed. Honours the runner's stop."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.stop.is_set():
                raise Interrupted
            with contextlib.suppress(TimeoutError):
                return poll()
            if future is not None and future.done():
                return None
            time.sleep(POLL_S)
        return None

    def _served(self, serve_f: Any, stop: Any) -> ServeOutcome | None:
        stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not serve_f.done() and time.monotonic() < deadline:
            if self.cluster.server.address not in self.cluster.alive():
                break
            time.sleep(POLL_S)
        if serve_f.status != "finished":  # a killed worker, a hang: no outcome either way
            serve_f.cancel()
            return None
        out: ServeOutcome = serve_f.result()
        return out

    def _load(
        self, key: str, spec: CellSpec, host: str, port: int, rate: float | None, go: Any,
        stop: Any, arrived_q: Any,
    ) -> tuple[list[ShardOutcome], str | None]:  # fmt: skip
        """Run every shard to its end; (their outcomes, why the load failed or None)."""
        client, hosts = self.cluster.client, self.cluster.hosts()
        whole = cell_load(spec, host, port, None, self.workers, rate)
        active, idle = whole.connections, whole.idle_connections
        clients = self.cluster.clients[:active]
        actives, idles = split_counts(active, len(clients)), split_counts(idle, len(clients))
        limit = loadgen_limit_s(whole)
        futures = []
        for i, (w, n, k) in enumerate(zip(clients, actives, idles, strict=True)):
            share = replace(
                whole, connections=n, idle_connections=k, workers=max(1, min(self.workers, n)),
                rate=None if rate is None else round(rate * n / active, 3), cluster_hosts=hosts,
            )  # fmt: skip
            order = ShardOrder(key, i, share, self.cpus.client, limit)
            futures.append(
                client.submit(shard, order, key=f"shard-{i}-{key}", pure=False,
                              workers=[w.address], resources={CLIENT: 1}, retries=0)
            )  # fmt: skip
        # The barrier: every shard is on its host and waiting before any of them starts.
        seen = 0
        deadline = time.monotonic() + START_TIMEOUT_S
        while seen < len(futures) and time.monotonic() < deadline:
            if self.stop.is_set():
                stop.set()
                raise Interrupted
            with contextlib.suppress(TimeoutError):
                _take(arrived_q)
                seen += 1
                continue
            time.sleep(POLL_S)
            if any(f.status == "error" for f in futures):
                break
        if seen < len(futures):
            stop.set()
            why = f"only {seen} of {len(futures)} shards reached the barrier in time"
            return self._collect(futures, clients, stop, limit), why
        go.set()
        return self._collect(futures, clients, stop, limit), None

    def _collect(
        self, futures: list[Any], workers: list[Worker], stop: Any, limit_s: float
    ) -> list[ShardOutcome]:
        """Every shard's outcome; a shard whose worker died is a failed shard, and it stops
        the others at once rather than letting them run on against a cell that has failed."""
        deadline = time.monotonic() + limit_s + STOP_TIMEOUT_S
        outcomes: dict[int, ShardOutcome] = {}
        pending = dict(enumerate(futures))
        polls = 0
        while pending and time.monotonic() < deadline:
            if self.stop.is_set():
                stop.set()
                raise Interrupted
            polls += 1
            alive = self.cluster.alive() if polls % 5 == 0 else None
            for i, f in list(pending.items()):
                if alive is not None and workers[i].address not in alive and not f.done():
                    why = f"shard {i}'s worker {workers[i].address} left the cluster mid-cell"
                    outcomes[i] = ShardOutcome(i, workers[i].address, workers[i].host, "", 0.0,
                                               None, None, why, "cluster")  # fmt: skip
                    f.cancel()
                    del pending[i]
                    stop.set()
                    continue
                if f.status == "finished":
                    outcomes[i] = f.result()
                    del pending[i]
                elif f.status in ("error", "cancelled"):
                    exc = f.exception() if f.status == "error" else "cancelled"
                    why = f"shard {i} failed: {type(exc).__name__}: {exc}"
                    outcomes[i] = ShardOutcome(i, "", "", "", 0.0, None, None, why, "cluster")
                    del pending[i]
                    stop.set()
            time.sleep(POLL_S)
        for i, f in pending.items():
            f.cancel()
            outcomes[i] = ShardOutcome(i, "", "", "", 0.0, None, None,
                                       f"shard {i} did not report in time", "cluster")  # fmt: skip
        return [outcomes[i] for i in sorted(outcomes)]

    def _judge(
        self, params: schema.CellParams, reasons: Reasons, notes: list[str], served: ServeOutcome,
        shards: list[ShardOutcome], started: str,
    ) -> schema.CellResult:  # fmt: skip
        spec = self.spec
        loads = [s.load for s in shards if s.load is not None]
        load = None
        # The cause first: a shard the runner stopped failed because another one did.
        failed = sorted(((s.kind, s.failure) for s in shards if s.failure),
                        key=lambda f: "stopped" in f[1])  # fmt: skip
        if loads:
            config = replace(
                loads[0].config, host=served.host, connections=params.measured,
                idle_connections=params.held_idle,
                workers=sum(x.config.workers for x in loads), cpus=None, rate=params.rate,
            )  # fmt: skip
            why = None if len(loads) == len(shards) else (
                f"{len(shards) - len(loads)} of {len(shards)} shards returned no result"
            )  # fmt: skip
            load = merge_loads(
                loads, config, served.window_ns, why or (failed[0][1] if failed else None)
            )
        if failed and not reasons:
            reasons.add(*failed[0])
        if served.memory_stop:
            reasons.first("memory", served.memory_stop)
        if served.start_failure:
            reasons.first("server-start", served.start_failure)
        if served.cpus is None and self.cpus.server is not None:
            notes.append(f"server unpinned: its host lacks CPUs {list(self.cpus.server)}")
        cpu = None
        if served.report is not None:
            cpu = judge(
                params, load, served.report, served.monitor, reasons, notes,
                died_during=served.died_during, primed=served.primed, server_cpus=served.cpus,
                client_cpus=None, monitor_hz=served.monitor_hz,
                pss_max_age_s=served.pss_max_age_s,
            )  # fmt: skip
        starts = [s.window_start_ns for s in shards if s.window_start_ns is not None]
        skew = (max(starts) - min(starts)) / 1e9 if len(starts) > 1 else None
        if skew is not None and skew > 0.05 * params.duration_s:
            notes.append(
                f"the shards' windows opened {skew:.3f} s apart (over 5% of the window): the "
                f"merged rate counts their overlap and their edges"
            )
        run = schema.ClusterRun(
            scheduler=self.cluster.address,
            server_worker=served.worker,
            server_host=served.host,
            server_hostname=served.hostname,
            server_clock_offset_s=served.clock_offset_s,
            shards=[
                schema.Shard(
                    index=s.index,
                    worker=s.worker,
                    host=s.host,
                    hostname=s.hostname,
                    connections=s.load.config.connections if s.load else 0,
                    clock_offset_s=s.clock_offset_s,
                    window_start_s=s.window_start_ns / 1e9 if s.window_start_ns else None,
                    requests=s.load.requests if s.load else 0,
                    requests_per_s=s.load.requests_per_s if s.load else 0.0,
                    client_saturated=bool(s.load and s.load.client_saturated),
                    failure=s.failure,
                )
                for s in shards
            ],
            start_skew_s=round(skew, 6) if skew is not None else None,
        )
        return cell_result(
            spec, params, reasons, load=load, run=served.run, monitor=served.monitor,
            started=started, ended=utc_now(), notes=notes, cpu=cpu, git=self.git, cluster=run,
        )  # fmt: skip
