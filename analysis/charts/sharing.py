"""Charts of what processes cost to create and to share state with, the machine's own speed,
and the book's two warnings (descriptors and zombies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import fmt, micro
from analysis.charts.style import (
    ORDER,
    Chart,
    label,
    not_measured,
    outside_legend,
    save_figure,
    scenario_cells,
    scenario_points,
    server_sort,
)
from analysis.charts.tables import summary_table
from analysis.document import Table
from analysis.results import Run


def creation_and_ipc_costs(run: Run, out: Path) -> Chart:
    name = "07-creation-and-ipc-costs"
    title = "Cost of creating work and of IPC round trips (microbenchmarks)"
    caption = (
        "Microseconds per operation, log scale: fork + exit + waitpid, fork + exec, thread "
        "start + join, task creation, and IPC round trips. Bars are Python medians with min-max; "
        "black diamonds are the C floor measured on the same machine, where there is one."
    )
    m = run.micro
    if m.empty:
        return not_measured(out, name, title, caption, run.micro_absent)
    py = m[m["impl"] == "python"].copy()
    py["order"] = py["name"].map(micro.order)
    py = py.sort_values("order", ascending=False).reset_index(drop=True)  # top to bottom
    c = m[m["impl"] == "c"]
    fig, ax = plt.subplots(figsize=(11, max(4.0, 0.4 * len(py) + 1.5)))
    ys = np.arange(len(py))
    err = np.vstack([py["median_us"] - py["min_us"], py["max_us"] - py["median_us"]])
    colours = {
        "creating work": "#4c72b0",
        "message between processes": "#dd8452",
        "message inside one process": "#8172b3",
        "shared counter": "#55a868",
    }
    cats = py["name"].map(micro.category).to_numpy()
    for cat, col in colours.items():
        sel = cats == cat
        if sel.any():
            ax.barh(
                ys[sel],
                py["median_us"][sel],
                xerr=err[:, sel],
                color=col,
                capsize=3,
                label=f"Python: {cat}",
            )
    for i, op in enumerate(py["name"]):
        floor = c[c["name"] == op]
        if not floor.empty:
            ax.scatter(floor["median_us"].iloc[0], i, marker="D", color="black", zorder=3)
    if not c.empty:
        ax.scatter([], [], marker="D", color="black", label="C floor")
    ax.set_yticks(ys, [micro.words(n) for n in py["name"]], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per operation (log)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    png, svg = save_figure(fig, out, name)
    rows = []
    for _, r in (
        m.assign(order=m["name"].map(micro.order)).sort_values(["order", "impl"]).iterrows()
    ):
        rows.append(
            [
                micro.words(str(r["name"])),
                str(r["impl"]),
                fmt.spread(r["median_us"], r["min_us"], r["max_us"], int(r["rounds"])),
                str(int(r["rounds"])),
                str(r["what"]),
            ]
        )
    table = Table(
        ["operation", "impl", "us, median [min-max]", "rounds", "what was timed"],
        rows,
        "Microbenchmarks, microseconds per operation",
    )
    return Chart(name, title, caption, png, svg, True, [table])


def shared_counter(run: Run, out: Path) -> Chart:
    name, title = (
        "08-shared-counter",
        "Sharing state: what a shared count costs, and whether it counts",
    )
    caption = (
        "10 persistent connections, one counter of echoed bytes shared by every connection. "
        "Left: server CPU per request (measured over the whole window, valid whoever was the "
        "limit) with no counter ('off') and with each kind: a plain global ('global'; for "
        "threads the control of 'lock', the same work without the mutex), a threading.Lock "
        "('lock'), and for processes shared memory + a process lock ('shm'), one record per "
        "child over a pipe ('pipe'), one message per echo over a pipe ('message'), or a plain "
        "global that each forked child copies ('naive': the control of 'message', the same "
        "work with no IPC). Right: the bytes each counter counted, as a share of the bytes the "
        "load generator got back: 'naive' counted nothing, because each child added to its own "
        "copy (CS:APP 12.1.2). A cross instead of a bar: the server did not serve all 10 "
        "connections."
    )
    d = scenario_cells(run, "shared-counter")
    if d.empty:
        return not_measured(out, name, title, caption, "no ok cell of scenario 'shared-counter'")
    s = scenario_points(run, "cpu_us_per_req", "shared-counter")
    s["counter"] = s["shared_counter"].fillna("off").astype(str)
    servers = server_sort(list(s["server"].unique()))
    modes = [
        "off",
        *[
            m
            for m in ("global", "lock", "naive", "shm", "pipe", "message")
            if m in set(s["counter"])
        ],
    ]
    width = 0.8 / len(modes)
    fig, (ax, right) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [2, 1]})
    hatches = ["", "//", "xx", "..", "\\\\", "++", "oo"]
    for j, mode in enumerate(modes):
        sm = s[s["counter"] == mode].set_index("server")
        xs, ys, lo, hi = [], [], [], []
        for i, server in enumerate(servers):
            if server not in sm.index:
                continue
            r = sm.loc[server]
            x = i + (j - (len(modes) - 1) / 2) * width
            if r.get("starved", 0):
                ax.scatter([x], [0.0], marker="x", color="black", clip_on=False, zorder=4)
                continue
            xs.append(x)
            ys.append(r["median"])
            lo.append(r["median"] - r["lo"])
            hi.append(r["hi"] - r["median"])
        ax.bar(
            xs,
            ys,
            width,
            yerr=[lo, hi],
            capsize=2,
            label=mode,
            color=plt.get_cmap("Set2")(j),
            hatch=hatches[j % len(hatches)],
            edgecolor="black",
        )
    ax.set_xticks(np.arange(len(servers)), [label(x) for x in servers], rotation=20, ha="right")
    ax.set_ylabel("server CPU us per request, median [interval]")
    ax.set_title("what the count costs")
    ax.grid(True, axis="y", alpha=0.3)
    outside_legend(ax, title="shared counter")
    counted = _counted_share(d)
    ys_r = np.arange(len(counted))
    right.barh(ys_r, [c * 100 for _, c in counted], color="#55a868", edgecolor="black")
    for y, (_, share) in zip(ys_r, counted, strict=True):
        right.annotate(
            f"{share:.1%}",
            (share * 100, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    right.set_yticks(ys_r, [w for w, _ in counted], fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, 110)
    right.axvline(100, color="grey", linestyle=":")
    right.set_xlabel("bytes counted / bytes echoed, % (all trials)")
    right.set_title("whether it counts")
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    table = summary_table(s, "counter", "counter", "server CPU us/request", "Shared counter")
    return Chart(name, title, caption, png, svg, True, [table])


def _counted_share(d: pd.DataFrame) -> list[tuple[str, float]]:
    """(server: mode, counted/echoed over every ok trial) for each counter that reports."""
    found = []
    have = d.dropna(subset=["stats_bytes", "bytes_received_total"])
    for (server, mode), g in have.groupby(["server", "shared_counter"], sort=False):
        echoed = float(g["bytes_received_total"].sum())
        if echoed > 0:
            found.append((str(server), str(mode), float(g["stats_bytes"].sum()) / echoed))
    order = {n: i for i, n in enumerate(ORDER)}
    found.sort(key=lambda x: (order.get(x[0], 99), x[1]))
    return [(f"{label(server)}: {mode}", share) for server, mode, share in found]


def machine_speed(run: Run, out: Path) -> Chart:
    name, title = "10-machine-speed", "The machine's own speed through the run (canary)"
    caption = (
        "Every 10 cells the runner times two fixed workloads: a CPU loop on the server's CPU and "
        "a 1-byte pipe round trip between the server's and the client's CPU. Plotted as speed "
        "relative to the run's median (1 = typical, below 1 = slower). A drop that no server "
        "can explain is the host: trials run next to a canary below the dashed line (0.7) are "
        "run again at the end. (Each cell is 0.8 s long, too short for a per-second timeline.)"
    )
    m = run.manifest
    if m is None or len(m.canary) < 2:
        return not_measured(out, name, title, caption, "no canary in this run (version 1)")
    t = [c.t_s for c in m.canary]
    spin = np.array([c.spin_us for c in m.canary])
    rtt = np.array([c.pipe_rtt_us for c in m.canary])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t, np.median(spin) / spin, marker="o", label="CPU loop on the server's CPU")
    ax.plot(t, np.median(rtt) / rtt, marker="s", label="pipe round trip across CPUs")
    ax.axhline(0.7, color="red", linestyle="--", linewidth=1, label="episode threshold (0.7)")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("speed relative to the run's median")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    png, svg = save_figure(fig, out, name)
    rows = [
        [c.at[11:19], str(c.after_cell), fmt.num(c.spin_us), fmt.num(c.pipe_rtt_us)]
        for c in m.canary
    ]
    headers = ["UTC", "after cell", "CPU loop us", "pipe round trip us"]
    return Chart(name, title, caption, png, svg, True, [Table(headers, rows, "Canary runs")])


def _fault_lines(run: Run, scenario: str) -> list[tuple[str, str, list[float], list[int], Any]]:
    """(line label, cell id, t, values source samples) of a fault scenario's cells, switch first."""
    d = run.findings.cells(scenario, faults=True)
    d = d.sort_values(["fault", "trial"], ascending=[False, True])
    out: list[tuple[str, str, list[float], list[int], Any]] = []
    seen: set[str] = set()
    for _, row in d.iterrows():
        kind = "switch on" if row["fault"] else "as written (Fig. 12.5)"
        cell = run.cells[row["cell_id"]]
        if kind in seen or cell.monitor is None or not cell.monitor.samples:
            continue  # one trial per variant keeps the picture readable
        seen.add(kind)
        samples = cell.monitor.samples
        out.append((kind, cell.cell_id, [x.t_s for x in samples], [], samples))
    return out


def book_warnings(run: Run, out: Path) -> Chart:
    name = "11-descriptors-and-zombies"
    title = "Descriptors and zombies over time: the book's two warnings"
    caption = (
        "The process server (CS:APP Fig. 12.5) under connection-per-request load, with a teaching "
        "switch on and as written. Left: open descriptors of the server's process tree with "
        "--leak-connfd (the parent never closes its connfd: one descriptor kept per client, "
        "climbing to the open-files limit, after which accept fails), and the server-side "
        "sockets left in CLOSE_WAIT (the client closed, the server never will), next to the "
        "same server closing connfd (flat). Right: zombies with --naive-reaper (one waitpid per "
        "SIGCHLD: signals do not queue, so children that exit together stay unreaped) next to "
        "the loop reaper. The descriptor count covers the whole process tree: every live "
        "child holds its own descriptors too, so the tree's total can pass the open-files "
        "limit, which binds each process (the parent's accept fails at it)."
    )
    leak, naive = _fault_lines(run, "leak-connfd"), _fault_lines(run, "naive-reaper")
    if not leak and not naive:
        return not_measured(
            out, name, title, caption, "no 'leak-connfd' or 'naive-reaper' cells in this run"
        )
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = []
    styles = {"switch on": "tab:red", "as written (Fig. 12.5)": "tab:blue"}
    for kind, cell_id, t, _, samples in leak:
        fds = [x.fds for x in samples]
        left.plot(t, fds, color=styles[kind], label=f"descriptors, {kind}")
        cw = [x.close_wait for x in samples]
        if any(c is not None for c in cw):
            left.plot(
                t,
                [c or 0 for c in cw],
                color=styles[kind],
                linestyle="--",
                label=f"CLOSE_WAIT sockets, {kind}",
            )
        rows.append(
            [
                "--leak-connfd",
                kind,
                cell_id,
                f"{fds[0]:,} -> {max(fds):,}",
                f"{fds[-1]:,}",
                f"{max((c or 0) for c in cw):,}",
            ]
        )
    for kind, cell_id, t, _, samples in naive:
        z = [x.zombies for x in samples]
        right.plot(t, z, color=styles[kind], label=f"zombies, {kind}")
        rows.append(["--naive-reaper", kind, cell_id, f"zombies peak {max(z):,}", f"{z[-1]:,}", ""])
    for ax, what, has in ((left, "open descriptors / sockets", leak), (right, "zombies", naive)):
        ax.set_xlabel("seconds since the server started")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        if has:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, fmt.NOT_MEASURED, ha="center", va="center", transform=ax.transAxes)
    limit = _nofile(run)
    if leak and limit:
        left.axhline(
            limit,
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"open-files limit of one process ({limit:,})",
        )
        left.legend(fontsize=8)
    left.set_title("--leak-connfd vs closing connfd")
    right.set_title("--naive-reaper vs the loop reaper")
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    headers = [
        "switch",
        "server",
        "cell drawn",
        "descriptors start -> peak",
        "at end",
        "CLOSE_WAIT peak",
    ]
    tables = [Table(headers, rows, "The two warnings: the trial drawn")]
    peaks = _fault_peaks(run)
    if peaks.rows:
        tables.append(peaks)
    return Chart(name, title, caption, png, svg, True, tables)


def _fault_peaks(run: Run) -> Table:
    """Every trial's peak, as the scorecard reads them (its figure is the largest)."""
    d = run.findings.ok_all
    rows = []
    for scenario, col in (("leak-connfd", "fds_peak"), ("naive-reaper", "zombies_peak")):
        sel = d[d["scenario"] == scenario] if not d.empty else d
        for fault, g in sel.groupby(sel["fault"].fillna(""), sort=False):
            vals = g[col].dropna().astype(int).tolist()
            if vals:
                kind = "switch on" if fault else "as written (Fig. 12.5)"
                rows.append([scenario, kind, ", ".join(f"{v:,}" for v in vals), f"{max(vals):,}"])
    return Table(
        ["scenario", "server", "peak in each trial", "largest (the scorecard's)"],
        rows,
        "Every trial's peak (descriptors or zombies)",
    )


def _nofile(run: Run) -> int | None:
    """The leak-connfd scenario's RLIMIT_NOFILE, as the run's profile set it."""
    if run.manifest is None:
        return None
    for sc in run.manifest.profile.get("scenarios", []):
        if isinstance(sc, dict) and sc.get("name") == "leak-connfd" and "nofile" in sc:
            return int(sc["nofile"])
    return None
