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
reads exactly these. A profile's TOML is typed by bench/scenarios.py's tables and read by the
record layer's one typed reader (records.schema.from_dict: types and unknown keys); this module
checks only what types cannot say (ranges, names, keys that fit some scenarios only).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from bench.scenarios import (
    DEFAULT_COUNTER_MODES,
    DEFAULT_MEM_AVAILABLE_FLOOR,
    FAULT_SCENARIOS,
    PLACEMENTS,
    SCENARIOS,
    ProfileTable,
    ScenarioTable,
    widen,
)
from records import loadargs, schema
from records.limits import MAX_CONNECTIONS, MAX_SIZE
from records.registry import SERVERS, Option
from records.schema import CellParams, LoadConfig, Mode, Placement

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
    if not data.get("scenarios"):
        raise ProfileError("profile: needs at least one [[scenarios]] table")
    typed = {**data, "scenarios": [widen(sc) if isinstance(sc, Mapping) else sc
                                   for sc in data["scenarios"]]}  # fmt: skip
    if "servers" in data:
        typed["servers"] = widen({"servers": data["servers"]})["servers"]
    try:
        prof = schema.from_dict(ProfileTable, typed, "profile")
    except schema.SchemaError as exc:
        raise ProfileError(str(exc).replace("unknown field(s)", "unknown key(s)")) from exc
    name = prof.name
    trials = int(_at_least(prof.trials, "trials", 1))
    duration = _at_least(prof.duration_s, "duration_s", 0.05)
    warmup = _at_least(prof.warmup_s, "warmup_s", 0.0)
    timeout = _at_least(prof.timeout_s, "timeout_s", 0.1)
    servers = _servers(prof.servers if prof.servers is not None else list(SERVERS), "servers")
    placement = _placement(prof.placement, "placement")
    server_args = {k: tuple(v) for k, v in prof.server_args.items()}
    _servers(list(server_args), "server_args")
    memory_cap = None if prof.memory_cap_mb is None else (
        _at_least(prof.memory_cap_mb, "memory_cap_mb", 1.0))  # fmt: skip
    floor = _at_least(prof.mem_available_floor, "mem_available_floor", 0.0)
    if floor >= 1.0:
        raise ProfileError(f"mem_available_floor: a share of MemTotal below 1, got {floor}")
    client_workers = prof.client_workers
    if client_workers is not None:
        _at_least(client_workers, "client_workers", 1)
    microbench = Microbench(run=prof.microbench.run, fast=prof.microbench.fast)
    scenarios = prof.scenarios

    points: list[_Point] = []
    for i, sc in enumerate(scenarios):
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
    budget = prof.time_budget_s
    return Profile(
        name=name,
        description=prof.description,
        data=data,
        cells=tuple(cells),
        microbench=microbench,
        client_workers=client_workers,
        time_budget_s=None if budget is None else _at_least(budget, "time_budget_s", 1.0),
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


def _limits(sc: ScenarioTable, index: int, default_cap: float | None) -> ScenarioLimits:
    where = f"scenarios[{index}]"
    shape = SCENARIOS.get(sc.name, {})
    cap = sc.memory_cap_mb if sc.memory_cap_mb is not None else default_cap
    nofile = sc.nofile if sc.nofile is not None else shape.get("nofile")
    return ScenarioLimits(
        None if cap is None else _at_least(cap, f"{where}.memory_cap_mb", 1.0),
        None if nofile is None else int(_at_least(nofile, f"{where}.nofile", 16)),
        bool(shape.get("close_wait", False)),
    )


def _expand(
    sc: ScenarioTable,
    index: int,
    default_servers: list[str],
    server_args: dict[str, tuple[str, ...]],
    default_placement: Placement,
    duration: float,
    warmup: float,
    *,
    unpinned: bool,
) -> list[tuple[str, str, tuple[str, ...], CellParams, Placement]]:
    name = sc.name
    if name not in SCENARIOS:
        raise ProfileError(
            f"scenarios[{index}]: unknown scenario {name!r} (known: {', '.join(SCENARIOS)})"
        )
    where = f"scenario {name!r}"
    shape = SCENARIOS[name]

    def given(key: str, value: Any, default: Any = None) -> Any:
        """The scenario's own value, else its shape's, else `default`; a missing one is an
        error (a shape with no default for it, and none given)."""
        got = value if value is not None else shape.get(key, default)
        if got is None:
            raise ProfileError(f"{where}.{key}: missing")
        return got

    servers = _servers(given("servers", sc.servers, default_servers), f"{where}.servers")
    conns = _counts(given("connections", sc.connections), f"{where}.connections")
    sizes = _counts(given("size", sc.size), f"{where}.size")
    # The load generator's own limits, checked here so a bad profile fails before any cell runs.
    big = [z for z in sizes if z > MAX_SIZE]
    if big:
        raise ProfileError(f"{where}.size: {big} over the load generator's {MAX_SIZE:,} bytes")
    many = [c for c in conns if c > MAX_CONNECTIONS]
    if many:
        raise ProfileError(
            f"{where}.connections: {many} over the load generator's {MAX_CONNECTIONS:,}"
        )
    d = _at_least(sc.duration_s if sc.duration_s is not None else duration,
                  f"{where}.duration_s", 0.05)  # fmt: skip
    w = _at_least(sc.warmup_s if sc.warmup_s is not None else warmup, f"{where}.warmup_s", 0.0)
    placements: list[Placement] = [
        _placement(p, f"{where}.placements")
        for p in given("placements", sc.placements, [default_placement])
    ]
    if unpinned:
        placements = ["unpinned"]
    fractions: list[float | None] = [None]
    rates: list[float | None] = [None]
    if "rates" in shape:  # a fixed offered rate, requests/s, the same for every server
        rates = [_at_least(r, f"{where}.rates", 1.0) for r in given("rates", sc.rates)]
    elif sc.rates is not None:
        raise ProfileError(
            f"{where}: rates only applies to the at-load and shared-counter scenarios"
        )
    if "rate_fractions" in shape:
        fractions = [
            _at_least(f, f"{where}.rate_fractions", 0.001)
            for f in given("rate_fractions", sc.rate_fractions)
        ]
    elif sc.rate_fractions is not None:
        raise ProfileError(f"{where}: rate_fractions only applies to the open-loop scenario")
    # A scenario's own server_args replace the profile's for the servers it names.
    own_args = {k: tuple(v) for k, v in (sc.server_args or {}).items()}
    _servers(list(own_args), f"{where}.server_args")
    server_args = {**server_args, **own_args}
    if name != "shared-counter" and (sc.counter_modes is not None or not sc.counter_off):
        raise ProfileError(f"{where}: counter_modes only applies to the shared-counter scenario")
    active: int | None = None
    if "active" in shape:
        active = int(_at_least(given("active", sc.active), f"{where}.active", 1))
        small = [c for c in conns if c < active]
        if small:
            raise ProfileError(f"{where}: connections {small} below the {active} active ones")
    elif sc.active is not None:
        raise ProfileError(f"{where}: active only applies to the scale scenario")
    if sc.nofile is not None and name not in FAULT_SCENARIOS:
        raise ProfileError(f"{where}: nofile only applies to the {FAULT_SCENARIOS} scenarios")
    # A fault scenario runs each server twice: with the book's bug switched on, and without.
    variants: list[tuple[str, ...]] = [()]
    if "fault_arg" in shape:
        variants = [(shape["fault_arg"],), ()]
    if shape.get("xray"):
        lacking = [n for n in servers if Option.XRAY not in SERVERS[n].options]
        if lacking:
            raise ProfileError(f"{where}: {lacking} record no X-ray (only forking servers do)")
    elif sc.gc_freeze is not None:
        raise ProfileError(f"{where}: gc_freeze only applies to the xray scenario")
    frozen_raw = sc.gc_freeze if sc.gc_freeze is not None else shape.get("gc_freeze")
    gc_freeze = [] if not frozen_raw else _servers(frozen_raw, f"{where}.gc_freeze")
    cold = [n for n in gc_freeze if Option.GC_FREEZE not in SERVERS[n].options]
    if cold:
        raise ProfileError(f"{where}.gc_freeze: {cold} take no --gc-freeze")

    modes = [shape["mode"]]
    rtts: list[int | None] = [None]
    if "rtts_ms" in shape:  # the link scenario
        modes = [_mode(m, f"{where}.modes") for m in given("modes", sc.modes)]
        rtts = [
            None if r == 0 else round(_at_least(r, f"{where}.rtts_ms", 0.0) * 1000)
            for r in given("rtts_ms", sc.rtts_ms)
        ]
    elif sc.modes is not None or sc.rtts_ms is not None:
        raise ProfileError(f"{where}: modes and rtts_ms only apply to the link scenario")

    cores: list[int | None] = [None]
    if "server_cpus" in shape:
        cores = list(_counts(given("server_cpus", sc.server_cpus), f"{where}.server_cpus"))
    elif sc.server_cpus is not None:
        raise ProfileError(f"{where}: server_cpus only applies to the cores scenario")

    out = []
    for conn, mode, rtt in [(c, m, r) for c in conns for m in modes for r in rtts]:
        for size in sizes:
            for frac, rate in [(f, r) for f in fractions for r in rates]:
                for where_ in placements:
                    for server in servers:
                        for counter in _counters(name, sc, server, where):
                            params = CellParams(
                                mode=mode,
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
                                rtt_us=rtt,
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


def _counters(name: str, sc: ScenarioTable, server: str, where: str) -> list[str | None]:
    if name != "shared-counter":
        return [None]
    modes = sc.counter_modes if sc.counter_modes is not None else DEFAULT_COUNTER_MODES
    spec = SERVERS[server]
    if not spec.counter_modes:
        return []  # keeps no counter (the C servers): no cell in this scenario
    model = spec.model.value
    # A server's own entry wins over its model's: inetd, say, may keep no counter at all.
    chosen = modes.get(server, modes.get(model, DEFAULT_COUNTER_MODES[model]))
    counters: list[str | None] = []
    if sc.counter_off:
        counters.append(None)
    for mode in chosen:
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
    if params.mode == "per-request" and scenario == "link":
        parts.append("perreq")
    if params.rtt_us is not None:
        parts.append(f"rtt{params.rtt_us / 1000:g}ms")
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


def _at_least(value: float, where: str, lo: float) -> float:
    """A range the types cannot say (the typed read has checked it is a number)."""
    if value < lo:
        raise ProfileError(f"{where}: expected a number >= {lo}, got {value!r}")
    return float(value)  # a float, as cell ids have always digested it (5000.0, not 5000)


def _counts(values: list[int], where: str) -> list[int]:
    return [int(_at_least(v, where, 1)) for v in values]


def _servers(names: list[str], where: str) -> list[str]:
    for n in names:
        if n not in SERVERS:
            raise ProfileError(f"{where}: unknown server {n!r} (known: {', '.join(SERVERS)})")
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: a server is listed twice")
    return names


def _mode(value: str, where: str) -> Mode:
    if value not in ("persistent", "per-request"):
        raise ProfileError(f"{where}: a mode is persistent or per-request, got {value!r}")
    return cast(Mode, value)


def _placement(value: str, where: str) -> Placement:
    if value not in PLACEMENTS:
        raise ProfileError(f"{where}: placement must be one of {PLACEMENTS}, got {value!r}")
    return cast(Placement, value)
