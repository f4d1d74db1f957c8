"""The one result format of echobench, written here and read only through `read()`.

Three documents share this schema:

* a **load result** (`kind = "load"`), what one run of `python -m loadgen` measured;
* a **cell result** (`kind = "cell"`), what the runner stores for one cell of a profile: the load
  result plus the server it ran against, where everything was pinned, and the monitor's samples
  of the server's process tree;
* a **manifest** (`kind = "manifest"`), the environment a whole run ran on.

Every document carries `schema_version`. `read()` rejects a version it does not know rather than
guessing, so an old report can never silently misread a newer run (pyperf's `_JSON_VERSION`
does the same). Documents are written with `write_atomic()`: a reader never sees half a file,
and a run interrupted mid-write keeps the previous complete file.

Version history (bump `SCHEMA_VERSION` and add a line on every incompatible change):

* 1 -- 2026-11: first version. Later in 1 (without a bump, which is why 2 exists):
  `LoadConfig.idle_connections`, `LoadResult.idle_opened`/`idle_alive_at_end`,
  `MonitorSample.close_wait`.
* 2 -- 2026-12: cells say what they measured and how sure they are (issue 11).
  `LoadResult.window_start_ns`/`window_end_ns` (the measured window on CLOCK_MONOTONIC),
  `fill` (the fill phase: every connection echoed once before the window), `served`/`starved`
  (connections that completed a request in the window, and those that did not),
  `unfinished` (requests in flight when the window closed, their wait so far in the
  `unfinished` histogram), open loop's `target_rate`/`sent`/`due_unsent`/`rate_miss` and the
  `lateness` histogram (the client's own send lateness); `MonitorSample.cpu_ticks` (per-CPU
  /proc/stat) and `mark`; `MonitorData.window_start`/`window_end` (samples taken exactly at
  the window's edges) and `monitor_cpu_s`; `CellResult.cpu` (whole-window CPU accounting),
  `git` (the code that measured it), `rerun` (why a trial was run again); `Manifest.canary`.
  Version 1 files are read by upgrading them in `parse()`: every field added in 2 has a
  default that means "not measured".
* 3 -- 2026-12: `CellResult.xray` (issue 13): a forking server's per-connection X-ray over the
  measured window (steps from accept to reap, each child's rusage from wait4, the parent's
  page tables and PSS). Version 1 and 2 files are upgraded in `parse()`: `xray` reads as None.
* 4 -- 2026-12: load from other hosts (issue 14, `bench --cluster`). `LoadConfig.cluster_hosts`
  (the addresses a cluster names: the only targets besides loopback), `CellResult.cluster`
  (which worker served, which shards loaded it, each host's clock offset from the scheduler and
  how far apart the shards' windows opened), `Manifest.cluster`/`hosts` (the scheduler and
  every worker's host, roles and environment); `CellResult.failure_kind` (what kind of
  failure `reason` is, so no reader matches reason text) and `server_args` (the arguments the
  profile gave the server, apart from the runner's own). Versions 1 to 3 are upgraded in
  `parse()`: a run on one machine has no cluster (None, empty lists), and the failure kind and
  server arguments read as None (readers fall back on the reason's words and the argv).
  Later in 4, with the file format unchanged: `CellResult.params` is read as a typed
  `CellParams` (the same JSON object, optional fields only when set).
* 5 -- 2026-12: intervals that hold, CPU that is the server's own (issue 20).
  `MonitorSample.cgroup_ns` (the server tree's own cpuacct cgroup, per CPU, cumulative ns);
  `CpuAccount.server_source` may be "cgroup", with `foreign_s` (CPU that ran on the server's
  CPUs but not in its tree over the window), `foreign_limit_s` (what the counters' resolution
  explains) and `foreign_flag`; `CellResult.attempt` (1, or 2 for a re-run: earlier attempts
  are kept under `attempts/`, never overwritten); `ServerRun.stop_s` and `stop_grace_s` (how
  long the server took to stop, against the grace it was given). Versions 1 to 4 are upgraded
  in `parse()`: no cgroup (None), attempt 1, stop times unknown (None).
* 6 -- 2026-12: a link with a round trip (issue 23). `CellParams.rtt_us` (the round trip the
  cell's clients sit at: two network namespaces joined by a delay element, bench/link.py;
  absent for loopback) and `CellResult.link` (the round trip asked for and measured with TCP
  handshakes, its jitter, the hold each way). Versions 1 to 5 are upgraded in `parse()`: no
  link (None).

Histograms are HdrHistogram's own compressed base64 encoding (`HdrHistogram.encode()`), values
in nanoseconds, so per-worker histograms merge losslessly (`decode_histogram` + `add`). Summary
percentiles beside them are in microseconds, for people reading the JSON by eye.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

SCHEMA_VERSION = 6
KNOWN_VERSIONS = frozenset({1, 2, 3, 4, 5, 6})
ATTEMPTS_DIR = "attempts"  # a run's earlier attempts of re-run or resumed cells (v5)

# HdrHistogram parameters every writer uses, so that any two histograms can be merged.
HIST_LOWEST_NS = 1_000  # 1 us: the finest latency loopback can show with Python at both ends
HIST_HIGHEST_NS = 120_000_000_000  # 120 s: longer than any cell's duration
HIST_SIGNIFICANT_DIGITS = 3

Mode = Literal["persistent", "per-request"]
LoadModel = Literal["closed", "open"]
# Where the two ends of a measurement run: one vocabulary for the whole suite. "split": each end
# pinned to CPUs of its own (a cell: the server on its CPUs, the load generator on the others; a
# microbenchmark: parent and child on different CPUs). "shared": both ends pinned to the same
# CPU(s). "unpinned": left to the scheduler (a cell run with --unpinned). A one-ended
# microbenchmark is pinned to one CPU and has no placement: "n/a".
Placement = Literal["split", "shared", "unpinned"]
MicroPlacement = Literal["split", "shared", "n/a"]
CellStatus = Literal["ok", "failed"]
# What kind of failure a failed cell's `reason` describes (v4; None for an ok cell, or an older
# file): the server would not start / died in the cell / would not stop on SIGTERM; the primer
# connection failed; the load generator failed or was incomplete; the window measured nothing;
# an echo came back wrong; a shared counter disagreed; a scale cell reached the server's limit;
# the memory guard stopped it; the X-ray was unreadable; a cluster worker failed; or the cell
# was not run (its reference failed, or a smaller cell of the same server already stopped).
FailureKind = Literal[
    "server-start",
    "server-died",
    "server-stop",
    "primer",
    "load",
    "empty",
    "echo",
    "counter",
    "limit",
    "memory",
    "xray",
    "cluster",
    "not-run",
]

# Error kinds the load generator counts; a kind outside this set is a programming error.
ERROR_KINDS = (
    "mismatch",  # echoed bytes differ from what was sent
    "short_read",  # the server closed before echoing the whole message
    "reset",  # ECONNRESET / EPIPE
    "refused",  # ECONNREFUSED
    "timeout",  # no (complete) answer within the timeout
    "addr_not_avail",  # EADDRNOTAVAIL: the client ran out of (source address, port) pairs
    "other",  # any other OSError, with its errno name in `error_details`
)


class SchemaError(ValueError):
    """A document that is not a result this version of echobench can read."""


# --------------------------------------------------------------------------- load result


@dataclass(frozen=True, slots=True)
class LoadConfig:
    host: str
    port: int
    connections: int
    mode: Mode = "persistent"
    load: LoadModel = "closed"
    rate: float | None = None  # total requests/s, open loop only
    size: int = 64
    duration_s: float = 5.0
    warmup_s: float = 1.0
    workers: int = 1
    cpus: tuple[int, ...] | None = None
    source_addrs: int = 0  # 0: kernel's choice of source address
    timeout_s: float = 10.0
    # issue 7's scale cells: connections opened before the measured phase and only held (no
    # traffic), each checked with one echo at the end; 0 for every other cell.
    idle_connections: int = 0
    # v4: addresses of the hosts a cluster names (bench --cluster): besides loopback, the only
    # targets the load generator accepts. Empty on one machine.
    cluster_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Summary of one histogram, in microseconds."""

    count: int
    min_us: float
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float


@dataclass(frozen=True, slots=True)
class Histogram:
    encoded: str  # HdrHistogram compressed base64, values in nanoseconds
    summary: Percentiles
    unit: Literal["ns"] = "ns"


@dataclass(frozen=True, slots=True)
class TimelineSecond:
    second: int  # whole seconds since the measured phase began
    completed: int
    errors: int


@dataclass(frozen=True, slots=True)
class ClientCpu:
    worker: int
    user_s: float
    sys_s: float
    wall_s: float
    cpus_given: int  # CPUs this worker was allowed to run on

    @property
    def utilisation(self) -> float:
        """Fraction of the CPU it was given that the worker used (1.0 = all of it)."""
        given = self.wall_s * max(1, self.cpus_given)
        return (self.user_s + self.sys_s) / given if given > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Fill:
    """The fill phase (v2): every persistent connection echoes once before the window opens.

    A cell's window starts only once the connections it asks for are connected *and served*;
    for a fork server the fill time is the fork cost at scale. The phase ends when every
    connection has echoed, when no connection has been served for `stall_s` (a pool that serves
    N at a time never serves the rest), or at `deadline_s`.
    """

    asked: int  # connections the cell asks for
    connected: int  # established before the window
    echoed: int  # connected and echoed once before the window opened
    fill_s: float  # from the first connect to the last fill echo (or to giving up)
    deadline_s: float
    stall_s: float
    ended: Literal["all", "stalled", "deadline", "stopped"]


RATE_MISS_LIMIT = 0.05  # open loop: an achieved rate more than 5% below target is a miss


@dataclass(frozen=True, slots=True)
class LoadResult:
    config: LoadConfig
    started_at: str  # ISO 8601 UTC, wall clock, for humans
    ended_at: str
    elapsed_s: float  # measured phase, from a monotonic clock
    complete: bool  # False: the run failed midway; what it measured is still here
    failure: str | None
    requests: int  # completed and verified byte for byte
    bytes_sent: int
    bytes_received: int  # echoed and verified, warm-up excluded
    bytes_received_total: int  # echoed and verified, warm-up included (for STATS checks)
    connections_opened: int
    errors: dict[str, int]  # kind (ERROR_KINDS) -> count
    error_details: dict[str, int]  # "other:<errno name>" etc. -> count
    histograms: dict[str, Histogram]  # "latency", "service" (open loop), "connect" (per-request)
    timeline: list[TimelineSecond]
    client_cpu: list[ClientCpu]
    client_saturated: bool
    client_port_bound: bool
    requests_per_s: float
    # Idle connections (LoadConfig.idle_connections): how many opened, and how many still echoed
    # once after the measured phase; their failures are in `errors` too and, by kind, in
    # `error_details` as "idle:<kind>".
    idle_opened: int = 0
    idle_alive_at_end: int = 0
    # v2: the measured window on CLOCK_MONOTONIC (shared by every process of the machine), so
    # the runner can account the server's CPU over exactly this window.
    window_start_ns: int = 0
    window_end_ns: int = 0
    # v2: before the window, every connection is echoed once (persistent mode); what that gave.
    fill: Fill | None = None
    # v2: connections (persistent) or request slots (per-request) that completed at least one
    # request in the window, and the ones that did not (a starved client: never a capacity).
    served: int = 0
    starved: int = 0
    # v2: requests still in flight when the window closed: counted, their wait so far is in
    # the `unfinished` histogram (a lower bound: censored at the window's end), never dropped.
    unfinished: int = 0
    # v2, open loop only: the rate asked for, requests sent in the window, requests that fell
    # due in the window but were never sent (the connection was still waiting for the previous
    # echo), and whether the achieved rate missed the target by more than RATE_MISS_LIMIT.
    target_rate: float | None = None
    sent: int = 0
    due_unsent: int = 0
    rate_miss: bool = False
    schema_version: int = SCHEMA_VERSION
    kind: Literal["load"] = "load"


# --------------------------------------------------------------------------- cell result


@dataclass(frozen=True, slots=True)
class MonitorSample:
    """One look at the server's whole process tree (parent + children + threads)."""

    t_s: float  # since the monitor started, monotonic
    cpu_user_s: float  # cumulative over the tree, including reaped children
    cpu_sys_s: float
    rss_bytes: int  # summed over the tree: counts shared pages once per process
    pss_bytes: int  # summed over the tree from smaps_rollup: shared pages split fairly
    processes: int
    threads: int
    fds: int
    zombies: int
    ctx_voluntary: int
    ctx_involuntary: int
    # Server-side TCP sockets on the server's port in CLOSE_WAIT (the client closed, the server
    # has not): sampled only for the descriptor-leak experiment (issue 7), else None.
    close_wait: int | None = None
    # v2: /proc/stat of every CPU of the machine at this instant, cumulative clock ticks.
    cpu_ticks: dict[str, CpuTicks] | None = None
    # v2: "start"/"end" for the samples taken at the edges of the load's measured window.
    mark: str | None = None
    # v5: the server tree's cpuacct cgroup, cumulative ns per CPU, all and system (None: no
    # cgroup here).
    cgroup_ns: list[int] | None = None
    cgroup_sys_ns: list[int] | None = None


@dataclass(frozen=True, slots=True)
class CpuTicks:
    """One CPU's line of /proc/stat (cumulative, in USER_HZ ticks)."""

    user: int  # user + nice
    system: int
    idle: int  # idle + iowait
    irq: int
    softirq: int
    steal: int

    @property
    def busy(self) -> int:
        return self.user + self.system + self.irq + self.softirq


@dataclass(frozen=True, slots=True)
class MonitorData:
    interval_s: float
    samples: list[MonitorSample]
    dropped_samples: int = 0  # samples that failed (process vanished mid-read): counted, not hidden
    # v2: indexes into `samples` of the samples taken at the window's edges (None: not taken).
    window_start: int | None = None
    window_end: int | None = None
    # The monitor thread's own CPU time inside the window (its whole life when no window was
    # seen): it runs on the client's CPUs, so this is part of what they were busy with.
    monitor_cpu_s: float = 0.0
    started_ns: int = 0  # CLOCK_MONOTONIC at t_s = 0, to line samples up with the load's window


@dataclass(frozen=True, slots=True)
class ServerRun:
    name: str  # registry name
    argv: list[str]
    cpus: tuple[int, ...] | None
    pid: int | None
    ready_s: float | None  # from spawn to the READY line
    exit_code: int | None
    clean_exit: bool  # exited 0 after SIGTERM, nothing of its process group left
    leftovers: list[str]  # what was found still running or unreaped, then killed
    stderr_tail: list[str]
    stats: dict[str, int] | None = None  # parsed "STATS k=v ..." line, if printed
    # v5: how long the stop took (SIGTERM to the group's end) and the grace it was given
    stop_s: float | None = None
    stop_grace_s: float | None = None


@dataclass(frozen=True, slots=True)
class CpuAccount:
    """Where the CPU went over exactly the measured window (v2), from counters, not rates.

    `server_*` is the busy time of the server's own CPUs (split placement), else the server's
    whole process tree (live members plus children reaped during the window, through the
    parent's cutime/cstime), capped at the CPUs the server was pinned to (see
    bench/accounting.py for why the tree alone undercounts a fork server's live children).
    `*_cpus_busy_s` is /proc/stat's busy time (user, system, irq, softirq) of those CPUs,
    whoever used it: on the client's CPUs that includes the monitor and anything else there,
    which is what decides `client_saturated`.
    """

    window_s: float
    server_cpus: int  # how many CPUs the server was given (0: unpinned, no cap)
    server_user_s: float
    server_sys_s: float
    server_capped: bool
    # v5 "cgroup": the tree's own cpuacct cgroup; "cpu": /proc/stat of the server's own CPUs;
    # "tree": its processes' counters
    server_source: Literal["cgroup", "cpu", "tree"]
    server_tree_s: float  # the tree's counters over the window (a cross-check; see accounting)
    server_cpus_busy_s: float | None  # None: unpinned
    client_cpus: int
    client_cpus_busy_s: float | None
    client_busy_share: float | None  # client CPUs' busy time / (window x client CPUs)
    client_saturated: bool
    monitor_cpu_s: float
    steal_s: float  # steal time over the window, summed over the CPUs used
    per_cpu: dict[str, CpuTicks]  # /proc/stat deltas over the window, per CPU used
    # v5, with a cgroup: busy time of the server's CPUs that was not the server's (another
    # process, the runner, a neighbour), what the counters' resolution explains, and whether
    # the foreign CPU was beyond that (the cell is flagged)
    foreign_s: float | None = None
    foreign_limit_s: float | None = None
    foreign_flag: bool = False

    @property
    def server_cpu_s(self) -> float:
        return self.server_user_s + self.server_sys_s

    @property
    def server_cpus_used(self) -> float:
        """The server's CPU over the window in CPUs, never above `server_cpus` when pinned.

        Divided in whole microseconds, as the figures are recorded: the float quotient of the
        float sum can land one ulp over the cap (1.0000000000000002 CPUs), the quotient of
        integers is rounded once and cannot."""
        cpu_us = round(self.server_user_s * 1e6) + round(self.server_sys_s * 1e6)
        window_us = round(self.window_s * 1e6)
        return cpu_us / window_us if window_us > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Spread:
    """A per-connection figure over a cell's connections: how many, and its 10/50/90th
    percentiles (nearest rank)."""

    n: int
    p10: float
    p50: float
    p90: float


@dataclass(frozen=True, slots=True)
class Xray:
    """One forking server's connections over the measured window (v3), from its `--xray` file
    (records/xray.py reads it; servers/xray.py and servers/c/process.c write it).

    `steps_us`: durations between the steps of Fig. 12.5 (records.xray.STEPS names them), in
    microseconds; `child`: each child's rusage as wait4 returned it (minflt, majflt, utime_us,
    stime_us, nvcsw, nivcsw); `timeline_us`: one real connection (the one whose accept-to-reap
    time is the median) as each step's time since its accept; the parent's page tables, PSS
    and RSS when it stopped."""

    connections: int  # accepted in the window with every step recorded
    incomplete: int  # accepted in the window, a step missing (e.g. not reaped before the stop)
    dropped: int  # beyond the recorder's slots: counted, never silent
    steps_us: dict[str, Spread]
    child: dict[str, Spread]
    timeline_us: dict[str, float]
    parent_vmpte_kb: int | None
    parent_pss_kb: int | None
    parent_rss_kb: int | None


@dataclass(frozen=True, slots=True)
class GitStamp:
    commit: str | None
    dirty: bool | None


@dataclass(frozen=True, slots=True)
class Shard:
    """One load-generator shard of a cluster cell (v4): a `python -m loadgen` run on one host."""

    index: int
    worker: str  # the Dask worker's address
    host: str  # its host's address, as the cluster names it
    hostname: str
    connections: int
    clock_offset_s: float  # the scheduler's clock minus this host's (Dask's own estimate)
    window_start_s: float | None  # the shard's window opened at this scheduler time (UNIX s)
    requests: int
    requests_per_s: float
    client_saturated: bool
    failure: str | None


@dataclass(frozen=True, slots=True)
class ClusterRun:
    """Where a cluster cell ran (v4): the server's worker and the load's shards."""

    scheduler: str
    server_worker: str
    server_host: str
    server_hostname: str
    server_clock_offset_s: float
    shards: list[Shard]
    # latest minus earliest shard window opening, on the scheduler's clock: how far the
    # shards' windows are from being one window (the merged rate assumes they overlap)
    start_skew_s: float | None


@dataclass(frozen=True, slots=True)
class CellParams:
    """A cell's scenario parameters, as the profile expanded them: what the cell's label says.

    Stored as the same JSON object files always held (`to_json`): the optional fields appear
    only when set, and `shared_counter` always, because a cell's id is a digest of this object
    and a run resumed or compared across versions must find its cells under the same ids."""

    mode: Mode
    load: LoadModel
    connections: int  # every connection the cell holds (a scale cell: active + idle)
    size: int
    duration_s: float
    warmup_s: float
    shared_counter: str | None = None
    rate_fraction: float | None = None  # open loop: the share of the closed-loop rate offered
    rate: float | None = None  # open loop: requests/s, measured in the run (None until then)
    active: int | None = None  # a scale cell: the connections that carry the traffic...
    idle: int | None = None  # ... and those that are only held
    server_cpus: int | None = None  # the cores sweep: CPUs given to the server
    gc_freeze: bool = False  # the X-ray's variant with gc.freeze() in the forking parent
    rtt_us: int | None = None  # v6: the link's round trip (bench/link.py); None: loopback

    @property
    def measured(self) -> int:
        """The connections that carry the measured traffic."""
        return self.active if self.active is not None else self.connections

    @property
    def held_idle(self) -> int:
        return self.idle or 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "load": self.load,
            "connections": self.connections,
            "size": self.size,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "shared_counter": self.shared_counter,
        }
        if self.rate_fraction is not None or self.rate is not None:
            out["rate_fraction"] = self.rate_fraction
            out["rate"] = self.rate
        if self.active is not None or self.idle is not None:
            out["active"] = self.active
            out["idle"] = self.idle
        if self.server_cpus is not None:
            out["server_cpus"] = self.server_cpus
        if self.gc_freeze:
            out["gc_freeze"] = True
        if self.rtt_us is not None:
            out["rtt_us"] = self.rtt_us
        return out


@dataclass(frozen=True, slots=True)
class LinkRun:
    """The link a cell ran across (v6): asked for, and measured with TCP handshakes."""

    rtt_us: int  # the round trip asked for
    measured_us: float  # median of the probe's handshakes, before the cell
    jitter_us: float  # p90 - p10 of those handshakes
    one_way_us: int  # what the delay element held each packet for


@dataclass(frozen=True, slots=True)
class CellResult:
    cell_id: str  # unique in a run: scenario/server/params/trial
    scenario: str
    server: str
    trial: int
    placement: Placement
    params: CellParams  # the scenario parameters, as the profile gave them
    status: CellStatus
    reason: str | None
    load: LoadResult | None
    server_run: ServerRun | None
    monitor: MonitorData | None
    started_at: str = ""
    ended_at: str = ""
    notes: list[str] = field(default_factory=list)
    cpu: CpuAccount | None = None  # v2: whole-window CPU accounting
    git: GitStamp | None = None  # v2: the code that measured this cell
    rerun: str | None = None  # v2: why this trial was run again (its first run is in `notes`)
    xray: Xray | None = None  # v3: a forking server's per-connection X-ray
    cluster: ClusterRun | None = None  # v4: the hosts a cluster cell ran on (None: this machine)
    failure_kind: FailureKind | None = None  # v4: what kind of failure `reason` is
    server_args: list[str] | None = None  # v4: the profile's server arguments (None: older file)
    attempt: int = 1  # v5: 2 when this is a re-run (the first attempt is under attempts/)
    link: LinkRun | None = None  # v6: the link its clients sat across (None: loopback)
    schema_version: int = SCHEMA_VERSION
    kind: Literal["cell"] = "cell"

    def profile_args(self) -> list[str]:
        """The server's arguments as the profile gave them: `server_args` (v4), or recovered
        from the argv of older files (`python -m servers NAME ...` without the runner's own
        --host, --port and --xray). The one parser of that argv (issue 22)."""
        if self.server_args is not None:
            return list(self.server_args)
        argv = self.server_run.argv if self.server_run is not None else []
        if self.server not in argv:
            return []
        return without_options(argv[argv.index(self.server) + 1 :], RUNNER_OPTIONS)


# --------------------------------------------------------------------------- run manifest


# The options the runner gives every server itself (never a profile's): CellResult.profile_args
RUNNER_OPTIONS = frozenset({"--host", "--port", "--xray"})


def without_options(argv: Sequence[str], options: Collection[str]) -> list[str]:
    """`argv` less each of `options` and the value that follows it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options:
            i += 2  # the option and its value
            continue
        out.append(argv[i])
        i += 1
    return out


@dataclass(frozen=True, slots=True)
class CanarySample:
    """One run of the fixed canary workload between cells (v2): the machine's speed now."""

    at: str  # ISO 8601 UTC
    t_s: float  # since the run started, monotonic
    after_cell: int  # how many cells had run
    spin_us: float  # a fixed CPU loop on the server's CPU (median of its repeats)
    pipe_rtt_us: float  # 1-byte pipe round trip between the server's and the client's CPU


@dataclass(frozen=True, slots=True)
class Host:
    """One worker of a cluster run (v4): where it is, what it does, what it runs on."""

    worker: str  # the Dask worker's address
    host: str
    hostname: str
    roles: list[str]  # "server", "client": the Dask resources it offers
    clock_offset_s: float  # the scheduler's clock minus this host's
    environment: dict[str, Any]  # the same fields as Manifest.environment, for that host


@dataclass(frozen=True, slots=True)
class Manifest:
    """The environment one run ran on, written once at its start and updated at its end."""

    run_id: str  # the run directory's name: <UTC timestamp>-<hostname>
    created_at: str  # ISO 8601 UTC
    hostname: str
    profile_name: str
    profile: dict[str, Any]  # the parsed TOML profile, as run
    environment: dict[str, Any]  # CPU model, cores, governor, kernel, Python, packages, git, ...
    server_cpus: tuple[int, ...] | None
    client_cpus: tuple[int, ...] | None
    busy_warnings: list[str]  # machine load seen before the run started
    limits: dict[str, Any]  # limits raised, and the ones that could not be
    finished: bool = False  # False while running, or when the run was interrupted
    ended_at: str = ""
    # v2: the machine's own speed through the run (bench/canary.py), one entry per look.
    canary: list[CanarySample] = field(default_factory=list)
    # v4: the Dask scheduler of a cluster run and every worker's host (None, []: one machine)
    cluster: str | None = None
    hosts: list[Host] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    kind: Literal["manifest"] = "manifest"


Document = LoadResult | CellResult | Manifest
_KINDS: dict[str, type[Any]] = {"load": LoadResult, "cell": CellResult, "manifest": Manifest}

# --------------------------------------------------------------------------- (de)serialise

T = TypeVar("T")


def to_dict(doc: Any) -> dict[str, Any]:
    """A dataclass document as plain JSON-ready data."""
    return typing.cast(dict[str, Any], _plain(doc))


def _plain(value: Any) -> Any:
    if isinstance(value, CellParams):
        return value.to_json()  # its optional fields only when set (see CellParams)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[T], data: Any, where: str = "$") -> T:
    """Build dataclass `cls` from plain data, checking every field's type on the way."""
    return typing.cast(T, _build(cls, data, where))


def _build(tp: Any, data: Any, where: str) -> Any:  # noqa: PLR0911 - one branch per type form
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: expected an object for {tp.__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(data) - names
        if unknown:
            raise SchemaError(f"{where}: unknown field(s) {sorted(unknown)}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _build(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where}: missing field {f.name!r}")
        return typing.cast(Any, tp)(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, data, where)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(f"{where}: matches none of {args}: {'; '.join(errors)}")
    if origin is Literal:
        if data not in typing.get_args(tp):
            raise SchemaError(f"{where}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin is list:
        if not isinstance(data, list):
            raise SchemaError(f"{where}: expected a list")
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is tuple:
        if not isinstance(data, list | tuple):
            raise SchemaError(f"{where}: expected a list")
        item = typing.get_args(tp)[0]
        return tuple(_build(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin is dict:
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: expected an object")
        _, val = typing.get_args(tp)
        return {str(k): _build(val, v, f"{where}.{k}") for k, v in data.items()}
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise SchemaError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if tp in (int, str, bool):
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise SchemaError(f"{where}: expected {tp.__name__}, got {data!r}")
        return data
    raise SchemaError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def parse(data: Any, source: str = "<data>") -> Document:
    """Validate plain data as a result document. The one way in for every reader."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"{source}: not a result document (expected a JSON object)")
    version = data.get("schema_version")
    if version not in KNOWN_VERSIONS:
        raise SchemaError(
            f"{source}: schema_version {version!r} is not one this echobench reads "
            f"(knows {sorted(KNOWN_VERSIONS)})"
        )
    kind = data.get("kind")
    if kind not in _KINDS:
        raise SchemaError(f"{source}: unknown document kind {kind!r}")
    if version != SCHEMA_VERSION:
        data = upgrade(data)
    return typing.cast(Document, from_dict(_KINDS[kind], data, source))


def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """An older document (version 1 to 3) as the current version: every field added since keeps
    its "not measured" default; only the version stamps change (a cell's embedded load result
    has one of its own)."""
    out = dict(data)
    out["schema_version"] = SCHEMA_VERSION
    load = out.get("load")
    if isinstance(load, Mapping):
        out["load"] = {**load, "schema_version": SCHEMA_VERSION}
    return out


def read(path: str | os.PathLike[str]) -> Document:
    """Read one result file (load or cell). Raises SchemaError with the file's name."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{p}: cannot read result: {exc}") from exc
    return parse(data, str(p))


def read_cell(path: str | os.PathLike[str]) -> CellResult:
    doc = read(path)
    if not isinstance(doc, CellResult):
        raise SchemaError(f"{path}: is a {doc.kind} result, not a cell")
    return doc


def read_load(path: str | os.PathLike[str]) -> LoadResult:
    doc = read(path)
    if not isinstance(doc, LoadResult):
        raise SchemaError(f"{path}: is a {doc.kind} result, not a load result")
    return doc


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    doc = read(path)
    if not isinstance(doc, Manifest):
        raise SchemaError(f"{path}: is a {doc.kind} result, not a manifest")
    return doc


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of either."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp creates 0600; results are meant to be read by others, as a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], doc: Document) -> None:
    write_json_atomic(path, to_dict(doc))
