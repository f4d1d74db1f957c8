"""The run: a profile's cells in order, each result kept the moment it exists, resumable.

A run lives in `results/<UTC timestamp>-<hostname>/`: `manifest.json` (written first with
`finished: false`, rewritten with `true` at the very end), `cells/<cell_id>.json` (one per cell,
written atomically when the cell ends) and, when the profile asks, the microbenchmarks' JSON.
Because a cell file exists only once its cell is over, `--resume` simply runs the cells of the
manifest's profile that have no file yet.

SIGINT and SIGTERM set a flag; the cell in progress notices it within a tenth of a second, ends
its load generator's and server's process groups (by id) and is not written; the manifest keeps
`finished: false`. `current.json` names the server and load generator of the cell in progress,
for a person (or a test) who wants to see what runs now.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cgroup, environment
from bench.cell import (
    STOPPED,
    CellRun,
    CpuPlan,
    Interrupted,
    end_group,
    failed_cell,
    supervise,
    utc_now,
)
from bench.cluster import Cluster, ClusterCellRun
from bench.cluster_tasks import ClusterError
from bench.environment import new_run_dir
from bench.link import Link
from bench.placement import (
    REFERENCE_SERVER_CPUS,
    beyond_limit,
    client_workers,
    fit_cluster,
    fit_cores,
    fit_link,
    reference_rate,
)
from bench.profile import (
    CELL_OVERHEAD_S,
    CellSpec,
    Profile,
    ProfileError,
    build,
    closed_ref_key,
    extra_trial,
)
from bench.profile import read as read_profile
from bench.progress import Progress, fmt_duration
from bench.rerun_policy import noisy_points, spoiled
from records import schema
from records.rerun import RERUN_MAX_SHARE  # the policy: see there

MICROBENCH_TIMEOUT_S = 1200.0
REPORT_TIMEOUT_S = 600.0
CANARY_EVERY = 10  # cells between two canaries (~0.1 s each: ~3 s over a standard run)
CANARY_TIMEOUT_S = 30.0


class UsageError(Exception):
    """Bad input from the command line: one line on stderr, exit 2."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    profile: str | None = "standard"
    resume: Path | None = None
    out: Path = Path("results")
    server_cpus: tuple[int, ...] | None = None
    client_cpus: tuple[int, ...] | None = None
    unpinned: bool = False
    report: bool = True
    microbench: bool = True
    monitor_interval_s: float | None = None
    mixed_commits: bool = False  # --resume may continue a run measured by other code
    canary: bool = True
    rerun: bool = True
    # A Dask scheduler's address (tcp://HOST:8786): servers on its `server` workers, the load
    # from its `client` workers (bench/cluster.py). None: everything on this machine.
    cluster: str | None = None


def plan_cpus(opts: RunOptions) -> CpuPlan:
    """The CPU split: the server on REFERENCE_SERVER_CPUS CPUs, the load generator on the rest."""
    if opts.unpinned:
        if opts.server_cpus or opts.client_cpus:
            raise UsageError("--unpinned cannot be combined with --server-cpus/--client-cpus")
        return CpuPlan(None, None)
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2 and not (opts.server_cpus and opts.client_cpus):
        raise UsageError(
            f"only {len(usable)} usable CPU: a split placement needs 2 (use --unpinned)"
        )
    server = opts.server_cpus or tuple(usable[:REFERENCE_SERVER_CPUS])
    client = opts.client_cpus or tuple(c for c in usable if c not in server) or tuple(usable)
    for name, cpus in (("--server-cpus", server), ("--client-cpus", client)):
        bad = [c for c in cpus if c not in usable]
        if bad:
            raise UsageError(f"{name}: CPU(s) {bad} not usable here (usable: {usable})")
    if set(server) & set(client):
        raise UsageError(f"server CPUs {list(server)} and client CPUs {list(client)} overlap")
    return CpuPlan(tuple(server), tuple(client))


class Runner:
    def __init__(self, opts: RunOptions, log: Any = None) -> None:
        self.opts = opts
        self.stop = threading.Event()
        self.signum: int | None = None
        self.log = log or sys.stderr
        self.results: dict[str, schema.CellResult] = {}
        git = environment.git_state()
        self.git = schema.GitStamp(commit=git.get("commit"), dirty=git.get("dirty"))
        self.canaries: list[schema.CanarySample] = []
        self.link: Link | None = None  # issue 23: held while cells with a round trip run
        self.cell_times: dict[str, float] = {}  # cell id -> when it ended (run's monotonic s)
        self.t0 = time.monotonic()
        self.cluster: Cluster | None = None

    def _connect(self, resumed: schema.Manifest | None) -> None:
        """Reach the cluster named by --cluster (one line and exit 2 if it cannot be used)."""
        was = resumed.cluster if resumed is not None else None
        if resumed is not None and (was is None) != (self.opts.cluster is None):
            where = f"the cluster at {was}" if was else "one machine"
            raise UsageError(f"--resume: that run ran on {where}; resume it the same way")
        if self.opts.cluster is None:
            return
        try:
            self.cluster = Cluster.connect(self.opts.cluster)
        except ClusterError as exc:
            raise UsageError(str(exc)) from None

    # ------------------------------------------------------------------ setup

    def _setup(self) -> tuple[Path, Profile, CpuPlan, schema.Manifest]:
        opts = self.opts
        if opts.resume is not None:
            run_dir = opts.resume
            try:
                old = schema.read_manifest(run_dir / "manifest.json")
            except schema.SchemaError as exc:
                raise UsageError(f"--resume: {exc}") from exc
            unpinned = old.environment.get("placement") == "unpinned"
            try:
                profile = build(old.profile, unpinned=unpinned)
            except ProfileError as exc:
                raise UsageError(f"--resume: the run's profile no longer builds: {exc}") from exc
            if opts.profile not in (None, old.profile_name):
                self._say(
                    f"note: resuming {run_dir} with its own profile {old.profile_name!r} "
                    f"(not {opts.profile!r})"
                )
            self._check_commit(run_dir)
            self._connect(old)
            limits = self._limits(profile)
            cpus = CpuPlan(old.server_cpus, old.client_cpus)
            resumes = [
                *old.environment.get("resumes", []),
                {"at": utc_now(), "git": environment.git_state()},
            ]
            warnings = [*old.busy_warnings, *(f"resume: {w}" for w in self._busy())]
            manifest = replace(
                old,
                environment={**old.environment, "resumes": resumes},
                busy_warnings=warnings,
                limits={**old.limits, "resume": limits},
                finished=False,
                ended_at="",
            )
            return run_dir, profile, cpus, manifest
        try:
            profile = read_profile(opts.profile or "standard", unpinned=opts.unpinned)
        except ProfileError as exc:
            raise UsageError(str(exc)) from exc
        limits = self._limits(profile)
        cpus = plan_cpus(opts)
        self._connect(None)
        run_dir = new_run_dir(opts.out)
        placement = "unpinned" if cpus.server is None else "pinned"
        env = environment.collect(cpus.server, cpus.client, placement)
        manifest = schema.Manifest(
            run_id=run_dir.name,
            created_at=utc_now(),
            hostname=socket.gethostname(),
            profile_name=profile.name,
            profile=profile.data,
            environment=env,
            server_cpus=cpus.server,
            client_cpus=cpus.client,
            busy_warnings=self._busy(unpinned=cpus.server is None),
            limits=limits,
            cluster=self.cluster.address if self.cluster else None,
            hosts=self.cluster.describe(cpus.server, cpus.client) if self.cluster else [],
        )
        return run_dir, profile, cpus, manifest

    def _check_commit(self, run_dir: Path) -> None:
        """Resume continues a run only with the code that measured it (unless told otherwise):
        a run whose cells come from two versions of the suite compares nothing."""
        if self.opts.mixed_commits:
            return
        seen: set[tuple[str | None, bool | None]] = set()
        cell_dir = run_dir / "cells"
        for path in sorted(cell_dir.glob("*.json")) if cell_dir.is_dir() else []:
            try:
                cell = schema.read_cell(path)
            except schema.SchemaError:
                continue
            seen.add((cell.git.commit, cell.git.dirty) if cell.git else (None, None))
        here = (self.git.commit, self.git.dirty)
        other = sorted((c or "unknown", d) for c, d in seen if (c, d) != here)
        if other:
            commit, dirty = other[0]
            raise UsageError(
                f"--resume: {run_dir} was measured by commit {commit[:12]}"
                f"{' (dirty)' if dirty else ''}, this is {str(here[0])[:12]}"
                f"{' (dirty)' if here[1] else ''}: check out that commit, or pass "
                "--mixed-commits to mix them knowingly"
            )

    def _limits(self, profile: Profile) -> dict[str, Any]:
        """Raise what may be raised for the profile's largest cell; say what could not be."""
        most = max((c.params.connections for c in profile.cells), default=1)
        limits = environment.raise_limits(most)
        for line in limits["not_raised"]:
            self._say(f"limit: {line}")
        return limits

    def _busy(self, unpinned: bool = False) -> list[str]:
        warnings = environment.busy_warnings()
        if unpinned:
            warnings.append("unpinned run: servers and load generator float over all CPUs (noisy)")
        for w in warnings:
            self._say(f"warning: {w}")
        return warnings

    def _say(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            self._say(
                f"\n{signal.Signals(signum).name}: stopping after ending this cell's processes"
            )
        self.stop.set()

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        affinity = os.sched_getaffinity(0)
        try:
            return self._run()
        finally:
            os.sched_setaffinity(0, affinity)
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if self.cluster is not None:
                self.cluster.close()

    def _run(self) -> int:
        t0 = time.monotonic()
        run_dir, profile, cpus, manifest = self._setup()
        schema.write_atomic(run_dir / "manifest.json", manifest)
        self._say(f"run {run_dir} (profile {profile.name}, {len(profile.cells)} cells)")
        self._load_existing(run_dir / "cells")
        todo = [c for c in profile.cells if c.cell_id not in self.results]
        todo, skipped = fit_cores(todo, cpus) if self.cluster is None else fit_cluster(todo)
        for line in skipped:
            self._say(line)
        if skipped:
            manifest = replace(manifest, limits={**manifest.limits, "skipped": skipped})
            schema.write_atomic(run_dir / "manifest.json", manifest)
        if self.opts.resume is not None:
            self._say(f"resume: {len(profile.cells) - len(todo)} cells done, {len(todo)} to run")

        self.manifest = manifest
        for name in cgroup.sweep():
            self._say(f"note: removed {name}, an empty cgroup left by an earlier run")
        everywhere = os.sched_getaffinity(0)
        if cpus.client is not None and self.cluster is None:
            # The runner and its threads (the monitor's among them) stay off the server's CPUs
            # while cells run: their work there would be foreign CPU in every cell. The server,
            # the load generator and the canary are pinned explicitly.
            os.sched_setaffinity(0, cpus.client)
        links = contextlib.ExitStack()
        todo, self.link = fit_link(todo, cpus, links, self._say)
        try:
            self._canary(run_dir, cpus, 0)
            self._run_cells(run_dir, profile, cpus, todo)
            self._canary(run_dir, cpus, len(todo))
            if self.opts.rerun:
                self._rerun_spoiled(run_dir, profile, cpus)
            self._extra_rounds(run_dir, profile, cpus, t0)
            # the microbenchmarks place their own ends on one CPU and on two: they inherit
            # every CPU the run was given, not the runner's corner
            os.sched_setaffinity(0, everywhere)
            if profile.microbench.run and self.opts.microbench:
                self._microbench(run_dir, profile.microbench.fast)
        except Interrupted:
            (run_dir / "current.json").unlink(missing_ok=True)
            done = sum(1 for c in profile.cells if c.cell_id in self.results)
            self._say(
                f"interrupted: {done}/{len(profile.cells)} cells kept in {run_dir}; "
                f"resume with: make bench RESUME={run_dir}"
            )
            return 128 + (self.signum or signal.SIGINT)
        finally:
            links.close()  # the namespaces and the delay element go, whatever happened
            self.link = None
        (run_dir / "current.json").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (run_dir / "loadgen").rmdir()  # emptied cell by cell: each result lives in its cell
        schema.write_atomic(
            run_dir / "manifest.json",
            replace(self.manifest, finished=True, ended_at=utc_now()),
        )
        failed = [r for r in self.results.values() if r.status == "failed"]
        self._say(
            f"done in {fmt_duration(time.monotonic() - t0)}: {len(self.results)} cells, "
            f"{len(failed)} failed; raw results in {run_dir}"
        )
        if self.opts.report:
            self._report(run_dir)
        return 0

    def _load_existing(self, cell_dir: Path) -> None:
        for path in sorted(cell_dir.glob("*.json")) if cell_dir.is_dir() else []:
            try:
                cell = schema.read_cell(path)
            except schema.SchemaError as exc:
                self._say(f"warning: {exc}: will run that cell again")
                continue
            if cell.status == "failed" and self.opts.resume is not None:
                # a failed cell is not done: resume runs it again, and `_keep` moves this
                # attempt to attempts/ rather than overwrite it
                continue
            self.results[cell.cell_id] = cell

    def _run_cells(
        self, run_dir: Path, profile: Profile, cpus: CpuPlan, todo: list[CellSpec]
    ) -> None:
        by_ref: dict[str, list[str]] = {}
        for spec in profile.cells:
            key = closed_ref_key(spec)
            if key is not None:
                by_ref.setdefault(key, []).append(spec.cell_id)
        est = sum(c.params.duration_s + c.params.warmup_s + CELL_OVERHEAD_S for c in todo)
        progress = Progress(len(todo), est, self.log)
        current = run_dir / "current.json"
        for i, spec in enumerate(todo, 1):
            if self.stop.is_set():
                raise Interrupted
            progress.cell_started(i, spec.cell_id)
            t = time.monotonic()
            workers = profile.client_workers or client_workers(spec, cpus)

            def on_pids(info: dict[str, Any]) -> None:
                schema.write_json_atomic(current, {**info, "runner_pid": os.getpid()})

            beyond = self._beyond_limit(spec)
            if beyond is not None:
                result = failed_cell(spec, beyond, git=self.git)
            elif spec.ref_point is not None:
                rate, why = reference_rate(self.results, by_ref.get(spec.ref_point, []))
                if rate is None:
                    result = failed_cell(spec, why or "no reference", git=self.git)
                else:
                    rate *= spec.params.rate_fraction or 1.0
                    result = self._cell(spec, run_dir, cpus, workers, on_pids, rate)
            else:  # closed loop, or an open loop at the scenario's fixed rate (at-load)
                result = self._cell(spec, run_dir, cpus, workers, on_pids, None)
            self._keep(run_dir, spec, result)
            rps = result.load.requests_per_s if result.load else None
            progress.cell_done(time.monotonic() - t, rps)
            if result.status == "failed":
                progress.note(f"  FAILED {spec.cell_id}: {result.reason}")
            if i % CANARY_EVERY == 0 and i < len(todo):
                self._canary(run_dir, cpus, i)
        progress.finish()

    def _keep(self, run_dir: Path, spec: CellSpec, result: schema.CellResult) -> None:
        """Write a cell's result; an attempt already on disk (a re-run's first, a resumed
        failure) is moved to attempts/ first, never overwritten."""
        path = run_dir / "cells" / f"{spec.cell_id}.json"
        if path.exists():
            attempts = run_dir / schema.ATTEMPTS_DIR
            attempts.mkdir(exist_ok=True)
            n = 1 + sum(1 for _ in attempts.glob(f"{spec.cell_id}.a*.json"))
            path.rename(attempts / f"{spec.cell_id}.a{n}.json")
            result = replace(result, attempt=n + 1)
        schema.write_atomic(path, result)
        self.results[spec.cell_id] = result
        self.cell_times[spec.cell_id] = time.monotonic() - self.t0

    # ------------------------------------------------------------------ the machine's speed

    def _canary(self, run_dir: Path, cpus: CpuPlan, after: int) -> None:
        """Run the canary (bench/canary.py) once and keep it in the manifest."""
        if not self.opts.canary or self.cluster is not None:
            return  # the canary times one machine's CPUs: a cluster run has several
        argv = [sys.executable, "-m", "bench.canary"]
        if cpus.server and cpus.client:
            argv += ["--server-cpu", str(cpus.server[0]), "--client-cpu", str(cpus.client[0])]
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
        )
        try:
            out, _ = popen.communicate(timeout=CANARY_TIMEOUT_S)
            got = json.loads(out.decode() or "{}")
            sample = schema.CanarySample(
                at=utc_now(),
                t_s=round(time.monotonic() - self.t0, 3),
                after_cell=after,
                spin_us=float(got["spin_us"]),
                pipe_rtt_us=float(got["pipe_rtt_us"]),
            )
        except (subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            self._say(f"warning: canary failed ({type(exc).__name__}); the cells are unaffected")
            return
        finally:
            end_group(popen)
        self.canaries.append(sample)
        self.manifest = replace(self.manifest, canary=[*self.manifest.canary, sample])
        schema.write_atomic(run_dir / "manifest.json", self.manifest)

    def _spoiled(self, profile: Profile) -> dict[str, tuple[float, str]]:
        return spoiled(profile, self.results, self.canaries, self.cell_times)

    def _rerun_spoiled(self, run_dir: Path, profile: Profile, cpus: CpuPlan) -> None:
        """Run each spoiled trial once more, at the end. The re-run is the cell's figure and
        says why it ran; the first attempt moves to attempts/ (`_keep`), and the report lists
        both."""
        spoiled = self._spoiled(profile)
        if not spoiled:
            return
        limit = max(1, int(RERUN_MAX_SHARE * len(profile.cells)))
        specs = [sp for sp in profile.cells if sp.cell_id in spoiled and sp.ref_point is None]
        if len(specs) > limit:
            # The worst first, wherever they ran: not the first ones, which would spend every
            # re-run on the start of the run. The rest stand, flagged, and the report says so.
            specs = sorted(specs, key=lambda sp: -spoiled[sp.cell_id][0])[:limit]
            self._say(
                f"rerun: {len(spoiled)} trials look spoiled; re-running the {limit} worst: the "
                "host is noisier than re-runs can mend"
            )
        self.manifest = replace(
            self.manifest,
            limits={**self.manifest.limits, "spoiled": len(spoiled), "rerun": len(specs)},
        )
        why = {k: v for k, (_, v) in spoiled.items()}
        self._say(f"rerun: {len(specs)} trial(s) spoiled by the machine, run again")
        for spec in specs:
            if self.stop.is_set():
                raise Interrupted
            old = self.results[spec.cell_id]
            workers = profile.client_workers or (client_workers(spec, cpus))
            new = self._cell(spec, run_dir, cpus, workers, lambda _i: None, None)
            first = old.load.requests_per_s if old.load else 0.0
            reason = f"first run at {old.started_at}: {why[spec.cell_id]}"
            new = replace(
                new,
                rerun=reason,
                notes=[*new.notes, f"re-run ({first:,.0f} req/s at first): {why[spec.cell_id]}"],
            )
            self._keep(run_dir, spec, new)

    def _extra_rounds(self, run_dir: Path, profile: Profile, cpus: CpuPlan, t0: float) -> None:
        """Spend what is left of the profile's time budget where the figures are too noisy to
        decide anything: the headline points whose trials disagree most (CV over
        DECIDE_CV) get one more round each, the noisiest first, while the budget lasts. The
        cells are new trials of their points; the manifest lists them."""
        if profile.time_budget_s is None or self.opts.resume is not None:
            return
        noisy = noisy_points(profile, self.results)
        added: list[str] = []
        for cv, last, trial in noisy:
            spec = extra_trial(last, trial)
            cost = spec.params.duration_s + spec.params.warmup_s + CELL_OVERHEAD_S
            if time.monotonic() - t0 + cost > profile.time_budget_s:
                break
            if self.stop.is_set():
                raise Interrupted
            workers = profile.client_workers or client_workers(spec, cpus)
            result = self._cell(spec, run_dir, cpus, workers, lambda _i: None, None)
            note = f"an extra round: its point's trials disagreed (CV {cv:.0%})"
            self._keep(run_dir, spec, replace(result, notes=[*result.notes, note]))
            added.append(spec.cell_id)
        if added:
            self._say(f"extra rounds: {len(added)} noisy point(s) measured once more")
        if noisy:
            extra = {"noisy_points": len(noisy), "extra_rounds": added}
            self.manifest = replace(self.manifest, limits={**self.manifest.limits, **extra})
            schema.write_atomic(run_dir / "manifest.json", self.manifest)

    def _beyond_limit(self, spec: CellSpec) -> str | None:
        return beyond_limit(spec, self.results)

    def _cell(
        self,
        spec: CellSpec,
        run_dir: Path,
        cpus: CpuPlan,
        workers: int,
        on_pids: Any,
        rate: float | None,
    ) -> schema.CellResult:
        if rate is None:  # a fixed rate (at-load) is the spec's own, re-runs included
            rate = spec.params.rate
        if self.cluster is not None:
            across = ClusterCellRun(
                spec,
                self.cluster,
                cpus,
                workers,
                stop=self.stop,
                git=self.git,
                monitor_interval_s=self.opts.monitor_interval_s,
            )
            return across.run(rate)
        rtt = spec.params.rtt_us
        if rtt is not None and self.link is not None and self.link.rtt_us != rtt:
            measured = self.link.tune(rtt)  # one link, retuned for each round trip
            off = "" if self.link.on_target else " (off target: noted in its cells)"
            self._say(f"link: {rtt:,} us asked, {measured.median_us:,.0f} us measured{off}")
        runner = CellRun(
            spec,
            run_dir,
            cpus,
            workers,
            on_pids,
            monitor_interval_s=self.opts.monitor_interval_s,
            stop=self.stop,
            git=self.git,
            link=self.link,
        )
        return runner.run(rate)

    # ------------------------------------------------------------------ extra steps

    def _subprocess(self, argv: list[str], timeout_s: float) -> int | None:
        """Run a helper step in its own process group; None if it timed out. Interruptible."""
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            ended = supervise(popen, timeout_s, self.stop, poll_s=0.2)
        finally:
            end_group(popen)
        if ended.why == STOPPED:
            raise Interrupted
        return ended.code

    def _microbench(self, run_dir: Path, fast: bool) -> None:
        if (run_dir / "microbench.json").exists():
            self._say("microbench: already in this run, skipped")
            return
        self._say("microbench: running" + (" (fast)" if fast else ""))
        argv = [sys.executable, "-m", "microbench", "run", "--out", str(run_dir)]
        code = self._subprocess([*argv, "--fast"] if fast else argv, MICROBENCH_TIMEOUT_S)
        if code != 0:
            what = "timed out" if code is None else f"exited with code {code}"
            self._say(f"warning: microbench {what}; the cells are unaffected")

    def _report(self, run_dir: Path) -> None:
        try:
            code = self._subprocess(
                [sys.executable, "-m", "analysis", "report", str(run_dir)], REPORT_TIMEOUT_S
            )
        except Interrupted:
            self._say(f"report interrupted; the run is complete in {run_dir}")
            return
        if code != 0:
            what = "timed out" if code is None else f"failed (exit {code})"
            self._say(f"warning: report {what}; raw results are complete in {run_dir}")


def run(opts: RunOptions) -> int:
    with contextlib.suppress(AttributeError):
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return Runner(opts).run()
