"""The report's method section: how sure this run's numbers are, from the run's own evidence.

Everything here is computed from the run, never written in advance: the machine's speed
through the run (the canary, bench/canary.py), the trials the runner re-ran and why, how far
the trials of one cell disagree, the trial-order effect (is trial 1 of a cell slower than the
others: start-up), what waking another CPU costs (placement), which cells did not serve the
clients they name, whether the CPU accounting adds up, and whether open-loop cells kept their
schedule. The noise sources named here are the ones this suite found on 2-vCPU VMs (host
episodes, idle-CPU wake-ups, short cells, start-up); the figures say how much each weighed in
*this* run.
"""

from __future__ import annotations

import statistics

from analysis import fmt
from analysis.noise import PROMISE, paired_ratio_hold
from analysis.results import Run, ok_cells
from analysis.stats import CV_LIMIT, coverage
from records.rerun import EPISODE_SPEED, OUTLIER_SHARE

CALIBRATION_SHOWN = {
    "requests_per_s": "requests/s",
    "cpu_us_per_req": "server CPU per request",
    "p99_us": "p99 latency",
}


def _spread(values: list[float], unit: str) -> str:
    return (
        f"median {fmt.num(statistics.median(values))} {unit} "
        f"[{fmt.num(min(values))}-{fmt.num(max(values))}]"
    )


def machine(run: Run) -> list[str]:
    """The canary: the machine's own speed through the run."""
    m = run.manifest
    if m is not None and m.cluster and not m.canary:
        return [
            "No canary in a cluster run: it times one machine's CPUs, and the cells ran on "
            "several (the hosts are listed above)."
        ]
    if m is None or not m.canary:
        return [
            "No canary in this run (a version 1 run): the machine's speed through the run was "
            "not measured, so a slow hour cannot be told from a slow server."
        ]
    spins = [c.spin_us for c in m.canary]
    rtts = [c.pipe_rtt_us for c in m.canary]
    ms, mr = statistics.median(spins), statistics.median(rtts)
    slow = [c for c in m.canary if min(ms / c.spin_us, mr / c.pipe_rtt_us) < EPISODE_SPEED]
    out = [
        f"The canary ran {len(m.canary)} times between cells: a fixed CPU loop on the server's "
        f"CPU took {_spread(spins, 'us')}, a 1-byte pipe round trip between the server's and "
        f"the client's CPU {_spread(rtts, 'us')}. The spread of these fixed workloads is the "
        "machine's own drift during the run, which no server can be blamed for."
    ]
    if slow:
        when = ", ".join(c.at[11:19] for c in slow)
        out.append(
            f"{len(slow)} canary run(s) found the machine below {EPISODE_SPEED:.0%} of its "
            f"median speed (at {when} UTC): an episode of the host. Trials run next to them "
            "were run again at the end of the run, whatever their own speed (below)."
        )
    else:
        out.append(
            f"No canary run fell below {EPISODE_SPEED:.0%} of the run's median speed: no host "
            "episode was seen between cells."
        )
    return out


def reruns(run: Run) -> list[str]:
    """Every re-run and every earlier attempt: nothing measured is thrown away."""
    d = run.df
    if d.empty or "rerun" not in d.columns:
        return []
    r = d[d["rerun"].fillna("") != ""]
    rule = (
        "A trial is re-run once, at the end, when the canary next to it found the machine slow "
        "(whatever the trial's own speed), when another process used the server's CPU in its "
        f"window, or when it lies below {OUTLIER_SHARE:.2f}x or above {1 / OUTLIER_SHARE:.2f}x "
        "its point's median (fast outliers like slow ones)."
    )
    if r.empty and not run.attempts:
        return [rule + " No trial was re-run in this run."]
    limits = run.manifest.limits if run.manifest is not None else {}
    spoiled, rerun = int(limits.get("spoiled", 0)), int(limits.get("rerun", 0))
    if spoiled > rerun:
        rule += (
            f" {spoiled} trials looked spoiled, more than the {rerun} (a tenth of the run's "
            "cells) that may be re-run: the worst were, the rest stand with their flags. This "
            "host was noisier than re-runs can mend; the intervals below carry that noise."
        )
    lines = [
        rule + f" {len(r)} trial(s) were re-run; the figure is the last attempt's, and every "
        f"earlier attempt ({len(run.attempts)}) stays on disk under `attempts/`:"
    ]
    for _, row in r.iterrows():
        lines.append(f"- `{row['cell_id']}`: {row['rerun']}")
    for a in run.attempts:
        rps = f"{a.load.requests_per_s:,.0f} req/s" if a.load is not None else "no load result"
        what = f"failed: {a.reason}" if a.status == "failed" else rps
        lines.append(f"- earlier attempt of `{a.cell_id}` (started {a.started_at}): {what}")
    return lines


def calibration(run: Run) -> list[str]:
    """The split-half checks of the run's intervals, beside what they promise."""
    out = []
    for metric, cal in run.calibration.items():
        if metric not in CALIBRATION_SHOWN or not cal.checks:
            continue
        held = "; ".join(
            f"{c.name}: {c.held} of {c.points} points ({c.share:.0%})" for c in cal.checks
        )
        text = (
            f"Calibration of {CALIBRATION_SHOWN[metric]}: the halves of each point's rounds lay "
            f"inside each other's intervals for {held}; promised {cal.promised:.0%}. "
        )
        if cal.widen > 1.0:
            factor = f"{cal.widen:.2f}x" if cal.widen >= 1.005 else f"{cal.widen:.3f}x"
            text += (
                f"This host was noisier than the intervals assumed: every "
                f"{CALIBRATION_SHOWN[metric]} interval is widened {factor} to what held, and "
                "the verdicts follow the wider ones."
            )
        else:
            text += "The intervals held without widening."
        out.append(text)
    hold = paired_ratio_hold(ok_cells(run), ("concurrency", "per-request"), "process")
    if hold is not None:
        band, points = hold
        out.append(
            f"Ratios to the process server in the same cell (headline scenarios, {points} "
            f"points), paired round by round: a repeat run's ratio is expected within ±{band:.0%}"
            f" of this run's in {PROMISE:.0%} of points (from how far the odd and the even "
            "rounds' ratios moved apart, scaled to whole runs): compare such ratios across runs "
            "within that band, not within a fixed ±10%."
        )
    out.append(
        "What no check inside one run can see is a shift of the whole run (a host that is "
        "faster all afternoon): `make compare` counts how many of another run's medians fall "
        "inside this run's intervals."
    )
    return out


def trial_noise(run: Run) -> list[str]:
    d = run.findings.ok
    s = run.findings.summary("requests_per_s")
    s = s[(s["n"] > 1) & (s["starved"].fillna(0) == 0)]
    if s.empty:
        return ["One trial per cell: the noise between trials is unknown in this run."]
    cvs = s["cv"].dropna().tolist()
    n = int(s["n"].median())
    noisy = sum(c > CV_LIMIT for c in cvs)
    out = [
        f"Across {len(s)} measured points with more than one trial, the trials' requests/s "
        f"vary by a median CV of {fmt.pct(statistics.median(cvs))}; {noisy} of {len(cvs)} "
        f"have a CV over {fmt.pct(CV_LIMIT)}. Every figure is quoted as the median of its "
        f"{n} rounds (spread over the whole run) with an interval built to hold a repeat run's "
        f"median {coverage(n):.0%} of the time: the point's own spread, moderated by the run's "
        "pooled spread for the same figure, turned into a prediction interval for another "
        "run's median, never narrower than the trials' [min-max] (a 3-trial [min-max] holds a "
        "repeat run's median only 60% of the time). A difference between two servers counts "
        "only when their intervals do not overlap."
    ]
    # Trial order: trials run interleaved (A, B, C, A, B, C), so a trial-1 effect is start-up
    # of the run, not of the server.
    ratios = []
    for _, g in d.groupby(["scenario", "server", "server_args", "placement", "param_key"]):
        first = g[g["trial"] == 1]["requests_per_s"].dropna()
        rest = g[g["trial"] > 1]["requests_per_s"].dropna()
        if len(first) and len(rest) and float(rest.median()) > 0:
            ratios.append(float(first.iloc[0]) / float(rest.median()))
    if ratios:
        out.append(
            f"Trial 1 against the later trials of the same cell: median ratio "
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] over "
            f"{len(ratios)} cells (1.00: no start-up effect; every cell has its own fresh "
            "server and a closed primer connection before its load)."
        )
    return out


def wakeups(run: Run) -> list[str]:
    s = run.findings.placements()
    out = []
    for server in sorted(set(s["server"])):
        a = s[(s["server"] == server) & (s["placement"] == "split")]
        b = s[(s["server"] == server) & (s["placement"] == "shared")]
        if a.empty or b.empty:
            continue
        ra, rb = float(a["median"].iloc[0]), float(b["median"].iloc[0])
        if ra > 0:
            out.append(
                f"{server}, 1 connection: {fmt.num(rb)} req/s with client and server on one "
                f"CPU, {fmt.num(ra)} on two ({rb / ra:.1f}x): each round trip across CPUs "
                "wakes an idle CPU, a cost of the VM, not of the server. Every cell records "
                "its placement; the default keeps them apart so that the server's CPU is its own."
            )
    return out


def served(run: Run) -> list[str]:
    d = ok_cells(run)
    if d.empty or "starved" not in d.columns:
        return []
    st = d[d["starved"].fillna(0) > 0]
    if st.empty:
        return ["Every cell served every connection it names within its window."]
    lines = [
        f"{st['cell_id'].nunique()} cell result(s) did not serve every connection they name: "
        "their clients waited the whole window (counted in their latency as > window) and "
        "they are never drawn or ranked as capacity or latency:"
    ]
    for (server, conns), g in st.groupby(["label", "connections"]):
        lo, hi = int(g["served"].min()), int(g["served"].max())
        got = f"{lo}" if lo == hi else f"{lo}-{hi}"
        lines.append(f"- {server} at {int(conns)} connections: {got} of {int(conns)} served")
    return lines


def accounting(run: Run) -> list[str]:
    d = ok_cells(run, faults=True)
    if d.empty or "server_cpu_util" not in d.columns:
        return []
    out = []
    src = d["cpu_source"].fillna("none").value_counts().to_dict()
    over = d[(d["server_cpus"].fillna(0) > 0) & (d["server_cpu_util"] > d["server_cpus"] + 1e-9)]
    share = d["client_busy_share"].dropna()
    mon = d["monitor_cpu_s"].dropna()
    out.append(
        "Server CPU is counted over exactly the measured window: "
        + ", ".join(f"{n} cell result(s) from {k}" for k, n in sorted(src.items()))
        + " ('cgroup': the server tree's own cpuacct group, live children included, to the "
        "nanosecond; 'cpu': /proc/stat of the server's own CPUs, which books anything else "
        "there as the server's; 'tree': the server's process tree; 'v1-rate': the old estimate "
        "of a version 1 run). "
        + (
            f"{len(over)} cell result(s) report more CPU than the server was given."
            if len(over)
            else "No cell reports more CPU than the CPUs the server was pinned to."
        )
    )
    foreign = d["foreign_s"].dropna() if "foreign_s" in d.columns else d["server_cpus"][:0]
    if len(foreign):
        flagged = d[d["foreign_flag"]]
        out.append(
            f"Foreign CPU (busy time of the server's CPUs that was not the server's) was "
            f"measured in {len(foreign)} cell result(s): median {1e3 * float(foreign.median()):.0f}"
            f" ms per window, max {1e3 * float(foreign.max()):.0f} ms; {len(flagged)} beyond "
            "what the counters' resolution explains were flagged"
            + (
                " (re-run as far as the cap allows, above): "
                + ", ".join(f"`{c}`" for c in flagged["cell_id"].head(12))
                + (f" and {len(flagged) - 12} more" if len(flagged) > 12 else "")
                if len(flagged)
                else "."
            )
        )
    ratio = d["tree_vs_server"].dropna() if "tree_vs_server" in d.columns else foreign
    if len(ratio):
        out.append(
            "Cross-check: the tree's own /proc counters against the server CPU figure, median "
            f"{float(ratio.median()):.2f} [{float(ratio.min()):.2f}-{float(ratio.max()):.2f}] "
            "(below 1 where live children's time had not yet reached a clock tick or their "
            "parent's counters)."
        )
    if len(share):
        out.append(
            f"The client's CPUs were busy {fmt.pct(float(share.median()))} of the window in the "
            f"median cell (max {fmt.pct(float(share.max()))}); that busy time includes the "
            f"monitor, which used median {1000 * float(mon.median()):.0f} ms (max "
            f"{1000 * float(mon.max()):.0f} ms) of the client's CPU per window. Above 90% a "
            "cell is client-saturated."
        )
    return out


def open_loop(run: Run) -> list[str]:
    d = ok_cells(run)
    if d.empty or "target_rate" not in d.columns:
        return []
    o = d[d["target_rate"].notna()]
    if o.empty:
        return []
    miss = int(o["rate_miss"].sum())
    unsent = int(o["due_unsent"].fillna(0).sum())
    late = o["lateness_p99_us"].dropna()
    text = (
        f"Open loop: {len(o)} cell result(s); {miss} missed their target rate by more than 5%; "
        f"{unsent} requests fell due in a window but were never sent (counted, not dropped)."
    )
    if len(late):
        text += (
            f" The client's own send lateness had a p99 of median {fmt.num(float(late.median()))}"
            " us: latency tails near that figure are partly the client's."
        )
    return [text]


def hosts(run: Run) -> list[str]:
    """Where a cluster run's cells ran: each host's roles and clock offset, how far apart the
    shards' windows opened (nothing for a run on one machine)."""
    m = run.manifest
    if m is None or not m.cluster:
        return []
    out = [
        f"The load came from other hosts: a Dask cluster (scheduler {m.cluster}) ran each "
        "cell's server on a `server` worker and its load generator as one shard per `client` "
        "worker, all started on one barrier; each shard's histograms came back encoded and "
        "were added exactly. Hosts:"
    ]
    for h in m.hosts:
        env = h.environment
        out.append(
            f"- `{h.hostname}` ({h.host}, worker {h.worker}): {' and '.join(h.roles) or 'none'}; "
            f"{env.get('cpu_model') or 'CPU unknown'}, {env.get('cpu_count_logical')} CPUs, "
            f"kernel {env.get('kernel')}; clock {h.clock_offset_s * 1e3:+.2f} ms from the "
            "scheduler's"
        )
    skews = [
        c.cluster.start_skew_s
        for c in run.cells.values()
        if c.cluster is not None and c.cluster.start_skew_s is not None
    ]
    if skews:
        out.append(
            f"The shards' windows opened {_spread([s * 1e3 for s in skews], 'ms')} apart "
            f"(over {len(skews)} cells, on the scheduler's clock); the merged requests/s is "
            "the sum of each shard's own rate over its own window."
        )
    return out


def section(run: Run) -> list[str]:
    """Paragraphs (and '- ' list lines) of the method section, in reading order."""
    parts: list[list[str]] = [
        hosts(run),
        machine(run),
        reruns(run),
        trial_noise(run),
        calibration(run),
        wakeups(run),
        served(run),
        accounting(run),
        open_loop(run),
    ]
    return [p for part in parts for p in part]


def brief(run: Run) -> list[str]:
    """The main report's 'How sure': the machine's drift, what was re-run, and whether the
    intervals held on the run's own halves. The method in full is on the appendix page."""
    out = machine(run)[:1]
    limits = run.manifest.limits if run.manifest is not None else {}
    d = run.df
    rerun = 0 if d.empty or "rerun" not in d.columns else int((d["rerun"].fillna("") != "").sum())
    spoiled = int(limits.get("spoiled", rerun))
    out.append(
        f"{spoiled} trial(s) looked spoiled by the host (a slow canary beside them, another "
        "process on the server's CPU, or an outlier either way); "
        f"{rerun} were re-run at the end, and all {len(run.attempts)} earlier attempt(s) stay on "
        "disk and are listed in the appendix."
    )
    return out + calibration(run)
