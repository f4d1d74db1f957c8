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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.cell import (
    CpuPlan,
    Interrupted,
    cell_load,
    cell_result,
    loadgen_limit_s,
    utc_now,
)
from bench.cluster_tasks import (
    CLIENT,
    CONNECT_TIMEOUT_S,
    POLL_S,
    SERVER,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ClusterError,
    ServeOrder,
    ServeOutcome,
    ShardOrder,
    ShardOutcome,
    Worker,
    _dask,
    _take,
    host_of,
    serve,
    shard,
)
from bench.monitor import DEFAULT_INTERVAL_S
from bench.profile import CellSpec
from bench.verdict import Reasons, judge
from records import schema
from records.merge import merge_loads

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

    def describe(
        self, server_cpus: tuple[int, ...] | None, client_cpus: tuple[int, ...] | None
    ) -> list[schema.Host]:
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
    if spec.params.rtt_us is not None:
        return "a link's two namespaces are on one machine"
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
            serve,
            ServeOrder(key, spec, self.cpus.server, self.monitor_interval_s),
            key=f"serve-{key}",
            pure=False,
            workers=[server_w.address],
            resources={SERVER: 1},
            retries=0,
        )
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
                shards, why = self._load(key, spec, host, int(port), rate, go, stop, arrived_q)
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
        self,
        key: str,
        spec: CellSpec,
        host: str,
        port: int,
        rate: float | None,
        go: Any,
        stop: Any,
        arrived_q: Any,
    ) -> tuple[list[ShardOutcome], str | None]:
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
                whole,
                connections=n,
                idle_connections=k,
                workers=max(1, min(self.workers, n)),
                rate=None if rate is None else round(rate * n / active, 3),
                cluster_hosts=hosts,
            )
            order = ShardOrder(key, i, share, self.cpus.client, limit)
            futures.append(
                client.submit(
                    shard,
                    order,
                    key=f"shard-{i}-{key}",
                    pure=False,
                    workers=[w.address],
                    resources={CLIENT: 1},
                    retries=0,
                )
            )
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
                    outcomes[i] = ShardOutcome(
                        i, workers[i].address, workers[i].host, "", 0.0, None, None, why, "cluster"
                    )
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
            outcomes[i] = ShardOutcome(
                i, "", "", "", 0.0, None, None, f"shard {i} did not report in time", "cluster"
            )
        return [outcomes[i] for i in sorted(outcomes)]

    def _judge(
        self,
        params: schema.CellParams,
        reasons: Reasons,
        notes: list[str],
        served: ServeOutcome,
        shards: list[ShardOutcome],
        started: str,
    ) -> schema.CellResult:
        spec = self.spec
        loads = [s.load for s in shards if s.load is not None]
        load = None
        # The cause first: a shard the runner stopped failed because another one did.
        failed = sorted(
            ((s.kind, s.failure) for s in shards if s.failure), key=lambda f: "stopped" in f[1]
        )
        if loads:
            config = replace(
                loads[0].config,
                host=served.host,
                connections=params.measured,
                idle_connections=params.held_idle,
                workers=sum(x.config.workers for x in loads),
                cpus=None,
                rate=params.rate,
            )
            why = (
                None
                if len(loads) == len(shards)
                else (f"{len(shards) - len(loads)} of {len(shards)} shards returned no result")
            )
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
                params,
                load,
                served.report,
                served.monitor,
                reasons,
                notes,
                died_during=served.died_during,
                primed=served.primed,
                server_cpus=served.cpus,
                client_cpus=None,
                monitor_hz=served.monitor_hz,
                pss_max_age_s=served.pss_max_age_s,
            )
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
            spec,
            params,
            reasons,
            load=load,
            run=served.run,
            monitor=served.monitor,
            started=started,
            ended=utc_now(),
            notes=notes,
            cpu=cpu,
            git=self.git,
            cluster=run,
        )
