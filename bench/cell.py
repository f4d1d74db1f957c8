"""Run one cell: a fresh server, a warm-up connection, the load generator, the monitor, the verdict.

One cell is one server process under one load for one trial. Every cell gets a fresh server
(never reused: a server's first connections can run at a fraction of its later speed, measured on
these VMs), started through `bench.launch` pinned to the server's
CPUs, and a load generator run as its own process group pinned to the client's CPUs. While the
load runs, `bench.monitor` samples the server's process tree.

Before the load, one primer connection echoes one message and closes: a server's first full-size
read can cost an mmap per read until a buffer is freed (glibc's mmap threshold, the asyncio trap),
and one closed connection is what removes that effect. Its bytes are echoed by the server too, so
the shared-counter check expects them (issue 5).

The verdict (bench/verdict.py, shared with the cluster cells of bench/cluster.py): a cell fails
when the server did not start, died or hung, when the load generator did not finish or did not
get a complete run, when an echo came back wrong, or when a shared counter that must be exact
(everything but "naive") disagrees with the bytes the client got back. Overload is a result,
not a failure: timeouts and resets under load are kept as notes beside the figures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cgroup import CpuGroup
from bench.launch import ServerProcess, ServerStartError, StopReport
from bench.link import ADDR_B, CALIBRATED, CALIBRATION_ROUNDS, Link
from bench.memguard import MemoryGuard
from bench.monitor import DEFAULT_INTERVAL_S, Monitor, server_connections
from bench.profile import CellSpec
from bench.verdict import Reasons, judge, last_line
from records import loadargs, schema
from records import xray as records_xray
from records.limits import open_deadline_s
from records.loadargs import LOOPBACK

# Beyond warm-up + duration + per-request timeout, the load generator gets this long to connect,
# finish and write its result before it is considered hung (1000 connections to a forking server
# take about a second to establish on this machine).
LOADGEN_SLACK_S = 30.0
PRIMER_TIMEOUT_S = 5.0
# SIGTERM to the end of the server's tree: 2 s, and 5 ms more per process it holds (measured
# here: the Python fork server ends ~1,000 children a second), at most 2 minutes.
STOP_GRACE_S = 2.0
STOP_GRACE_PER_PROCESS_S = 0.005
STOP_GRACE_MAX_S = 120.0
STDERR_TAIL = 10


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Where the server and the load generator run (None: unpinned)."""

    server: tuple[int, ...] | None
    client: tuple[int, ...] | None

    def for_placement(self, placement: str) -> tuple[tuple[int, ...] | None, ...]:
        if placement == "unpinned" or self.server is None:
            return None, None
        if placement == "shared":
            # Both ends on the server's first CPU: a round trip needs no cross-CPU wake-up.
            return self.server[:1], self.server[:1]
        return self.server, self.client

    def pool(self) -> tuple[int, ...]:
        return tuple(sorted({*(self.server or ()), *(self.client or ())}))

    def fits(self, server_cpus: int) -> bool:
        """Whether the server can have `server_cpus` CPUs with at least as many left for the
        load generator (at these rates it needs about as much CPU as the server)."""
        return self.server is not None and len(self.pool()) - server_cpus >= server_cpus

    def for_cell(
        self, placement: str, server_cpus: int | None
    ) -> tuple[tuple[int, ...] | None, ...]:
        """The cores sweep's cells take the first `server_cpus` CPUs of the plan for the server
        and the rest for the load generator; every other cell keeps the plan's placement."""
        if server_cpus is None or self.server is None:
            return self.for_placement(placement)
        pool = self.pool()
        return pool[:server_cpus], pool[server_cpus:]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tail(path: Path, n: int = STDERR_TAIL) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def end_group(popen: subprocess.Popen[bytes], grace_s: float = 2.0) -> None:
    """End a process group we started (by its id), politely first, then for certain."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace_s)
    # Whatever the leader left in its group goes too (workers of a multi-process client).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)


STOPPED, DEADLINE = "stopped", "deadline"


@dataclass(frozen=True, slots=True)
class Supervised:
    """How a supervised process ended: its exit status, or why it was not waited for."""

    code: int | None  # None: still running when supervision ended (see `why`)
    why: str | None = None  # STOPPED (the runner's stop), DEADLINE, or what `watch` said


def supervise(
    popen: subprocess.Popen[bytes],
    limit_s: float,
    stop: threading.Event,
    poll_s: float = 0.1,
    watch: Callable[[], str | None] | None = None,
) -> Supervised:
    """Wait for a process we started, a poll at a time: the one loop behind a cell's load
    generator, a cluster shard and the runner's helper steps (issue 22). Ends early when `stop`
    is set, at `limit_s`, or when `watch` returns a reason; ending the process group is the
    caller's (`end_group`, in its `finally`)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            return Supervised(popen.wait(timeout=poll_s))
        except subprocess.TimeoutExpired:
            if stop.is_set():
                return Supervised(None, STOPPED)
            if time.monotonic() > deadline:
                return Supervised(None, DEADLINE)
            if watch is not None and (why := watch()) is not None:
                return Supervised(None, why)


def prime(host: str, port: int, size: int) -> int:
    """Echo one message of `size` bytes on a connection that then closes; return bytes echoed."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    with socket.create_connection((host, port), timeout=PRIMER_TIMEOUT_S) as sock:
        sock.sendall(payload)
        got = 0
        while got < size:
            chunk = sock.recv(min(65536, size - got))
            if not chunk:
                raise ConnectionError(f"server closed after echoing {got} of {size} bytes")
            got += len(chunk)
    return got


def cell_load(
    spec: CellSpec,
    host: str,
    port: int,
    client_cpus: tuple[int, ...] | None,
    workers: int,
    rate: float | None,
) -> schema.LoadConfig:
    """The cell's LoadConfig (built with its profile) aimed at its server, with what only the
    run knows: the client's CPUs, its worker processes (at most one per measured connection) and
    an open loop's rate, measured from the closed-loop cell it scales."""
    return replace(
        loadargs.aimed(spec.load, host, port),
        workers=min(workers, spec.load.connections),
        cpus=client_cpus,
        rate=None if rate is None else round(rate, 3),
    )


def loadgen_limit_s(config: schema.LoadConfig) -> float:
    """How long a load generator run of this load may take before it counts as hung."""
    c = config
    limit = c.warmup_s + c.duration_s + c.timeout_s + LOADGEN_SLACK_S
    if c.idle_connections:  # opened before the measured phase, echoed once after it
        limit += open_deadline_s(c.idle_connections, c.timeout_s) + c.timeout_s
    return limit


def server_run_from(
    server: ServerProcess | None,
    name: str,
    argv: list[str],
    report: StopReport | None,
    stderr_tail: list[str] | None = None,
) -> schema.ServerRun:
    return schema.ServerRun(
        name=name,
        argv=argv,
        cpus=server.cpus if server else None,
        pid=server.pid if server else None,
        ready_s=round(server.ready_s, 6) if server else None,
        exit_code=report.exit_code if report else None,
        clean_exit=report.clean_exit if report else False,
        leftovers=list(report.leftovers) if report else [],
        stderr_tail=list(report.stderr_tail) if report else list(stderr_tail or []),
        stats=dict(report.stats) if report and report.stats is not None else None,
        stop_s=report.stop_s if report else None,
        stop_grace_s=report.grace_s if report else None,
    )


def failed_cell(
    spec: CellSpec, reason: str, started_at: str = "", git: schema.GitStamp | None = None
) -> schema.CellResult:
    """A cell that was not run (its open-loop reference failed, or the server already stopped
    below it)."""
    now = utc_now()
    why = Reasons()
    why.add("not-run", reason)
    return cell_result(spec, spec.params, why, started=started_at or now, ended=now, git=git)


def cell_result(
    spec: CellSpec,
    params: schema.CellParams,
    reasons: Reasons,
    *,
    load: schema.LoadResult | None = None,
    run: schema.ServerRun | None = None,
    monitor: schema.MonitorData | None = None,
    started: str,
    ended: str,
    notes: list[str] | None = None,
    cpu: schema.CpuAccount | None = None,
    git: schema.GitStamp | None = None,
    xray: schema.Xray | None = None,
    cluster: schema.ClusterRun | None = None,
    link: schema.LinkRun | None = None,
) -> schema.CellResult:
    """The one place a cell's identity (from its spec) meets what happened to it."""
    return schema.CellResult(
        cell_id=spec.cell_id,
        scenario=spec.scenario,
        server=spec.server,
        trial=spec.trial,
        placement=spec.placement,
        params=params,
        status=reasons.status,
        reason=reasons.reason,
        load=load,
        server_run=run,
        monitor=monitor,
        started_at=started,
        ended_at=ended,
        notes=[*(notes or []), *reasons.rest],
        cpu=cpu,
        git=git,
        xray=xray,
        cluster=cluster,
        failure_kind=reasons.kind,
        server_args=list(spec.server_args),
        link=link,
    )


def stop_grace_s(processes: int) -> float:
    """How long a server may take to end its tree after SIGTERM: the base grace, plus time per
    process it must end (a fork server holding 10,000 children needs tens of seconds)."""
    return min(STOP_GRACE_MAX_S, STOP_GRACE_S + STOP_GRACE_PER_PROCESS_S * max(0, processes - 1))


def stop_watched(
    server: ServerProcess, monitor: Monitor, window_w: int
) -> tuple[schema.MonitorData, StopReport]:
    """End a cell's server and its monitor, even on Ctrl-C: the window pipe closed, then the
    monitor (it needs the leader alive), then the server, given a grace that grows with the
    tree it must end."""
    with contextlib.suppress(OSError):
        os.close(window_w)
    try:
        monitor_data = monitor.stop()
    finally:
        most = max((x.processes for x in monitor.data().samples), default=1)
        report = server.stop(grace_s=stop_grace_s(most))
    return monitor_data, report


class Interrupted(Exception):
    """The runner was asked to stop (SIGINT/SIGTERM); the cell in progress is abandoned."""


class CellRun:
    """Runs one CellSpec; `on_pids` reports (server pid, loadgen pid) as they appear.

    `stop` is set by the runner's signal handler; the long waits here poll it, so an interrupt
    ends the load generator and the server from ordinary code, never from inside a handler.
    """

    def __init__(
        self,
        spec: CellSpec,
        run_dir: Path,
        cpus: CpuPlan,
        workers: int,
        on_pids: Callable[[dict[str, Any]], None] | None = None,
        monitor_interval_s: float | None = None,
        stop: threading.Event | None = None,
        git: schema.GitStamp | None = None,
        link: Link | None = None,
    ) -> None:
        self.git = git
        # issue 23: a cell with a round trip runs its server in the link's namespace B and its
        # load generator in A (bench/link.py); None, or a loopback cell, runs as always
        self.link = link if spec.params.rtt_us is not None else None
        self.stop = stop or threading.Event()
        self.spec = spec
        self.run_dir = run_dir
        self.cpus = cpus
        self.workers = workers
        self.on_pids = on_pids or (lambda _info: None)
        self.monitor_interval_s = monitor_interval_s

    def run(self, rate: float | None = None) -> schema.CellResult:
        spec = self.spec
        started = utc_now()
        server_cpus, client_cpus = self.cpus.for_cell(spec.placement, spec.server_cpus)
        params = spec.params if rate is None else replace(spec.params, rate=round(rate, 3))
        notes: list[str] = []
        if spec.placement == "unpinned":
            notes.append("unpinned: server and load generator share the CPUs with anything else")

        xray_path = self.run_dir / f".{spec.cell_id}.xray" if spec.xray else None
        args = [*spec.server_args, "--xray", str(xray_path)] if xray_path else spec.server_args
        # The server's tree in a cpuacct group of its own: its CPU, counted by the kernel, apart
        # from anything else on its CPUs (bench/cgroup.py). None where the machine allows none.
        group, no_group = CpuGroup.create()
        if no_group:
            notes.append(f"server CPU from /proc/stat, foreign CPU not measured: {no_group}")
        try:
            return self._run_in(
                spec, params, args, server_cpus, client_cpus, group, xray_path, started, notes, rate
            )
        finally:
            if group is not None:
                group.remove()

    def _run_in(
        self,
        spec: CellSpec,
        params: schema.CellParams,
        args: Sequence[str],
        server_cpus: tuple[int, ...] | None,
        client_cpus: tuple[int, ...] | None,
        group: CpuGroup | None,
        xray_path: Path | None,
        started: str,
        notes: list[str],
        rate: float | None,
    ) -> schema.CellResult:
        link = self.link
        wrap = group.wrap if group is not None else None
        if link is not None:
            # the cgroup shim first: `ip netns exec` mounts the namespace's own /sys, where the
            # cgroup is not; the shim joins it, then execs into namespace B (one pid throughout)
            outer = wrap
            wrap = lambda argv: (outer or list)(link.in_b(argv))  # noqa: E731
            notes.append(
                f"across a link: asked {link.rtt_us:,} us round trip, measured "
                f"{link.measured.median_us if link.measured else 0:,.0f} us; no primer (it "
                "would run on this side of the link): the warm-up stands in"
            )
            if not link.on_target:
                notes.append(
                    f"link off target: {CALIBRATION_ROUNDS} calibrations did not bring "
                    f"the round trip within {CALIBRATED:.0%} of the asked one"
                )
        try:
            server = ServerProcess.start(
                spec.server,
                args,
                cpus=server_cpus,
                nofile=spec.nofile,
                host=ADDR_B if link is not None else LOOPBACK,
                wrap=wrap,
            )
        except ServerStartError as exc:
            run = server_run_from(
                None, spec.server, [spec.server, *spec.server_args], None, exc.stderr_tail
            )
            failed = Reasons()
            failed.add("server-start", f"server did not start: {exc}{last_line(exc.stderr_tail)}")
            return self._result(params, failed, None, run, None, started, notes)

        self.on_pids({"cell_id": spec.cell_id, "server_pid": server.pid, "loadgen_pid": None})
        interval = self.monitor_interval_s or DEFAULT_INTERVAL_S
        # The monitor samples from the client's CPUs, so its cost never lands on the server's.
        monitor = Monitor(
            server.pgid,
            interval,
            cpus=client_cpus if client_cpus is not None else self.cpus.client,
            close_wait_port=server.port if spec.close_wait else None,
            cgroup=group,
        )
        # The load generator tells the monitor its window's edges through this pipe.
        window_r, window_w = os.pipe()
        monitor.watch_window(window_r)
        monitor.start()
        load: schema.LoadResult | None = None
        reasons = Reasons()
        died_during: int | None = None
        try:
            primed = 0
            try:
                if link is None:
                    primed = prime(server.host, server.port, spec.params.size)
            except OSError as exc:
                reasons.add("primer", f"primer connection failed: {exc}")
            if self.stop.is_set():
                raise Interrupted
            if not reasons:
                load, why = self._load(server, client_cpus, rate, monitor, window_w)
                if why:
                    reasons.add(*why)
            if not server.alive():
                died_during = server.popen.returncode
        finally:
            monitor_data, report = stop_watched(server, monitor, window_w)

        run = server_run_from(server, spec.server, server.argv, report)
        pss_age = monitor.pss.max_age_s if monitor.pss.partial_samples else None
        cpu = judge(
            params,
            load,
            report,
            monitor_data,
            reasons,
            notes,
            died_during=died_during,
            primed=primed,
            server_cpus=server_cpus,
            client_cpus=client_cpus,
            monitor_hz=monitor.achieved_hz(),
            pss_max_age_s=pss_age,
        )
        xray = None
        if xray_path is not None:
            xray, gap = read_xray(xray_path, load)
            if gap:
                reasons.add("xray", gap)
        return self._result(params, reasons, load, run, monitor_data, started, notes, cpu, xray)

    def _load(  # noqa: PLR0911 - one return per way a load generator run can end
        self,
        server: ServerProcess,
        client_cpus: tuple[int, ...] | None,
        rate: float | None,
        monitor: Monitor | None = None,
        window_fd: int | None = None,
    ) -> tuple[schema.LoadResult | None, tuple[schema.FailureKind, str] | None]:
        """Run the load generator to completion; (its result, why the cell failed or None).

        While it runs, the memory guard is read every tenth of a second; when it trips, the load
        generator is ended at once (its partial result is kept) and the cell fails with
        "stopped at N connections: memory (...)".
        """
        spec = self.spec
        workdir = self.run_dir / "loadgen"
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / f"{spec.cell_id}.json"
        out.unlink(missing_ok=True)
        config = cell_load(spec, server.host, server.port, client_cpus, self.workers, rate)
        if self.link is not None:  # the far side of the link is a host this run names
            config = replace(config, cluster_hosts=(ADDR_B,))
        argv = loadargs.argv(config, output=out, window_fd=window_fd)
        if self.link is not None:
            argv = self.link.in_a(argv)
        limit = loadgen_limit_s(config)
        guard = MemoryGuard.of(spec.memory_cap_mb, spec.mem_available_floor)
        memory_stop: str | None = None
        with tempfile.NamedTemporaryFile(
            dir=workdir, prefix=f".{spec.cell_id}.", suffix=".stderr", delete=False
        ) as errf:
            err_path = Path(errf.name)
        try:
            with open(err_path, "wb") as err:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                    pass_fds=() if window_fd is None else (window_fd,),
                )
            try:
                self.on_pids(
                    {"cell_id": spec.cell_id, "server_pid": server.pid, "loadgen_pid": popen.pid}
                )
                ended = supervise(
                    popen,
                    limit,
                    self.stop,
                    watch=lambda: guard.check(monitor.latest() if monitor else None),
                )
                code = ended.code
                if ended.why == STOPPED:
                    raise Interrupted
                if ended.why == DEADLINE:
                    return None, ("load", f"load generator still running after {limit:.0f} s")
                if ended.why is not None:  # the memory guard
                    held = server_connections(server.port)
                    memory_stop = f"stopped at {held} connections: memory ({ended.why})"
            finally:
                end_group(popen)
            tail = _tail(err_path)
            if memory_stop is not None:
                partial = None
                with contextlib.suppress(schema.SchemaError):
                    partial = schema.read_load(out)  # written on SIGTERM, marked incomplete
                return partial, ("memory", memory_stop)
            if code == 2:
                return None, ("load", f"load generator rejected its arguments{last_line(tail)}")
            if not out.exists():
                why = f"load generator exited with code {code}, no result{last_line(tail)}"
                return None, ("load", why)
            try:
                load = schema.read_load(out)
            except schema.SchemaError as exc:
                return None, ("load", f"load generator's result is unreadable: {exc}")
            if code != 0 or not load.complete:
                why = f"load incomplete (exit {code}): {load.failure or 'no reason given'}"
                return load, ("load", why)
            return load, None
        finally:
            err_path.unlink(missing_ok=True)
            out.unlink(missing_ok=True)  # its content lives on inside the cell file

    def _result(
        self,
        params: schema.CellParams,
        reasons: Reasons,
        load: schema.LoadResult | None,
        run: schema.ServerRun | None,
        monitor: schema.MonitorData | None,
        started: str,
        notes: list[str],
        cpu: schema.CpuAccount | None = None,
        xray: schema.Xray | None = None,
    ) -> schema.CellResult:
        return cell_result(
            self.spec,
            params,
            reasons,
            load=load,
            run=run,
            monitor=monitor,
            started=started,
            ended=utc_now(),
            notes=notes,
            cpu=cpu,
            git=self.git,
            xray=xray,
            link=self.link.record() if self.link is not None else None,
        )


def read_xray(path: Path, load: schema.LoadResult | None) -> tuple[schema.Xray | None, str | None]:
    """The server's X-ray file over the load's window (then removed: its summary lives on in
    the cell), or why there is none."""
    try:
        xf = records_xray.read(path)
    except FileNotFoundError:
        return None, "the server wrote no X-ray file"
    except (OSError, records_xray.XrayError) as exc:
        return None, f"the server's X-ray is unreadable: {exc}"
    finally:
        path.unlink(missing_ok=True)
    window = (load.window_start_ns, load.window_end_ns) if load and load.window_end_ns else None
    return records_xray.summarise(xf, window), None
