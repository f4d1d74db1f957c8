"""The parent of a load run: validate, spawn workers, keep them in step, merge what they measured.

Workers are `python -m loadgen.worker` processes in the loadgen's own process group (so whoever
started the loadgen in its own group can end all of it by one pgid), fed by JSON lines (see
worker.py for the protocol). Their encoded HdrHistograms are decoded here and added together:
the merge is exact, so percentiles come from the merged histogram, never from averaging
per-worker percentiles.

On SIGTERM/SIGINT the coordinator tells every worker to stop, collects what each measured, and
returns a result marked `complete=False`: an interrupted run keeps its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from loadgen.persistent import FILL_STALL_S, fill_deadline_s
from loadgen.protocol import WorkerInit, WorkerReport
from records import hist, loadargs
from records.limits import open_deadline_s
from records.schema import (
    ERROR_KINDS,
    RATE_MISS_LIMIT,
    Fill,
    Histogram,
    LoadConfig,
    LoadResult,
    SchemaError,
    TimelineSecond,
    from_dict,
    to_dict,
)

# numpy's OpenBLAS starts a thread per CPU at import that busy-waits for a while: client CPU
# spent on nothing (perf found 2.5% of a run's samples in blas_thread_server). One is enough.
WORKER_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
SATURATION = 0.90  # a worker using more than this share of its CPU may be the bottleneck
FD_RESERVE = 64  # descriptors a worker needs besides its connections
START_DELAY_NS = 100_000_000  # between "go" and t0: every worker gets the message in time
PHASE_GRACE_S = 30.0  # a worker that answers no phase within this (after its work) is stuck


class UsageError(ValueError):
    """A configuration that cannot be run (CLI exit 2)."""


class RunFailure(RuntimeError):
    """A run that could not measure anything (CLI exit 1)."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def source_addresses(config: LoadConfig) -> list[str | None]:
    if config.source_addrs <= 0:
        return [None]
    return [f"127.0.0.{2 + i}" for i in range(config.source_addrs)]


def validate(config: LoadConfig) -> None:
    """Raise UsageError (one clear sentence) for anything that cannot be run."""
    c = config
    if not is_loopback(c.host) and c.host not in c.cluster_hosts:
        raise UsageError(
            f"target {c.host} is neither a loopback address nor a host the cluster names: load "
            "stays on this machine or its cluster"
        )
    if not 1 <= c.port <= 65535:
        raise UsageError(f"port {c.port} is not in 1..65535")
    why = loadargs.problem(c)
    if why:
        raise UsageError(why)
    if c.source_addrs and (not is_loopback(c.host) or ipaddress.ip_address(c.host).version != 4):
        raise UsageError("--source-addrs needs an IPv4 loopback target (127.0.0.0/8)")
    if c.cpus is not None:
        # Tried, not compared with our own affinity: the runner keeps itself (and so what it
        # starts) off the server's CPUs, and hands a shared cell's load the server's CPU.
        here = os.sched_getaffinity(0)
        try:
            if not c.cpus:
                raise ValueError("no CPU")
            os.sched_setaffinity(0, c.cpus)
        except (OSError, ValueError):
            raise UsageError(f"--cpus {list(c.cpus)}: not available here") from None
        finally:
            os.sched_setaffinity(0, here)
    need = -(-c.connections // c.workers) * (2 if c.warmup_s > 0 else 1) + FD_RESERVE
    need += -(-c.idle_connections // c.workers)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and need > hard:
        raise UsageError(
            f"{c.connections} connections over {c.workers} worker(s) need {need} open files per "
            f"worker but the hard limit (ulimit -Hn) is {hard}: raise it or add --workers"
        )


def probe(config: LoadConfig) -> None:
    """Fail fast (RunFailure) when nothing listens at the target, before spawning workers."""
    try:
        with socket.create_connection((config.host, config.port), timeout=config.timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RunFailure(f"cannot connect to {config.host}:{config.port}: {reason}") from None


def split(config: LoadConfig) -> list[list[int]]:
    """Global connection indexes of each worker (round-robin, so each gets every source)."""
    return [list(range(w, config.connections, config.workers)) for w in range(config.workers)]


def split_idle(config: LoadConfig) -> list[list[int]]:
    """Idle connections' indexes per worker, numbered after the active ones (their sources)."""
    n, k = config.connections, config.workers
    return [list(range(n + w, n + config.idle_connections, k)) for w in range(k)]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Coordinator:
    def __init__(
        self,
        config: LoadConfig,
        announce: Callable[[str], None] | None = None,
        window_fd: int | None = None,
    ) -> None:
        self.config = config
        self.announce = announce
        # Told "T0 T_END\n" (CLOCK_MONOTONIC ns) as soon as the window is fixed, 100 ms before
        # it opens, so a monitor can sample the server exactly at the window's edges.
        self.window_fd = window_fd
        self.fill: Fill | None = None
        self.procs: list[asyncio.subprocess.Process] = []
        self.stopping = asyncio.Event()
        self.stop_reason: str | None = None

    def on_signal(self, signame: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = f"interrupted by {signame}"
        self.stopping.set()
        for proc in self.procs:
            self.tell(proc, {"cmd": "stop"})

    def tell(self, proc: asyncio.subprocess.Process, msg: dict[str, Any]) -> None:
        if proc.stdin is None or proc.stdin.is_closing() or proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def expect(self, phase: str, timeout_s: float) -> list[dict[str, Any] | None]:
        """Each worker's next message, which should be `phase` (None for a worker that died)."""

        async def one(proc: asyncio.subprocess.Process) -> dict[str, Any] | None:
            assert proc.stdout is not None
            while True:
                line = await proc.stdout.readline()
                if not line:
                    return None
                msg: dict[str, Any] = json.loads(line)
                if msg.get("phase") in (phase, "done"):
                    return msg

        try:
            return list(await asyncio.wait_for(asyncio.gather(*map(one, self.procs)), timeout_s))
        except TimeoutError:
            return [None] * len(self.procs)

    async def spawn(self) -> None:
        c = self.config
        sources = source_addresses(c)
        for uids, idle_uids in zip(split(c), split_idle(c), strict=True):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadgen.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=WORKER_ENV,
            )
            self.procs.append(proc)
            if c.cpus is not None:
                # Pinned before it has any work: the worker idles until it reads `init`.
                os.sched_setaffinity(proc.pid, c.cpus)
            # The configuration whole, as validated: the worker reads it through the schema.
            self.tell(proc, to_dict(WorkerInit(os.getpid(), c, uids, sources, idle_uids)))

    async def run(self) -> LoadResult:
        c = self.config
        started_at = now_iso()
        failure: str | None = None
        reports: list[dict[str, Any] | None] = []
        parsed: list[WorkerReport] = []
        try:
            await self.spawn()
            phases = [
                ("hello", "warmup", 30.0),
                ("warm", "connect", c.warmup_s + c.timeout_s + 30.0),
            ]
            for phase, command, limit in phases:
                got = await self.expect(phase, limit)
                if any(m is None or m["phase"] == "done" for m in got) or self.stopping.is_set():
                    failure = self.stop_reason or f"a worker failed before '{phase}'"
                    break
                for proc in self.procs:
                    self.tell(proc, {"cmd": command})
            if failure is None:
                idle_s = open_deadline_s(c.idle_connections, c.timeout_s)
                fill_s = fill_deadline_s(-(-c.connections // c.workers), c.timeout_s)
                got = await self.expect(
                    "connected", c.connections * c.timeout_s / 64 + idle_s + fill_s + 60.0
                )
                if any(m is None for m in got) or self.stopping.is_set():
                    failure = self.stop_reason or "a worker failed while connecting"
                elif c.mode == "persistent" and sum(m["opened"] for m in got if m) == 0:
                    failure = f"nothing connected to {c.host}:{c.port}"
                else:
                    self.fill = merge_fill(c, [m for m in got if m])
                    t0 = time.monotonic_ns() + START_DELAY_NS
                    t_end = t0 + int(c.duration_s * 1e9)
                    for proc in self.procs:
                        self.tell(proc, {"cmd": "go", "t0": t0, "t_end": t_end})
                    self.tell_window(t0, t_end)
                    if self.announce is not None:  # a readiness signal for whoever waits on us
                        self.announce(
                            f"loadgen: measuring {c.connections} connection(s) for "
                            f"{c.duration_s:g} s"
                        )
            if failure is not None:
                for proc in self.procs:
                    self.tell(proc, {"cmd": "stop"})
            # Idle connections are checked once more after the measured phase: one timeout more.
            verify_s = c.timeout_s if c.idle_connections else 0.0
            reports = await self.expect(
                "done", c.duration_s + c.timeout_s + verify_s + PHASE_GRACE_S
            )
        finally:
            await self.reap()
        for r in reports:
            try:
                if r is not None:
                    parsed.append(from_dict(WorkerReport, r.get("report"), "worker report"))
            except SchemaError as exc:
                failure = failure or f"a worker's report is unreadable: {exc}"
        if failure is None and len(parsed) < len(reports):
            failure = "a worker died or stopped answering"
        if failure is None and self.stop_reason is not None:
            failure = self.stop_reason
        return build_result(c, started_at, now_iso(), parsed, failure, self.fill)

    def tell_window(self, t0: int, t_end: int) -> None:
        if self.window_fd is None:
            return
        try:
            os.write(self.window_fd, f"{t0} {t_end}\n".encode())
            os.close(self.window_fd)
        except OSError:
            pass  # nobody listens any more: the window is in the result anyway
        self.window_fd = None

    async def reap(self) -> None:
        """End every worker by pid: politely, then SIGKILL; always wait, so no zombie is left."""
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


_FILL_ORDER = ("stopped", "deadline", "stalled", "all")  # the worst ending wins


def merge_fill(config: LoadConfig, connected: list[dict[str, Any]]) -> Fill | None:
    """The workers' fill phases as one (persistent mode only; None for per-request)."""
    fills = [m["fill"] for m in connected if m.get("fill")]
    if not fills:
        return None
    return Fill(
        asked=config.connections,
        connected=sum(int(m.get("opened", 0)) for m in connected),
        echoed=sum(int(f["echoed"]) for f in fills),
        fill_s=round(max(float(f["fill_s"]) for f in fills), 6),
        deadline_s=max(float(f["deadline_s"]) for f in fills),
        stall_s=FILL_STALL_S,
        ended=min((f["ended"] for f in fills), key=_FILL_ORDER.index),
    )


def build_result(
    config: LoadConfig,
    started_at: str,
    ended_at: str,
    reports: list[WorkerReport],
    failure: str | None,
    fill: Fill | None = None,
) -> LoadResult:
    """The workers' reports as one LoadResult: each field the sum of theirs (histograms added
    exactly from their encodings), the window the longest worker's."""
    measured = [r for r in reports if r.measured]
    errors = dict.fromkeys(ERROR_KINDS, 0)
    details: dict[str, int] = {}
    timeline: dict[int, list[int]] = {}
    for r in reports:
        for counts in (r.errors, r.idle_errors):
            for kind, n in counts.items():
                errors[kind] = errors.get(kind, 0) + n
        for key, n in r.error_details.items():
            details[key] = details.get(key, 0) + n
        for t in r.timeline:
            slot = timeline.setdefault(t.second, [0, 0])
            slot[0] += t.completed
            slot[1] += t.errors
    histograms: dict[str, Histogram] = {}
    for name in ("latency", "service", "connect", "lateness", "unfinished"):
        merged = hist.merge([r.histograms[name] for r in measured if name in r.histograms])
        keep = (
            name in ("latency", "unfinished")
            or (name in ("service", "lateness") and config.load == "open")
            or (name == "connect" and config.mode == "per-request")
        )
        if keep:
            histograms[name] = hist.to_schema(merged)
    cpus = [replace(r.client_cpu, worker=i) for i, r in enumerate(reports) if r.client_cpu]
    walls = [
        (r.window_end_ns - r.window_start_ns) / 1e9
        for r in measured
        if r.window_end_ns > r.window_start_ns
    ]
    elapsed = max(walls, default=0.0)

    def total(name: str, of: list[WorkerReport] = measured) -> int:
        return sum(int(getattr(r, name)) for r in of)

    requests = total("requests")
    given = len(config.cpus) if config.cpus else len(os.sched_getaffinity(0))
    used = sum(cpu.user_s + cpu.sys_s for cpu in cpus)
    saturated = any(cpu.utilisation > SATURATION for cpu in cpus) or (
        elapsed > 0 and used / (elapsed * given) > SATURATION
    )
    complete = failure is None and len(reports) == config.workers
    if not complete and failure is None:
        failure = "not every worker reported"
    rps = requests / elapsed if elapsed > 0 else 0.0
    rate_miss = bool(
        config.load == "open"
        and config.rate
        and elapsed > 0
        and rps < (1.0 - RATE_MISS_LIMIT) * config.rate
    )
    served = total("served")
    return LoadResult(
        config=config,
        started_at=started_at,
        ended_at=ended_at,
        elapsed_s=round(elapsed, 6),
        complete=complete,
        failure=failure,
        requests=requests,
        bytes_sent=total("bytes_sent"),
        bytes_received=total("bytes_received"),
        bytes_received_total=total("bytes_received_total", reports),
        connections_opened=total("connections_opened"),
        errors=errors,
        error_details=details,
        histograms=histograms,
        timeline=[TimelineSecond(s, v[0], v[1]) for s, v in sorted(timeline.items())],
        client_cpu=cpus,
        client_saturated=saturated,
        client_port_bound=any(r.client_port_bound for r in reports),
        requests_per_s=round(rps, 3),
        idle_opened=total("idle_opened", reports),
        idle_alive_at_end=total("idle_alive_at_end", reports),
        window_start_ns=min((r.window_start_ns for r in measured if r.window_start_ns), default=0),
        window_end_ns=max((r.window_end_ns for r in measured), default=0),
        fill=fill,
        served=served,
        starved=config.connections - served if measured else config.connections,
        unfinished=total("unfinished"),
        target_rate=config.rate if config.load == "open" else None,
        sent=total("bytes_sent") // max(1, config.size),
        due_unsent=total("due_unsent"),
        rate_miss=rate_miss,
    )


async def run_async(
    config: LoadConfig,
    announce: Callable[[str], None] | None = None,
    window_fd: int | None = None,
) -> LoadResult:
    coordinator = Coordinator(config, announce, window_fd)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, coordinator.on_signal, sig.name)
                handled.append(sig)
            except (RuntimeError, ValueError):
                pass  # not the main thread: the caller handles signals
        return await coordinator.run()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def run(
    config: LoadConfig,
    announce: Callable[[str], None] | None = None,
    window_fd: int | None = None,
) -> LoadResult:
    """Run one load as configured. Raises UsageError or RunFailure when nothing can be measured."""
    validate(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    probe(config)
    return asyncio.run(run_async(config, announce, window_fd))
