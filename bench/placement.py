"""Where a cell runs: the load generator's workers, the cores sweep and the cells a cluster
can run (the CPU split itself is the runner's `plan_cpus`, and `CpuPlan` is bench/cell.py's).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable

from bench.cell import CpuPlan
from bench.cluster import unsupported
from bench.link import Link, sweep, unavailable
from bench.profile import CellSpec
from records import schema

# The server's CPUs in every cell but the cores sweep's: as many as the reference run's 2-CPU
# machine gave it, whatever this machine has, so that runs on different machines compare like
# for like (the load generator gets every other CPU; the manifest records both).
REFERENCE_SERVER_CPUS = 1


def client_workers(spec: CellSpec, cpus: CpuPlan) -> int:
    """One load-generator worker per CPU it has (one when it shares the server's)."""
    _, client = cpus.for_cell(spec.placement, spec.server_cpus)
    if spec.placement != "split" or client is None:
        return 1
    return len(client)


def fit_cores(todo: list[CellSpec], cpus: CpuPlan) -> tuple[list[CellSpec], list[str]]:
    """Drop the cores sweep's cells this machine cannot give their CPUs; the whole sweep when
    fewer than two CPU counts fit (one point is not a sweep). Returns the cells to run and one
    line per thing skipped, saying why."""
    sweep = [c for c in todo if c.server_cpus is not None]
    if not sweep:
        return todo, []
    asked = sorted({c.server_cpus for c in sweep if c.server_cpus is not None})
    fit = [k for k in asked if cpus.fits(k)]
    usable = len(cpus.pool())
    if len(fit) < 2:
        why = (
            "unpinned: the server has no CPUs of its own"
            if cpus.server is None
            else f"this machine has {usable} usable CPUs; the sweep needs the server on 1 and "
            f"2 CPUs with as many again for the load generator (4 CPUs)"
        )
        lines = [f"cores: skipped ({len(sweep)} cells): {why}"]
        return [c for c in todo if c.server_cpus is None], lines
    lines = []
    beyond = [k for k in asked if k not in fit]
    if beyond:
        lines.append(
            f"cores: server on {', '.join(map(str, beyond))} CPUs skipped: {usable} usable CPUs "
            "leave the load generator fewer CPUs than the server"
        )
    return [c for c in todo if c.server_cpus is None or c.server_cpus in fit], lines


def fit_cluster(todo: list[CellSpec]) -> tuple[list[CellSpec], list[str]]:
    """Drop the cells that cannot run across hosts, one line per scenario saying why."""
    why: dict[str, tuple[str, int]] = {}
    keep = []
    for spec in todo:
        reason = unsupported(spec)
        if reason is None:
            keep.append(spec)
        else:
            _, n = why.get(spec.scenario, (reason, 0))
            why[spec.scenario] = (reason, n + 1)
    lines = [f"{name}: skipped on a cluster ({n} cells): {r}" for name, (r, n) in why.items()]
    return keep, lines


def beyond_limit(spec: CellSpec, results: dict[str, schema.CellResult]) -> str | None:
    """A scale cell above a connection count where the same server (same arguments, same
    trial) already stopped: not run, and why (a server that could not hold 3,000 clients
    will not hold 10,000, and a fork server's attempt costs minutes and gigabytes)."""
    if spec.params.active is None:
        return None
    for done in results.values():
        if (
            done.scenario == spec.scenario
            and done.server == spec.server
            and done.trial == spec.trial
            and done.status == "failed"
            and _same_args(done, spec.server_args)
            and done.params.connections < spec.params.connections
            and _stopped_at_scale(done)
        ):
            return f"not run: {spec.server} already stopped below this ({done.reason})"
    return None


def _stopped_at_scale(done: schema.CellResult) -> bool:
    """Whether a scale cell failed because the server reached its limit (or the memory guard
    stopped it); files older than version 4 say so only in words."""
    if done.failure_kind is not None:
        return done.failure_kind in ("limit", "memory")
    return (done.reason or "").startswith(("limit reached", "stopped at"))


def _same_args(done: schema.CellResult, args: tuple[str, ...]) -> bool:
    """Whether a finished cell's server ran with exactly `args`."""
    return done.profile_args() == list(args)


def fit_link(
    todo: list[CellSpec], cpus: CpuPlan, stack: contextlib.ExitStack, say: Callable[[str], None]
) -> tuple[list[CellSpec], Link | None]:
    """issue 23: the link the cells with a round trip need, held on `stack` (closed by the
    runner whatever happens), its delay element on the load generator's CPUs. Where this
    machine cannot make one, those cells are dropped with one line saying why."""
    linked = [c for c in todo if c.params.rtt_us is not None]
    if not linked:
        return todo, None
    why = unavailable()
    if why is not None:
        say(f"{why} ({len(linked)} cells)")
        return [c for c in todo if c.params.rtt_us is None], None
    for name in sweep():
        say(f"note: removed {name}, a namespace left by an earlier run")
    first = linked[0].params.rtt_us or 0
    return todo, stack.enter_context(Link.up(first, cpus=cpus.client))


def reference_rate(
    results: dict[str, schema.CellResult], ref_ids: list[str]
) -> tuple[float | None, str | None]:
    """An open loop's rate: the median closed-loop requests/s of its reference cell's finished
    trials; else None and why."""
    refs = [results[i] for i in ref_ids if i in results]
    ok = [r.load.requests_per_s for r in refs if r.status == "ok" and r.load is not None]
    ok = [x for x in ok if x > 0]
    if ok:
        return statistics.median(ok), None
    if refs:
        return None, f"reference closed-loop cell {refs[0].cell_id} failed: {refs[0].reason}"
    return None, "no finished closed-loop reference cell in this run"
