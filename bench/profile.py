"""Profiles: the experiment matrix, declared in TOML, expanded into an ordered list of cells.

A profile names servers, scenarios and trials (see bench/profiles/*.toml); this module checks it
and turns it into `CellSpec`s, each with a deterministic, filesystem-safe `cell_id` derived from
everything that makes the cell what it is (scenario, server, server arguments, parameters,
placement, trial). `--resume` relies on that: the same profile always yields the same ids, so the
cells already on disk are exactly the ones not to run again.

Order matters on a noisy 2-core machine: cells run trial-major (trial 1 of every cell, then trial
2, ...) and, within a parameter point, server after server (A, B, C, A, B, C), so slow drift in
the machine hits every server alike. Open-loop cells come last: their rate is a fraction of the
closed-loop throughput this run measured for the same server at the same connections.

Scenario names and their parameter keys are fixed by the team (results/README.md); the analysis
reads exactly these.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from bench.scenarios import (
    DEFAULT_COUNTER_MODES,
    DEFAULT_MEM_AVAILABLE_FLOOR,
    FAULT_SCENARIOS,
    PLACEMENTS,
    SCENARIO_KEYS,
    SCENARIOS,
    TOP_KEYS,
)
from records import loadargs
from records.limits import MAX_CONNECTIONS, MAX_SIZE
from records.registry import SERVERS, Option
from records.schema import CellParams, LoadConfig, Placement

PROFILE_DIR = Path(__file__).with_name("profiles")
# Per cell, beyond warm-up and measured phase: server start and stop, the load generator's own
# start-up (~1.3 s measured here), the primer. Used for estimates only.
CELL_OVERHEAD_S = 1.8


class ProfileError(ValueError):
    """A profile that cannot be run; the message is one line for the CLI."""


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One cell and trial, ready to run (open-loop `rate` is filled in when it runs)."""

    cell_id: str
    point_key: str  # the cell without its trial: trials of one point share it
    scenario: str
    server: str
    server_args: tuple[str, ...]
    params: CellParams
    placement: Placement
    trial: int
    # The load generator's whole configuration (the per-echo timeout included), built and checked
    # here once: the runner only aims it at the server (host, port) and fills in client CPUs,
    # workers and an open loop's rate.
    load: LoadConfig
    ref_point: str | None = None  # open loop: the closed-loop point whose rate it scales
    # issue 7: the memory guard's cap on the server tree's PSS (None: only the MemAvailable
    # floor), the server's RLIMIT_NOFILE (None: inherited), and whether the monitor counts
    # CLOSE_WAIT sockets on the server's port.
    memory_cap_mb: float | None = None
    mem_available_floor: float = DEFAULT_MEM_AVAILABLE_FLOOR
    nofile: int | None = None
    close_wait: bool = False
    xray: bool = False  # issue 13: the server records every connection (--xray), summarised
    server_cpus: int | None = None  # issue 14: the cores sweep's CPUs for the server (None: plan)


@dataclass(frozen=True, slots=True)
class Microbench:
    run: bool = False
    fast: bool = True


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    data: dict[str, Any]  # the parsed TOML, stored in the manifest and used again by --resume
    cells: tuple[CellSpec, ...]
    microbench: Microbench
    client_workers: int | None
    # issue 20: how long the cells may take in all; time left after the planned rounds buys
    # extra rounds for the points too noisy to decide (None: no extra rounds)
    time_budget_s: float | None = None

    def budget_s(self, overhead_s: float = CELL_OVERHEAD_S) -> float:
        """A rough run time: measured + warm-up + start/stop overhead, per cell."""
        return sum(c.params.duration_s + c.params.warmup_s + overhead_s for c in self.cells)


def resolve(name_or_path: str) -> Path:
    """A profile by name (bench/profiles/NAME.toml) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"profile file not found: {candidate}")
        return candidate
    named = PROFILE_DIR / f"{name_or_path}.toml"
    if not named.is_file():
        raise ProfileError(
            f"unknown profile {name_or_path!r} (known: {', '.join(available())}; or a .toml path)"
        )
    return named


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def read(name_or_path: str, *, unpinned: bool = False) -> Profile:
    path = resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    data.setdefault("name", path.stem)
    return build(data, unpinned=unpinned)


def build(data: Mapping[str, Any], *, unpinned: bool = False) -> Profile:
    """Check a parsed profile and expand it into its ordered cells.

    `unpinned` (the CLI's --unpinned) runs every cell unpinned: placements collapse to one.
    """
    data = dict(data)
    _no_unknown(data, TOP_KEYS, "profile")
    name = _str(data.get("name", "custom"), "name")
    trials = _int(data.get("trials", 3), "trials", lo=1)
    duration = _num(data.get("duration_s", 1.0), "duration_s", lo=0.05)
    warmup = _num(data.get("warmup_s", 0.5), "warmup_s", lo=0.0)
    timeout = _num(data.get("timeout_s", 5.0), "timeout_s", lo=0.1)
    servers = _servers(data.get("servers", list(SERVERS)), "servers")
    placement = _placement(data.get("placement", "split"), "placement")
    server_args = _server_args(data.get("server_args", {}))
    cap = data.get("memory_cap_mb")
    memory_cap = None if cap is None else _num(cap, "memory_cap_mb", lo=1.0)
    floor = _num(
        data.get("mem_available_floor", DEFAULT_MEM_AVAILABLE_FLOOR), "mem_available_floor", lo=0.0
    )
    if floor >= 1.0:
        raise ProfileError(f"mem_available_floor: a share of MemTotal below 1, got {floor}")
    workers = data.get("client_workers")
    client_workers = None if workers is None else _int(workers, "client_workers", lo=1)
    mb = data.get("microbench", {})
    if not isinstance(mb, Mapping):
        raise ProfileError("microbench: expected a table")
    _no_unknown(mb, {"run", "fast"}, "microbench")
    microbench = Microbench(run=bool(mb.get("run", False)), fast=bool(mb.get("fast", True)))

    scenarios = data.get("scenarios", [])
    if not isinstance(scenarios, list) or not scenarios:
        raise ProfileError("profile: needs at least one [[scenarios]] table")

    points: list[_Point] = []
    for i, sc in enumerate(scenarios):
        if not isinstance(sc, Mapping):
            raise ProfileError(f"scenarios[{i}]: expected a table")
        expanded = _expand(
            sc, i, servers, server_args, placement, duration, warmup, unpinned=unpinned
        )
        limits = _limits(sc, i, memory_cap)
        points.extend(_Point(*pt, limits=limits) for pt in expanded)

    closed = [p for p in points if p.params.load == "closed"]
    opened = [p for p in points if p.params.load == "open"]
    closed_keys = {
        _ref_key(p.server, p.args, p.params, p.placement) for p in closed if p.params.active is None
    }
    cells: list[CellSpec] = []
    for group in (closed, opened):
        for trial in range(1, trials + 1):
            for pt in group:
                scenario, server, args, params, where = (
                    pt.scenario,
                    pt.server,
                    pt.args,
                    pt.params,
                    pt.placement,
                )
                ref = None
                if params.load == "open" and params.rate is None:
                    ref = _ref_key(server, args, params, where)
                    if ref not in closed_keys:
                        raise ProfileError(
                            f"{scenario}: {server} at {params.connections} connections, "
                            f"{params.size} B, {where}: no closed-loop cell in the profile to "
                            "take its rate from (add it to the concurrency scenario)"
                        )
                cap, nofile = pt.limits.memory_cap_mb, pt.limits.nofile
                cell = _cell(scenario, server, args, params, where, trial, timeout, ref, nofile)
                why = loadargs.problem(cell.load, rate_pending=True)
                if why:
                    raise ProfileError(f"{cell.cell_id}: the load generator would refuse it: {why}")
                cells.append(
                    replace(
                        cell,
                        memory_cap_mb=cap,
                        mem_available_floor=floor,
                        nofile=nofile,
                        close_wait=pt.limits.close_wait,
                        xray=bool(SCENARIOS[scenario].get("xray", False)),
                        server_cpus=params.server_cpus,
                    )
                )
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ProfileError(f"profile: cell {dup} appears twice (two scenarios run the same cell)")
    budget = data.get("time_budget_s")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        data=data,
        cells=tuple(cells),
        microbench=microbench,
        client_workers=client_workers,
        time_budget_s=None if budget is None else _num(budget, "time_budget_s", lo=1.0),
    )


def extra_trial(spec: CellSpec, trial: int) -> CellSpec:
    """Another round of a planned cell (issue 20's extra rounds): the same point, trial
    `trial`, its id the planned one's with that trial number (the digest names the point)."""
    head, _, digest = spec.cell_id.rpartition(f"_t{spec.trial}_")
    return replace(spec, trial=trial, cell_id=f"{head}_t{trial}_{digest}")


@dataclass(frozen=True, slots=True)
class ScenarioLimits:
    """A scenario's memory cap on the server tree, the server's open-files limit, and whether
    the monitor counts CLOSE_WAIT sockets: the same for every cell of the scenario."""

    memory_cap_mb: float | None
    nofile: int | None
    close_wait: bool


@dataclass(frozen=True, slots=True)
class _Point:
    """One cell before trials: what runs, with which parameters, where, under which limits."""

    scenario: str
    server: str
    args: tuple[str, ...]
    params: CellParams
    placement: Placement
    limits: ScenarioLimits


def _limits(sc: Mapping[str, Any], index: int, default_cap: float | None) -> ScenarioLimits:
    where = f"scenarios[{index}]"
    shape = SCENARIOS.get(str(sc.get("name")), {})
    cap = sc.get("memory_cap_mb", default_cap)
    nofile = sc.get("nofile", shape.get("nofile"))
    return ScenarioLimits(
        None if cap is None else _num(cap, f"{where}.memory_cap_mb", lo=1.0),
        None if nofile is None else _int(nofile, f"{where}.nofile", lo=16),
        bool(shape.get("close_wait", False)),
    )


def _expand(
    sc: Mapping[str, Any],
    index: int,
    default_servers: list[str],
    server_args: dict[str, tuple[str, ...]],
    default_placement: Placement,
    duration: float,
    warmup: float,
    *,
    unpinned: bool,
) -> list[tuple[str, str, tuple[str, ...], CellParams, Placement]]:
    where = f"scenarios[{index}]"
    _no_unknown(sc, SCENARIO_KEYS, where)
    name = _str(sc.get("name"), f"{where}.name")
    if name not in SCENARIOS:
        raise ProfileError(f"{where}: unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    where = f"scenario {name!r}"
    shape = SCENARIOS[name]
    servers = _servers(sc.get("servers", shape.get("servers", default_servers)), f"{where}.servers")
    conns = _int_list(sc.get("connections", shape.get("connections")), f"{where}.connections")
    sizes = _int_list(sc.get("size", shape.get("size")), f"{where}.size")
    # The load generator's own limits, checked here so a bad profile fails before any cell runs.
    big = [z for z in sizes if z > MAX_SIZE]
    if big:
        raise ProfileError(f"{where}.size: {big} over the load generator's {MAX_SIZE:,} bytes")
    many = [c for c in conns if c > MAX_CONNECTIONS]
    if many:
        raise ProfileError(
            f"{where}.connections: {many} over the load generator's {MAX_CONNECTIONS:,}"
        )
    d = _num(sc.get("duration_s", duration), f"{where}.duration_s", lo=0.05)
    w = _num(sc.get("warmup_s", warmup), f"{where}.warmup_s", lo=0.0)
    placements: list[Placement] = [
        _placement(p, f"{where}.placements")
        for p in _list(sc.get("placements", shape.get("placements", [default_placement])), where)
    ]
    if unpinned:
        placements = ["unpinned"]
    fractions: list[float | None] = [None]
    rates: list[float | None] = [None]
    if "rates" in shape:  # a fixed offered rate, requests/s, the same for every server
        raw = _list(sc.get("rates", shape["rates"]), f"{where}.rates")
        rates = [_num(r, f"{where}.rates", lo=1.0) for r in raw]
    elif "rates" in sc:
        raise ProfileError(
            f"{where}: rates only applies to the at-load and shared-counter scenarios"
        )
    if "rate_fractions" in shape:
        raw = _list(sc.get("rate_fractions", shape["rate_fractions"]), f"{where}.rate_fractions")
        fractions = [_num(f, f"{where}.rate_fractions", lo=0.001) for f in raw]
    elif "rate_fractions" in sc:
        raise ProfileError(f"{where}: rate_fractions only applies to the open-loop scenario")
    # A scenario's own server_args replace the profile's for the servers it names.
    server_args = {**server_args, **_server_args(sc.get("server_args", {}))}
    if name != "shared-counter" and ("counter_modes" in sc or "counter_off" in sc):
        raise ProfileError(f"{where}: counter_modes only applies to the shared-counter scenario")
    active: int | None = None
    if "active" in shape:
        active = _int(sc.get("active", shape["active"]), f"{where}.active", lo=1)
        small = [c for c in conns if c < active]
        if small:
            raise ProfileError(f"{where}: connections {small} below the {active} active ones")
    elif "active" in sc:
        raise ProfileError(f"{where}: active only applies to the scale scenario")
    if "nofile" in sc and name not in FAULT_SCENARIOS:
        raise ProfileError(f"{where}: nofile only applies to the {FAULT_SCENARIOS} scenarios")
    # A fault scenario runs each server twice: with the book's bug switched on, and without.
    variants: list[tuple[str, ...]] = [()]
    if "fault_arg" in shape:
        variants = [(shape["fault_arg"],), ()]
    if shape.get("xray"):
        lacking = [n for n in servers if Option.XRAY not in SERVERS[n].options]
        if lacking:
            raise ProfileError(f"{where}: {lacking} record no X-ray (only forking servers do)")
    elif "gc_freeze" in sc:
        raise ProfileError(f"{where}: gc_freeze only applies to the xray scenario")
    frozen_raw = sc.get("gc_freeze", shape.get("gc_freeze"))
    gc_freeze = [] if not frozen_raw else _servers(frozen_raw, f"{where}.gc_freeze")
    cold = [n for n in gc_freeze if Option.GC_FREEZE not in SERVERS[n].options]
    if cold:
        raise ProfileError(f"{where}.gc_freeze: {cold} take no --gc-freeze")

    cores: list[int | None] = [None]
    if "server_cpus" in shape:
        cores = list(_int_list(sc.get("server_cpus", shape["server_cpus"]), f"{where}.server_cpus"))
    elif "server_cpus" in sc:
        raise ProfileError(f"{where}: server_cpus only applies to the cores scenario")

    out = []
    for conn in conns:
        for size in sizes:
            for frac, rate in [(f, r) for f in fractions for r in rates]:
                for where_ in placements:
                    for server in servers:
                        for counter in _counters(name, sc, server, where):
                            params = CellParams(
                                mode=shape["mode"],
                                load=shape["load"],
                                connections=conn,
                                size=size,
                                duration_s=d,
                                warmup_s=w,
                                shared_counter=counter,
                                rate_fraction=frac,  # its rate is measured in this run (runner)
                                rate=rate,  # or fixed by the scenario (at-load)
                                active=active,
                                idle=None if active is None else conn - active,
                            )
                            args = server_args.get(server, ())
                            if shape.get("pool_per_connection") and (
                                Option.WORKERS in SERVERS[server].options
                            ):
                                args = (*args, "--workers", str(conn))
                            if counter is not None:
                                args = (*args, "--shared-counter", counter)
                            for extra in variants:
                                for k in cores:
                                    own = replace(params, server_cpus=k)
                                    out.append((name, server, (*args, *extra), own, where_))
                            if server in gc_freeze:
                                frozen = replace(params, gc_freeze=True)
                                out.append((name, server, (*args, "--gc-freeze"), frozen, where_))
    return out


def _counters(name: str, sc: Mapping[str, Any], server: str, where: str) -> list[str | None]:
    if name != "shared-counter":
        return [None]
    modes = sc.get("counter_modes", DEFAULT_COUNTER_MODES)
    if not isinstance(modes, Mapping):
        raise ProfileError(f"{where}.counter_modes: expected a table of model or server -> list")
    spec = SERVERS[server]
    if not spec.counter_modes:
        return []  # keeps no counter (the C servers): no cell in this scenario
    model = spec.model.value
    # A server's own entry wins over its model's: inetd, say, may keep no counter at all.
    chosen = modes.get(server, modes.get(model, DEFAULT_COUNTER_MODES[model]))
    counters: list[str | None] = []
    if sc.get("counter_off", True):
        counters.append(None)
    for raw in _list(chosen, f"{where}.counter_modes"):
        mode = _str(raw, f"{where}.counter_modes")
        if mode not in spec.counter_modes:
            raise ProfileError(
                f"{where}.counter_modes: {server} keeps no {mode!r} counter "
                f"(it offers {', '.join(spec.counter_modes)})"
            )
        counters.append(mode)
    return counters


def _ref_key(server: str, args: tuple[str, ...], params: CellParams, where: str) -> str:
    """What an open-loop cell and its closed-loop reference have in common."""
    return _canon(
        {
            "server": server,
            "args": list(args),
            "mode": params.mode,
            "connections": params.connections,
            "size": params.size,
            "placement": where,
        }
    )


def closed_ref_key(spec: CellSpec) -> str | None:
    """The reference key a closed-loop cell offers to open-loop cells (None: not eligible)."""
    p = spec.params
    if p.load != "closed" or p.shared_counter is not None or p.active is not None or p.server_cpus:
        return None  # a scale cell's rate is its few active connections': no reference
    return _ref_key(spec.server, spec.server_args, p, spec.placement)


def _cell(
    scenario: str,
    server: str,
    args: tuple[str, ...],
    params: CellParams,
    placement: Placement,
    trial: int,
    timeout: float,
    ref: str | None,
    nofile: int | None = None,
) -> CellSpec:
    identity: dict[str, Any] = {
        "scenario": scenario,
        "server": server,
        "args": list(args),
        # an open loop's measured rate is not part of its identity; a fixed rate (at-load) is
        "params": {
            k: v for k, v in params.to_json().items() if k != "rate" or params.rate_fraction is None
        },
        "placement": placement,
    }
    if nofile is not None:  # only when set: every other cell keeps the id it always had
        identity["nofile"] = nofile
    point = _canon(identity)
    digest = hashlib.sha256(point.encode()).hexdigest()[:8]
    parts = [scenario, server, f"c{params.connections}", f"s{params.size}"]
    if params.shared_counter is not None:
        parts.append(f"sc-{params.shared_counter}")
    if params.rate_fraction is not None:
        parts.append(f"f{params.rate_fraction:g}")
    elif params.rate is not None:
        parts.append(f"r{params.rate:g}")
    if params.gc_freeze:
        parts.append("gcfreeze")
    if params.server_cpus:
        parts.append(f"cpus{params.server_cpus}")
    if scenario in FAULT_SCENARIOS:
        parts.append(
            "fault"
            if any(a.startswith("--") and a[2:] in FAULT_SCENARIOS for a in args)
            else "control"
        )
    parts += [placement, f"t{trial}", digest]
    cell_id = "_".join(parts)
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in cell_id)
    return CellSpec(
        cell_id=safe,
        point_key=point,
        scenario=scenario,
        server=server,
        server_args=args,
        params=params,
        placement=placement,
        trial=trial,
        load=load_config(params, timeout),
        ref_point=ref,
    )


def load_config(params: CellParams, timeout_s: float) -> LoadConfig:
    """The cell's load, not yet aimed: a scale cell's `connections` are all it holds, of which
    the load generator measures `active` and only holds the rest (`idle_connections`)."""
    return LoadConfig(
        host=loadargs.LOOPBACK,
        port=0,  # the server's, once it listens
        connections=params.measured,
        mode=params.mode,
        load=params.load,
        size=params.size,
        duration_s=params.duration_s,
        warmup_s=params.warmup_s,
        timeout_s=timeout_s,
        idle_connections=params.held_idle,
        source_addrs=loadargs.default_source_addrs(loadargs.LOOPBACK),
    )


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- small checkers


def _no_unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {unknown} (known: {sorted(known)})")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _int(value: Any, where: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ProfileError(f"{where}: expected an integer >= {lo}, got {value!r}")
    return value


def _num(value: Any, where: str, lo: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < lo:
        raise ProfileError(f"{where}: expected a number >= {lo}, got {value!r}")
    return float(value)


def _list(value: Any, where: str) -> list[Any]:
    if isinstance(value, list) and value:
        return value
    if value is None:
        raise ProfileError(f"{where}: missing")
    if isinstance(value, str | int | float):
        return [value]
    raise ProfileError(f"{where}: expected a non-empty list, got {value!r}")


def _int_list(value: Any, where: str) -> list[int]:
    return [_int(v, where, lo=1) for v in _list(value, where)]


def _servers(value: Any, where: str) -> list[str]:
    names = [_str(v, where) for v in _list(value, where)]
    for n in names:
        if n not in SERVERS:
            raise ProfileError(f"{where}: unknown server {n!r} (known: {', '.join(SERVERS)})")
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: a server is listed twice")
    return names


def _placement(value: Any, where: str) -> Placement:
    if value not in PLACEMENTS:
        raise ProfileError(f"{where}: placement must be one of {PLACEMENTS}, got {value!r}")
    return cast(Placement, value)


def _server_args(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise ProfileError("server_args: expected a table of server -> list of arguments")
    out: dict[str, tuple[str, ...]] = {}
    for server, args in value.items():
        _servers([server], "server_args")
        if not isinstance(args, Sequence) or isinstance(args, str):
            raise ProfileError(f"server_args.{server}: expected a list of strings")
        out[server] = tuple(_str(a, f"server_args.{server}") for a in args)
    return out
