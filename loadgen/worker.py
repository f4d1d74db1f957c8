"""One load-generator worker process: `python -m loadgen.worker`, driven by its parent.

The parent (coordinator.py) splits the connections over K workers so K CPUs can generate load.
Workers never decide the timeline themselves: they move through the phases on the parent's
command, one JSON line each way over stdin/stdout, so that every worker's warm-up connections
are closed before any worker opens a measured one (the asyncio warm-up trap: a server's first
connections can run at a fraction of its later speed) and all workers measure the same window
of CLOCK_MONOTONIC, which every process on the machine shares.

    parent -> worker            worker -> parent
    <a protocol.WorkerInit>     {"phase": "hello"}
    {"cmd": "warmup"}           {"phase": "warm", ...}
    {"cmd": "connect"}          {"phase": "connected", "opened": n}
    {"cmd": "go", t0, t_end}    {"phase": "done", "report": <a protocol.WorkerReport>}
    {"cmd": "stop"}             (ends the current phase early; the report still comes)

SIGTERM/SIGINT to a worker act like "stop". If the parent dies, the kernel kills the worker
(PR_SET_PDEATHSIG), so a crashed parent leaves no orphan generating load.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import sys
import time
from typing import Any

import uvloop

from loadgen import client, per_request, persistent
from loadgen.idle import HELLO as IDLE_HELLO
from loadgen.idle import IdleSet
from loadgen.parent import die_with_parent
from loadgen.protocol import WorkerInit, WorkerReport
from records.schema import ClientCpu, TimelineSecond, from_dict, to_dict


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def send(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, init: WorkerInit) -> None:
        self.init = init
        self.cfg = init.config
        self.uids = init.uids
        self.sources: list[str | None] = init.sources or [None]
        self.stop = asyncio.Event()
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.interval_ns: int | None = None
        # Scale cells' idle connections (global indexes), held apart from the measured ones.
        self.idle_uids = init.idle_uids
        self.idle = IdleSet(self.cfg.host, self.cfg.port, self.cfg.size, self.cfg.timeout_s)
        rate = self.cfg.rate
        if self.cfg.load == "open" and rate:
            # Total rate R over N connections: each connection sends every N/R seconds,
            # connection g first at g/R, so the whole schedule is evenly spread.
            self.interval_ns = round(self.cfg.connections * 1e9 / rate)

    def new_run(self, recording: bool) -> client.Run:
        cfg = self.cfg
        return client.Run(
            asyncio.get_running_loop(),
            cfg.host,
            cfg.port,
            cfg.size,
            cfg.timeout_s,
            self.interval_ns,
            recording,
        )

    def source_of(self, i: int) -> str | None:
        return self.sources[self.uids[i] % len(self.sources)]

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: end the current phase early, like the parent's "stop"."""
        self.stop.set()
        self.commands.put_nowait({"cmd": "stop"})

    async def read_commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self.stop.set()  # parent gone
                await self.commands.put({"cmd": "stop"})
                return
            msg = json.loads(line)
            if msg.get("cmd") == "stop":
                self.stop.set()
            await self.commands.put(msg)

    async def next_command(self, expected: str) -> bool:
        """Wait for the parent's next command; False when told to stop instead."""
        while True:
            msg = await self.commands.get()
            if msg["cmd"] == "stop":
                return False
            if msg["cmd"] == expected:
                self.last = msg
                return True

    async def sleep_or_stop(self, seconds: float) -> None:
        if seconds <= 0 or self.stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def start(self, run: client.Run, due: list[int]) -> list[Any]:
        """Open this phase's connections (persistent) or make its slots (per-request)."""
        if self.cfg.mode == "persistent":
            srcs = [self.source_of(i) for i in range(len(self.uids))]
            return list(await persistent.open_all(run, self.uids, srcs, due.__getitem__))
        return per_request.make_slots(run, self.uids, self.sources, due.__getitem__)

    def due_times(self, t0: int) -> list[int]:
        rate = self.cfg.rate
        if not rate:
            return [t0] * len(self.uids)
        return [t0 + round(uid * 1e9 / rate) for uid in self.uids]

    async def warmup(self) -> dict[str, Any]:
        seconds = self.cfg.warmup_s
        run = self.new_run(recording=False)
        if seconds > 0 and not self.stop.is_set():
            conns = await self.start(run, self.due_times(time.monotonic_ns()))
            run.start_sweeper()
            for c in conns:
                c.begin()
            await self.sleep_or_stop(seconds)
            await run.drain(min(1.0, self.cfg.timeout_s))
            run.stop_sweeper()
        self.warm_run = run
        return {"phase": "warm"}

    async def main(self) -> WorkerReport:
        send({"phase": "hello"})
        if not await self.next_command("warmup"):
            return self.report(None, 0, 0, None, {})
        send(await self.warmup())
        if not await self.next_command("connect"):
            return self.report(None, 0, 0, None, {})
        if self.idle_uids:
            srcs = [self.sources[u % len(self.sources)] for u in self.idle_uids]
            await self.idle.open(srcs, self.stop, IDLE_HELLO)
        run = self.new_run(recording=True)
        placeholder = time.monotonic_ns() + 3_600_000_000_000  # replaced by "go"'s t0
        f0 = time.monotonic_ns()
        conns = await self.start(run, self.due_times(placeholder))
        opened = run.c.connections_opened
        fill: dict[str, Any] = {}
        if self.cfg.mode == "persistent" and not self.stop.is_set():
            deadline = persistent.fill_deadline_s(len(self.uids), self.cfg.timeout_s)
            ended = await persistent.fill(run, conns, deadline, persistent.FILL_STALL_S)
            fill = {
                "echoed": run.filled,
                "fill_s": (run.fill_last_ns - f0) / 1e9 if run.filled else 0.0,
                "deadline_s": deadline,
                "ended": "stopped" if self.stop.is_set() else ended,
            }
        # The fill's echoes happened outside the window: their bytes are not the window's.
        run.c.bytes_sent = 0
        send({"phase": "connected", "opened": opened, "errors": run.c.errors, "fill": fill})
        if not await self.next_command("go"):
            await run.drain(0.0)
            return self.report(run, 0, 0, None, {})
        t0, t_end = int(self.last["t0"]), int(self.last["t_end"])
        for conn, due in zip(conns, self.due_times(t0), strict=True):
            conn.due = due
        await self.sleep_or_stop((t0 - time.monotonic_ns()) / 1e9)
        # No cyclic GC inside the window: a collection pass is client CPU and a latency spike
        # that is the client's, not the server's (what the window allocates is freed by
        # reference counting; the collector runs again right after it).
        gc.collect()
        gc.freeze()
        gc.disable()
        run.window_open = True
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic_ns()
        timeline: list[TimelineSecond] = []
        ticker = Ticker(run, w0, timeline)
        run.start_sweeper()
        for c in conns:
            c.begin()
        await self.sleep_or_stop((t_end - time.monotonic_ns()) / 1e9)
        run.recording = False
        w1 = time.monotonic_ns()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        gc.enable()
        run.close_window(w0, w1)
        ticker.finish(w1)
        left = await run.drain(min(2.0, self.cfg.timeout_s))
        cpu = ClientCpu(
            worker=0,
            user_s=ru1.ru_utime - ru0.ru_utime,
            sys_s=ru1.ru_stime - ru0.ru_stime,
            wall_s=(w1 - w0) / 1e9,
            cpus_given=len(os.sched_getaffinity(0)),
        )
        extra = {"unfinished_at_end": left} if left else {}
        if self.idle.socks and not self.stop.is_set():
            size = self.cfg.size
            await self.idle.verify((bytes(range(256)) * (size // 256 + 1))[:size])
        return self.report(run, w0, w1, cpu, extra, timeline)

    def report(
        self,
        run: client.Run | None,
        w0: int,
        w1: int,
        cpu: ClientCpu | None,
        extra: dict[str, int],
        timeline: list[TimelineSecond] | None = None,
    ) -> WorkerReport:
        warm = getattr(self, "warm_run", None)
        details: dict[str, int] = dict(extra)
        rx_total = warm.rx_total if warm is not None else 0
        if warm is not None:
            # Warm-up is not measured, but an error there is still reported, never dropped.
            for kind, n in warm.c.errors.items():
                details[f"warmup:{kind}"] = details.get(f"warmup:{kind}", 0) + n
        port_bound = bool(warm is not None and warm.port_bound)
        measured: dict[str, Any] = {}
        if run is not None:
            run.flush()
            c = run.c
            for key, n in c.details.items():
                details[key] = details.get(key, 0) + n
            rx_total += run.rx_total
            port_bound = port_bound or run.port_bound
            measured = {
                "requests": c.completed,
                "bytes_sent": c.bytes_sent,
                "bytes_received": c.bytes_received,
                "connections_opened": c.connections_opened,
                "errors": dict(c.errors),
                "histograms": {
                    "latency": run.latency.encoded(),
                    "service": run.service.encoded(),
                    "connect": run.connect.encoded(),
                    "lateness": run.lateness.encoded(),
                    "unfinished": run.unfinished.encoded(),
                },
                "served": run.served,
                "starved": len(self.uids) - run.served,
                "unfinished": run.unfinished.hist.get_total_count(),
                "due_unsent": run.due_unsent,
            }
        idle: dict[str, Any] = {}
        if self.idle_uids:
            idle = {
                "idle_opened": self.idle.opened,
                "idle_alive_at_end": self.idle.alive,
                "idle_errors": dict(self.idle.errors),
            }
            for key, n in self.idle.details.items():
                details[key] = details.get(key, 0) + n
        self.idle.close()
        return WorkerReport(
            interrupted=self.stop.is_set(),
            measured=run is not None,
            window_start_ns=w0,
            window_end_ns=w1,
            bytes_received_total=rx_total,
            client_port_bound=port_bound,
            client_cpu=cpu,
            timeline=timeline or [],
            error_details=details,
            **measured,
            **idle,
        )


class Ticker:
    """The per-second timeline, and the once-a-second flush of samples into histograms."""

    def __init__(self, run: client.Run, t0_ns: int, out: list[TimelineSecond]) -> None:
        self.run = run
        self.t0 = t0_ns
        self.out = out
        self.second = 0
        self.last_completed = 0
        self.last_errors = 0
        self.handle = run.loop.call_later(1.0, self.tick)

    def _record(self) -> None:
        c = self.run.c
        errors = sum(c.errors.values())
        self.out.append(
            TimelineSecond(
                self.second, c.completed - self.last_completed, errors - self.last_errors
            )
        )
        self.last_completed, self.last_errors = c.completed, errors
        self.second += 1

    def tick(self) -> None:
        self._record()
        self.run.flush()
        # Aim each tick at the next whole second since t0, so timer lateness does not add up.
        next_at = self.t0 + (self.second + 1) * 1_000_000_000
        self.handle = self.run.loop.call_later(
            max(0.0, (next_at - time.monotonic_ns()) / 1e9), self.tick
        )

    def finish(self, now_ns: int) -> None:
        self.handle.cancel()
        if now_ns - self.t0 > self.second * 1_000_000_000 + 1_000_000:  # a partial last second
            self._record()


async def amain() -> int:
    line = sys.stdin.buffer.readline()
    if not line:
        return 1
    init = from_dict(WorkerInit, json.loads(line), "init")
    if not die_with_parent(init.parent_pid, signal.SIGKILL):
        os._exit(1)  # the coordinator died before the request took effect
    raise_nofile(len(init.uids) * 2 + 64)
    worker = Worker(init)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    reader = asyncio.create_task(worker.read_commands())
    try:
        send({"phase": "done", "report": to_dict(await worker.main())})
    finally:
        reader.cancel()
    return 0


def main() -> int:
    return uvloop.run(amain())


if __name__ == "__main__":
    sys.exit(main())
