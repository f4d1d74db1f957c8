"""Read one run directory into pandas: the only place the analysis touches result files.

A run directory (see results/README.md) holds `manifest.json`, `cells/<cell_id>.json`
(searched at any depth, in case a cell id holds "/") and the microbenchmark files (read once,
through `records.micro`, into `Run.micro`); cells and manifest are read through
`records.schema.read_manifest` / `read_cell` (the one versioned loader), never by
parsing JSON ourselves. The result is a `Run`: the manifest, the cell documents by id, and one
tidy DataFrame row per cell and trial with the registry's labels and the figures every chart
and table needs:

* latency percentiles recomputed from each trial's encoded HdrHistogram (so the report's p99 is
  the histogram's p99, not a rounded copy of it);
* server CPU per request, from the cell's whole-window CPU account (bench/accounting.py:
  counters read at the window's edges, capped at the CPUs the server was pinned to), divided by
  the requests of the window. Version 1 cells have no account; for them the old estimate is
  kept (the CPU *rate* over the intervals where the server was busy), marked
  `cpu_source = "v1-rate"`, since it can exceed the CPUs given;
* served, starved and fill: how many connections the cell asked for, how many completed a
  request in the window, and how long the fill took. A cell with a starved client is
  `starved` and never a capacity or a latency figure;
* memory growth: peak minus the first sample, of RSS (shared pages counted in every process) and
  PSS (shared pages split fairly between the processes sharing them).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from analysis import micro, noise
from analysis.stats import placement_summary, summarise
from records import schema
from records.registry import SERVERS

# Parameters that vary between trials of one cell without making it another cell: the open-loop
# rate is derived from a measured closed-loop figure, so the key uses rate_fraction instead (a
# fixed rate, the at-load scenario's, has no fraction and stays in the key).
_NOT_KEY_PARAMS = frozenset({"rate", "trial"})


def _drop(params: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    fixed_rate = params.get("rate_fraction") is None
    return {k: v for k, v in params.items() if k not in names or (k == "rate" and fixed_rate)}


ATTEMPTS_DIR = schema.ATTEMPTS_DIR

PARAM_COLUMNS = ("mode", "load", "connections", "size", "rate", "rate_fraction", "shared_counter")


class RunError(Exception):
    """A directory that is not a readable run (one clear line for the CLI)."""


@dataclass
class Run:
    path: Path
    manifest: schema.Manifest | None
    cells: dict[str, schema.CellResult]
    df: pd.DataFrame  # one row per cell and trial, see `tidy_row`
    micro: pd.DataFrame  # the microbenchmark figures (analysis.micro), read once here
    micro_absent: str  # why `micro` is empty ("" when it is not)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    # Each metric's split-half check (analysis.noise); the intervals themselves ride on the rows
    # as `hw_<metric>` columns, so every section that summarises any subset quotes the same ones.
    calibration: dict[str, noise.Calibration] = field(default_factory=dict)
    attempts: list[schema.CellResult] = field(default_factory=list)  # earlier attempts kept

    @functools.cached_property
    def findings(self) -> Findings:
        """What every section of the report reads: derived once per run (issue 22)."""
        return Findings(self.df)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id if self.manifest else self.path.name


# How long a cell ran is not what it measured: runs of different profiles (quick vs standard)
# still compare cell by cell on the remaining parameters.
_NOT_MATCH_PARAMS = frozenset({"duration_s", "warmup_s"})


def match_key(params: dict[str, Any]) -> str:
    """`param_key` without the cell's length: the key `compare` matches runs on."""
    kept = _drop(params, _NOT_KEY_PARAMS | _NOT_MATCH_PARAMS)
    return json.dumps(kept, sort_keys=True, default=str)


def param_key(params: dict[str, Any]) -> str:
    """A stable text key for a cell's parameters, the same across its trials."""
    kept = _drop(params, _NOT_KEY_PARAMS)
    return json.dumps(kept, sort_keys=True, default=str)


def decode(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded)


def percentile_us(hist: HdrHistogram, pct: float) -> float:
    """Value at `pct` percent of an HdrHistogram recorded in nanoseconds, in microseconds."""
    return float(hist.get_value_at_percentile(pct)) / 1000.0


def merged_histogram(cells: list[schema.CellResult], name: str = "latency") -> HdrHistogram | None:
    """All trials of a cell in one histogram (lossless: every writer uses the same bounds)."""
    merged: HdrHistogram | None = None
    for cell in cells:
        if cell.load is None or name not in cell.load.histograms:
            continue
        h = decode(cell.load.histograms[name].encoded)
        if merged is None:
            merged = HdrHistogram(
                schema.HIST_LOWEST_NS, schema.HIST_HIGHEST_NS, schema.HIST_SIGNIFICANT_DIGITS
            )
        merged.add(h)
    return merged


def percentiles_us(hist: HdrHistogram, pcts: list[float]) -> dict[float, float]:
    """Several percentiles in one pass over the counts (the per-call API walks them each time)."""
    values = hist.get_percentile_to_value_dict(pcts)
    return {p: float(values[p]) / 1000.0 for p in pcts}


def _latency_figures(load: schema.LoadResult) -> dict[str, float]:
    hist = load.histograms.get("latency")
    if hist is None:
        return {}
    h = decode(hist.encoded)
    if h.get_total_count() == 0:
        return {}
    v = percentiles_us(h, [50.0, 90.0, 99.0, 99.9])
    return {
        "p50_us": v[50.0],
        "p90_us": v[90.0],
        "p99_us": v[99.0],
        "p999_us": v[99.9],
        "max_us": float(h.get_max_value()) / 1000.0,
        # the writer's exact mean (hdrh's own mean walks every bucket: too slow for a report)
        "mean_us": hist.summary.mean_us,
    }


def cpu_rates(monitor: schema.MonitorData) -> tuple[float, float] | None:
    """Server (user, sys) CPU seconds per second while it was busy, or None if never busy."""
    s = monitor.samples
    if len(s) < 3:
        return None
    dt = np.diff([x.t_s for x in s])
    du = np.diff([x.cpu_user_s for x in s])
    ds = np.diff([x.cpu_sys_s for x in s])
    ok = dt > 0
    if not ok.any():
        return None
    rate = np.where(ok, (du + ds) / np.where(ok, dt, 1.0), 0.0)
    typical = float(np.percentile(rate[ok], 90))
    if typical <= 0:
        return None
    busy = np.flatnonzero(ok & (rate >= 0.5 * typical))
    if len(busy) > 2:  # the first busy interval straddles start-up or the load's ramp
        busy = busy[1:]
    span = float(dt[busy].sum())
    if span <= 0:
        return None
    return float(du[busy].sum()) / span, float(ds[busy].sum()) / span


# Issue 7's fault switches of the forking server: cells run with one are experiments on the
# book's rules (close connfd, reap in a loop), never figures of the server's performance.
FAULTS = ("leak-connfd", "naive-reaper")


# Options every cell has (the launcher's address) or that its params already say (the counter).
# The runner's own options (the X-ray's file is a per-trial path: kept in a label, it split a
# point's trials apart) and the ones a cell's params already name.
_IMPLIED_OPTIONS = schema.RUNNER_OPTIONS | {"--shared-counter"}  # params name the counter


def server_args(cell: schema.CellResult) -> list[str]:
    """What makes this server run different from its registry default: the profile's arguments
    (records.schema's one parser of the server's argv), minus what the params already name."""
    return schema.without_options(cell.profile_args(), _IMPLIED_OPTIONS)


def tidy_row(run_id: str, cell: schema.CellResult) -> dict[str, Any]:
    """The flat figures of one cell and trial: one row of cells.csv."""
    spec = SERVERS.get(cell.server)
    p = cell.params
    args = server_args(cell)
    row: dict[str, Any] = {
        "run_id": run_id,
        "cell_id": cell.cell_id,
        "scenario": cell.scenario,
        "server": cell.server,
        "label": " ".join([spec.label if spec else cell.server, *args]),
        "server_args": " ".join(args),
        "fault": next((f for f in FAULTS if f"--{f}" in args), ""),
        "model": str(spec.model) if spec else "unknown",
        "trial": cell.trial,
        "placement": cell.placement,
        "status": cell.status,
        "reason": cell.reason or "",
        "failure_kind": cell.failure_kind or "",
        "param_key": param_key(p.to_json()),
        "match_key": match_key(p.to_json()),
    }
    for col in PARAM_COLUMNS:
        row[col] = getattr(p, col)
    row["rtt_us"] = p.rtt_us
    if cell.link is not None:  # issue 23: the round trip its clients sat at, as measured
        row["link_measured_us"] = cell.link.measured_us
        row["link_jitter_us"] = cell.link.jitter_us
    load = cell.load
    if load is not None:
        cfg = load.config
        row["mode"] = row["mode"] or cfg.mode
        row["load"] = row["load"] or cfg.load
        row["connections"] = (
            row["connections"] if row["connections"] is not None else cfg.connections
        )
        row["size"] = row["size"] if row["size"] is not None else cfg.size
        errors = sum(load.errors.values())
        row.update(
            {
                "elapsed_s": load.elapsed_s,
                "complete": load.complete,
                "requests": load.requests,
                "requests_per_s": load.requests_per_s,
                "errors": errors,
                "connections_opened": load.connections_opened,
                "client_saturated": load.client_saturated,
                "client_port_bound": load.client_port_bound,
                "client_cpu_util": max((c.utilisation for c in load.client_cpu), default=math.nan),
            }
        )
        row.update(_latency_figures(load))
        row["asked"] = load.config.connections
        if load.schema_version >= 2 and (load.fill is not None or load.served or load.starved):
            row["served"] = load.served
            row["starved"] = load.starved
            row["unfinished"] = load.unfinished
            if load.fill is not None:
                row["connected"] = load.fill.connected
                row["fill_echoed"] = load.fill.echoed
                row["fill_s"] = load.fill.fill_s
                row["fill_ended"] = load.fill.ended
        else:
            # v1: the load generator counted requests still in flight when the drain gave up;
            # a pool server's starved clients show up there (read now, ignored before).
            left = int(load.error_details.get("unfinished_at_end", 0))
            row["starved"] = left if load.config.mode == "persistent" else 0
            row["served"] = load.config.connections - row["starved"]
        if load.target_rate:
            row["target_rate"] = load.target_rate
            row["rate_miss"] = load.rate_miss
            row["due_unsent"] = load.due_unsent
            late = load.histograms.get("lateness")
            if late is not None and late.summary.count:
                row["lateness_p99_us"] = late.summary.p99_us
        if load.config.mode == "persistent" and load.config.size > 0:
            # every echoed message, warm-up included: what the server's STATS counter saw
            row["bytes_received_total"] = load.bytes_received_total
    mon = cell.monitor
    if mon is not None and mon.samples:
        first = mon.samples[0]
        row.update(
            {
                "monitor_samples": len(mon.samples),
                "monitor_dropped": mon.dropped_samples,
                "rss_base_bytes": first.rss_bytes,
                "rss_peak_bytes": max(x.rss_bytes for x in mon.samples),
                "pss_base_bytes": first.pss_bytes,
                "pss_peak_bytes": max(x.pss_bytes for x in mon.samples),
                "fds_base": first.fds,
                "fds_peak": max(x.fds for x in mon.samples),
                "fds_end": mon.samples[-1].fds,
                "close_wait_peak": max((x.close_wait or 0) for x in mon.samples),
                "zombies_peak": max(x.zombies for x in mon.samples),
                "processes_peak": max(x.processes for x in mon.samples),
                "threads_peak": max(x.threads for x in mon.samples),
            }
        )
        # issue 23: what the server held alive on average over the measured window: the samples
        # after its start edge up to its end (all of them when no edge was marked). The start
        # edge itself is the instant the load begins, after the warm-up's requests have
        # drained: with a connection per request nothing is in flight there yet.
        lo, hi = mon.window_start, mon.window_end
        held = mon.samples[lo + 1 : hi + 1] if lo is not None and hi is not None else mon.samples
        if held:
            row["processes_mean"] = sum(x.processes for x in held) / len(held)
            row["threads_mean"] = sum(x.threads for x in held) / len(held)
            row["pss_mean_bytes"] = sum(x.pss_bytes for x in held) / len(held)
            # the looks' spread, for the sampling error of those means (Little's-law check)
            row["held_looks"] = len(held)
            row["processes_sd"] = (
                float(np.std([x.processes for x in held], ddof=1)) if len(held) > 1 else 0.0
            )
            row["threads_sd"] = (
                float(np.std([x.threads for x in held], ddof=1)) if len(held) > 1 else 0.0
            )
        conns = row.get("connections") or 0
        if conns > 0:
            row["rss_per_conn_bytes"] = (row["rss_peak_bytes"] - first.rss_bytes) / conns
            row["pss_per_conn_bytes"] = (row["pss_peak_bytes"] - first.pss_bytes) / conns
    rps = row.get("requests_per_s") or 0.0
    acct = cell.cpu
    if acct is not None and rps > 0 and acct.window_s > 0:
        per = 1e6 / (rps * acct.window_s)
        row["cpu_user_us_per_req"] = acct.server_user_s * per
        row["cpu_sys_us_per_req"] = acct.server_sys_s * per
        row["cpu_us_per_req"] = acct.server_cpu_s * per
        row["server_cpu_util"] = acct.server_cpus_used
        row["server_cpus"] = acct.server_cpus
        row["cpu_source"] = acct.server_source
        row["client_busy_share"] = acct.client_busy_share
        row["monitor_cpu_s"] = acct.monitor_cpu_s
        row["steal_s"] = acct.steal_s
        row["foreign_s"] = acct.foreign_s
        row["foreign_flag"] = acct.foreign_flag
        row["tree_vs_server"] = (
            acct.server_tree_s / acct.server_cpu_s if acct.server_cpu_s else None
        )
        row["client_saturated"] = bool(row.get("client_saturated")) or acct.client_saturated
    elif mon is not None and mon.samples:
        rates = cpu_rates(mon)
        if rates is not None and rps > 0:
            row["cpu_user_us_per_req"] = rates[0] / rps * 1e6
            row["cpu_sys_us_per_req"] = rates[1] / rps * 1e6
            row["cpu_us_per_req"] = (rates[0] + rates[1]) / rps * 1e6
            row["server_cpu_util"] = rates[0] + rates[1]
            row["cpu_source"] = "v1-rate"
            # The v1 estimate could give a server more CPUs than it had: cap it, as v2 does.
            given = len(cell.server_run.cpus or ()) if cell.server_run else 0
            if given and row["server_cpu_util"] > given:
                scale = given / row["server_cpu_util"]
                for k in ("cpu_user_us_per_req", "cpu_sys_us_per_req", "cpu_us_per_req"):
                    row[k] *= scale
                row["server_cpu_util"] = float(given)
                row["cpu_source"] = "v1-rate-capped"
    row["commit"] = cell.git.commit if cell.git else None
    row["rerun"] = cell.rerun or ""
    if cell.server_run is not None:
        row["server_clean_exit"] = cell.server_run.clean_exit
        row["server_leftovers"] = len(cell.server_run.leftovers)
        for key, value in (cell.server_run.stats or {}).items():
            row[f"stats_{key}"] = value
    row["notes"] = "; ".join(cell.notes)
    return row


_TEXT = [
    "run_id",
    "cell_id",
    "scenario",
    "server",
    "label",
    "server_args",
    "fault",
    "model",
    "trial",
    "placement",
    "status",
    "reason",
    "failure_kind",
    "param_key",
    "match_key",
    "notes",
    "fill_ended",
    "cpu_source",
    "commit",
    "rerun",
]

_NUMERIC = [
    "elapsed_s",
    "requests",
    "requests_per_s",
    "errors",
    "connections_opened",
    "client_cpu_util",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "mean_us",
    "monitor_samples",
    "monitor_dropped",
    "rss_base_bytes",
    "rss_peak_bytes",
    "pss_base_bytes",
    "pss_peak_bytes",
    "fds_base",
    "fds_peak",
    "fds_end",
    "close_wait_peak",
    "zombies_peak",
    "processes_peak",
    "processes_mean",
    "threads_mean",
    "pss_mean_bytes",
    "held_looks",
    "processes_sd",
    "threads_sd",
    "rtt_us",
    "link_measured_us",
    "link_jitter_us",
    "threads_peak",
    "cpu_user_us_per_req",
    "cpu_sys_us_per_req",
    "cpu_us_per_req",
    "server_cpu_util",
    "server_leftovers",
    "rss_per_conn_bytes",
    "pss_per_conn_bytes",
    "bytes_received_total",
    "asked",
    "connected",
    "served",
    "starved",
    "unfinished",
    "fill_echoed",
    "fill_s",
    "target_rate",
    "due_unsent",
    "lateness_p99_us",
    "server_cpus",
    "client_busy_share",
    "monitor_cpu_s",
    "steal_s",
    "foreign_s",
    "tree_vs_server",
]


def read_run(path: str | Path) -> Run:
    """Read a run directory. Unreadable cell files are listed, not fatal; a missing dir is."""
    root = Path(path)
    if not root.is_dir():
        raise RunError(f"{root}: not a directory")
    cell_dir = root / "cells"
    manifest_path = root / "manifest.json"
    if not cell_dir.is_dir() and not manifest_path.exists():
        raise RunError(f"{root}: not a run directory (no manifest.json and no cells/)")
    manifest = None
    unreadable: list[tuple[str, str]] = []
    if manifest_path.exists():
        try:
            manifest = schema.read_manifest(manifest_path)
        except schema.SchemaError as exc:
            unreadable.append((manifest_path.name, str(exc)))
    run_id = manifest.run_id if manifest else root.name
    cells: dict[str, schema.CellResult] = {}
    rows = []
    for f in sorted(cell_dir.rglob("*.json")) if cell_dir.is_dir() else []:
        # the attempts a re-run or a resume set aside live beside the cells, never among them
        try:
            cell = schema.read_cell(f)
        except schema.SchemaError as exc:
            unreadable.append((f.name, str(exc)))
            continue
        cells[cell.cell_id] = cell
        rows.append(tidy_row(run_id, cell))
    df = pd.DataFrame(rows)
    for col in (*_TEXT, *PARAM_COLUMNS):  # an empty or partial run still has every column
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    for col in _NUMERIC:
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("client_saturated", "client_port_bound", "rate_miss", "foreign_flag"):
        if col not in df.columns:
            df[col] = False
        df[col] = df[col].fillna(False).astype(bool)
    df, calibration = noise.annotate(df)
    attempts = []
    for f in sorted((root / ATTEMPTS_DIR).glob("*.json")) if (root / ATTEMPTS_DIR).is_dir() else []:
        try:
            attempts.append(schema.read_cell(f))
        except schema.SchemaError as exc:
            unreadable.append((f.name, str(exc)))
    figures, absent = micro.read(root)
    if figures.empty and not absent:
        absent = "no microbenchmark figures"
    return Run(root, manifest, cells, df, figures, absent, unreadable, calibration, attempts)


def ok_cells(run: Run, faults: bool = False) -> pd.DataFrame:
    """The cells that measured something; fault experiments only when asked for (a fault
    scenario's control cells, the server as written, belong to the experiment too). Read once
    per run, through `run.findings`."""
    return run.findings.ok_all if faults else run.findings.ok


def filter_ok(df: pd.DataFrame, faults: bool = False) -> pd.DataFrame:
    """The filter behind ok_cells, for a frame that is not a run's (the scorecard's tests)."""
    d = df[df["status"] == "ok"]
    if faults:
        return d
    return d[(d["fault"].fillna("") == "") & ~d["scenario"].isin(FAULTS)]


class Findings:
    """A run's findings, derived once and read by every section, chart and claim (issue 22):
    the ok cells (with and without the fault experiments) and, per metric, every point's
    median and interval (`stats.summarise` over all ok cells, then selected by scenario: a
    point is the same point whichever section asks)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.ok_all = filter_ok(df, faults=True)
        self.ok = filter_ok(df)
        self._summaries: dict[tuple[str, bool], pd.DataFrame] = {}
        self._placement: pd.DataFrame | None = None

    def cells(self, scenario: str | None = None, *, faults: bool = False) -> pd.DataFrame:
        d = self.ok_all if faults else self.ok
        return d if scenario is None or d.empty else d[d["scenario"] == scenario]

    def summary(
        self, metric: str, scenario: str | None = None, *, faults: bool = False
    ) -> pd.DataFrame:
        key = (metric, faults)
        if key not in self._summaries:
            self._summaries[key] = summarise(self.ok_all if faults else self.ok, metric)
        s = self._summaries[key]
        if scenario is None or s.empty:
            return s.copy()  # a section may add columns: never to the shared summary
        return s[s["scenario"] == scenario].reset_index(drop=True)

    def placements(self) -> pd.DataFrame:
        """Requests/s at 1 connection by placement (stats.placement_summary), once."""
        if self._placement is None:
            self._placement = placement_summary(self.ok_all)
        return self._placement
