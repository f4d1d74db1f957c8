"""Charts of the servers under load: throughput, latency, memory, CPU per request, the open
loop, message size and the comparison at one offered rate."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import fmt
from analysis.charts.style import (
    Chart,
    at_load_rate,
    colour,
    draw_legend,
    draw_line,
    label,
    marker,
    not_measured,
    outside_legend,
    save_figure,
    scenario_cells,
    scenario_points,
    server_sort,
)
from analysis.charts.tables import summary_table
from analysis.document import Table
from analysis.results import Run, merged_histogram, percentiles_us


def throughput_vs_concurrency(run: Run, out: Path) -> Chart:
    name, title = "01-throughput-vs-concurrency", "Throughput vs concurrency (persistent, 64 B)"
    caption = (
        "Requests/s (one request = one 64 B echo round trip) against the number of persistent "
        "connections, closed loop. Higher is better."
    )
    return _rate_by_connections(
        run,
        out,
        "concurrency",
        (name, title, caption),
        ("persistent connections (log)", "requests/s", False),
        ("connections", "requests/s", "Throughput"),
    )


def _rate_by_connections(
    run: Run,
    out: Path,
    scenario: str,
    text: tuple[str, str, str],
    axes: tuple[str, str, bool],
    table_labels: tuple[str, str, str],
) -> Chart:
    """One line per server of the median requests/s against connections, with the spread."""
    name, title, caption = text
    xlabel, ylabel, log_y = axes
    s = scenario_points(run, "requests_per_s", scenario)
    if s.empty:
        return not_measured(out, name, title, caption, f"no ok cell of scenario '{scenario}'")
    fig, ax = plt.subplots(figsize=(9, 5))
    for server in server_sort(list(s["server"].unique())):
        draw_line(ax, s, server, "connections")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    draw_legend(ax, bool((s["saturated"] | s["port_bound"]).any()))
    png, svg = save_figure(fig, out, name)
    table = summary_table(s, "connections", *table_labels)
    return Chart(name, title, caption, png, svg, True, [table])


def latency_vs_concurrency(run: Run, out: Path) -> Chart:
    name, title = "02-latency-vs-concurrency", "Latency percentiles vs concurrency (persistent)"
    caption = (
        "Round-trip latency at p50, p99 and p99.9 (from each trial's HdrHistogram) against "
        "persistent connections. Log scales; lower is better."
    )
    metrics = [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")]
    sums = {m: scenario_points(run, m, "concurrency") for m, _ in metrics}
    if all(s.empty for s in sums.values()):
        return not_measured(out, name, title, caption, "no ok cell of scenario 'concurrency'")
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), sharey=True)
    for ax, (m, pname) in zip(axes, metrics, strict=True):
        s = sums[m]
        for server in server_sort(list(s["server"].unique())):
            draw_line(ax, s, server, "connections")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("persistent connections (log)")
        ax.set_title(pname)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("latency (us, log)")
    draw_legend(axes[0], any(bool((s["saturated"] | s["port_bound"]).any()) for s in sums.values()))
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    tables = [
        summary_table(sums[m], "connections", "connections", f"{pname} us", f"Latency {pname}")
        for m, pname in metrics
    ]
    return Chart(name, title, caption, png, svg, True, tables)


DIST_PERCENTILES = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]


def distribution_cell(run: Run) -> int | None:
    """The connections count whose cells the distribution chart shows: 100 if run, else most."""
    d = scenario_cells(run, "concurrency")
    if d.empty:
        return None
    conns = sorted(int(c) for c in d["connections"].dropna().unique())
    return 100 if 100 in conns else (conns[-1] if conns else None)


def latency_distribution(run: Run, out: Path) -> Chart:
    name = "03-latency-distribution"
    conns = distribution_cell(run)
    many = f"{conns} persistent connections" if conns is not None else "persistent connections"
    title = f"Latency by percentile, {many} (all trials merged)"
    caption = (
        "HdrHistogram-style percentile distribution: x is the percentile on a 1/(1-p) scale, so "
        "the tail gets the room it deserves; y is the latency there. Trials are merged into one "
        "histogram per server (lossless: same bounds everywhere). A server that did not serve "
        "every connection in the window is left out (its waiting clients' latency is more "
        "than the window) and listed as starved in the table."
    )
    d = scenario_cells(run, "concurrency")
    if conns is None:
        return not_measured(out, name, title, caption, "no ok cell of scenario 'concurrency'")
    d = d[d["connections"] == conns]
    fig, ax = plt.subplots(figsize=(10, 5))
    rows = []
    for server in server_sort(list(d["server"].unique())):
        own = d[d["server"] == server]
        hungry = own["starved"].fillna(0) > 0 if "starved" in own.columns else own["trial"] < 0
        if hungry.any():
            # A pool that served 4 of 100 has the best latency of all, for 4 clients: its
            # distribution is not this chart's; the other clients waited longer than the window.
            served = int(own["served"].min())
            rows.append(
                [
                    label(server),
                    f"STARVED: {served} of {conns} served",
                    "> window",
                    "> window",
                    "> window",
                    "> window",
                ]
            )
            continue
        cells = [run.cells[c] for c in own["cell_id"]]
        h = merged_histogram(cells)
        if h is None or h.get_total_count() == 0:
            continue
        values = percentiles_us(h, DIST_PERCENTILES)
        xs = [1.0 / (1.0 - p / 100.0) for p in DIST_PERCENTILES]
        ax.plot(
            xs,
            [values[p] for p in DIST_PERCENTILES],
            color=colour(server),
            marker=marker(server),
            ms=4,
        )
        ax.lines[-1].set_label(label(server))
        rows.append(
            [label(server), f"{h.get_total_count():,}"]
            + [fmt.num(values[p]) for p in (50.0, 99.0, 99.9, 99.99)]
        )
    ticks = [0.0, 90.0, 99.0, 99.9, 99.99]
    ax.set_xscale("log")
    ax.set_xticks([1.0 / (1.0 - p / 100.0) for p in ticks], [f"{p:g}%" for p in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (us, log)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    outside_legend(ax)
    png, svg = save_figure(fig, out, name)
    table = Table(
        ["server", "samples", "p50 us", "p99 us", "p99.9 us", "p99.99 us"],
        rows,
        "Merged histograms",
    )
    return Chart(name, title, caption, png, svg, True, [table])


def connections_per_second(run: Run, out: Path) -> Chart:
    name = "04-connections-per-second"
    title = "Connections per second, connection per request (connect, 64 B echo, close)"
    caption = (
        "Each request opens a connection, echoes 64 B and closes: for the fork-per-connection "
        "servers every request pays a fork (and an exec for inetd) and a waitpid. This is the "
        "process-control cost of CS:APP 12.1.2 as a client feels it. Higher is better."
    )
    return _rate_by_connections(
        run,
        out,
        "per-request",
        (name, title, caption),
        ("concurrent clients (log)", "connections/s (log)", True),
        ("clients", "connections/s", "Connections per second"),
    )


def memory_per_connection(run: Run, out: Path) -> Chart:
    name, title = "05-memory-per-connection", "Server memory per connection (PSS and RSS)"
    caption = (
        "Growth of the server's whole process tree (peak minus idle) divided by connections. RSS "
        "counts a shared page once in every process that maps it, so it overstates a forked "
        "server; PSS splits shared pages between their sharers and is the fair figure."
    )
    sums = {
        m: scenario_points(run, m, "concurrency")
        for m in ("pss_per_conn_bytes", "rss_per_conn_bytes")
    }
    if all(s.empty for s in sums.values()):
        return not_measured(out, name, title, caption, "no monitored 'concurrency' cell")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, (m, s) in zip(axes, sums.items(), strict=True):
        for server in server_sort(list(s["server"].unique())):
            draw_line(ax, s, server, "connections", scale=1 / 1024)
        ax.set_xscale("log")
        ax.set_yscale("log")  # 1 KiB (event loop) to ~1 MiB (a forked child): decades apart
        ax.set_xlabel("persistent connections (log)")
        ax.set_ylabel("KiB per connection (log)")
        ax.set_title("PSS" if m.startswith("pss") else "RSS")
        ax.grid(True, alpha=0.3)
    draw_legend(axes[0], hollow=False)
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    tables = []
    for m, s in sums.items():
        kib = s.copy()
        for col in ("median", "lo", "hi"):
            kib[col] = kib[col] / 1024
        what = "PSS" if m.startswith("pss") else "RSS"
        tables.append(summary_table(kib, "connections", "connections", f"{what} KiB/conn", what))
    return Chart(name, title, caption, png, svg, True, tables)


def _at_10_served(s: pd.DataFrame) -> pd.DataFrame:
    if s.empty:
        return s
    return s[(s["connections"] == 10) & (s["starved"].fillna(0) == 0)].reset_index(drop=True)


def cpu_per_request(run: Run, out: Path) -> Chart:
    name, title = "06-cpu-per-request", "Server CPU per request, user vs sys"
    caption = (
        "Server CPU per request over exactly the measured window (the busy time of the server's "
        "own CPU: parent, children and the kernel's work for them), split into user and kernel "
        "(sys) time, at 10 clients, log scale. Persistent: the cost of an echo; per request: "
        "the echo plus accept, fork/thread/task and close. Lower is better."
    )
    panels = [("concurrency", "persistent connections"), ("per-request", "connection per request")]
    data = []
    for scen, ptitle in panels:
        # at 10 clients, and only points that served all 10 (a pool of 4 is not "10 clients")
        su, ss, st = (
            _at_10_served(scenario_points(run, m, scen))
            for m in ("cpu_user_us_per_req", "cpu_sys_us_per_req", "cpu_us_per_req")
        )
        data.append((ptitle, su, ss, st))
    if all(st.empty for _, _, _, st in data):
        return not_measured(out, name, title, caption, "no monitored cell at 10 clients")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    tables = []
    for ax, (ptitle, su, ss, st) in zip(axes, data, strict=True):
        ax.set_title(ptitle)
        if st.empty:
            ax.text(0.5, 0.5, fmt.NOT_MEASURED, ha="center", va="center", transform=ax.transAxes)
            continue
        servers = server_sort(list(st["server"].unique()))
        xs = np.arange(len(servers))
        user = [su[su["server"] == s]["median"].iloc[0] for s in servers]
        sys_ = [ss[ss["server"] == s]["median"].iloc[0] for s in servers]
        tot = st.set_index("server").loc[servers]
        # Side by side on a log axis, not stacked: a fork's thousands of us and an event loop's
        # few us are decades apart, and medians of user and of sys need not add up to the
        # median of the total (each is the middle trial of its own figure).
        ax.bar(xs - 0.2, user, width=0.4, color="#4c72b0", label="user (median)")
        ax.bar(xs + 0.2, sys_, width=0.4, color="#dd8452", label="sys (median)")
        err = np.vstack([tot["median"] - tot["lo"], tot["hi"] - tot["median"]])
        ax.errorbar(
            xs,
            tot["median"],
            yerr=err,
            fmt="D",
            color="black",
            capsize=3,
            label="total, median [interval]",
        )
        ax.set_yscale("log")
        ax.set_xticks(xs, [label(s) for s in servers], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("server CPU us per request (log)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        rows = []
        for s, u, y in zip(servers, user, sys_, strict=True):
            t = tot.loc[s]
            rows.append(
                [
                    label(s),
                    fmt.num(u),
                    fmt.num(y),
                    fmt.spread(t["median"], t["lo"], t["hi"], int(t["n"])),
                    str(int(t["n"])),
                ]
            )
        headers = [
            "server",
            "user us (median)",
            "sys us (median)",
            "total us, median [interval]",
            "trials",
        ]
        tables.append(Table(headers, rows, f"CPU per request, {ptitle}, 10 clients"))
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    return Chart(name, title, caption, png, svg, True, tables)


def open_loop_tail(run: Run, out: Path) -> Chart:
    name, title = "09-open-loop-tail", "Open loop: tail latency vs offered load"
    caption = (
        "Requests sent on a fixed schedule at a fraction of the server's own closed-loop rate; "
        "latency counts from when a request was due, so queueing is included (no coordinated "
        "omission). p50 and p99, log scale."
    )
    sums = {m: scenario_points(run, m, "open-loop") for m in ("p50_us", "p99_us")}
    if all(s.empty for s in sums.values()):
        return not_measured(out, name, title, caption, "no ok cell of scenario 'open-loop'")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, (m, s) in zip(axes, sums.items(), strict=True):
        s["pct_load"] = s["rate_fraction"].astype(float) * 100
        for server in server_sort(list(s["server"].unique())):
            draw_line(ax, s, server, "pct_load")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (% of the server's closed-loop requests/s)")
        ax.set_title(m.split("_")[0])
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("latency (us, log)")
    draw_legend(axes[0], any(bool((s["saturated"] | s["port_bound"]).any()) for s in sums.values()))
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    tables = [
        summary_table(s, "pct_load", "offered % of capacity", f"{m.split('_')[0]} us", m)
        for m, s in sums.items()
    ]
    return Chart(name, title, caption, png, svg, True, tables)


def message_size(run: Run, out: Path) -> Chart:
    name, title = "12-message-size", "Echo throughput vs message size (10 persistent connections)"
    caption = (
        "Bytes echoed per second (requests/s x message size) against the message size, log "
        "scales. Small messages measure the per-request cost of the model; big ones the copy "
        "cost, which the kernel pays alike for every model, so the lines should meet there."
    )
    s = scenario_points(run, "requests_per_s", "size")
    if s.empty:
        return not_measured(out, name, title, caption, "no ok cell of scenario 'size'")
    mb = s.copy()
    for col in ("median", "lo", "hi"):
        mb[col] = mb[col] * mb["size"].astype(float) / 1e6
    fig, ax = plt.subplots(figsize=(9, 5))
    for server in server_sort(list(mb["server"].unique())):
        draw_line(ax, mb, server, "size")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("message size, bytes (log)")
    ax.set_ylabel("MB/s echoed (log)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    draw_legend(ax, bool((mb["saturated"] | mb["port_bound"]).any()))
    png, svg = save_figure(fig, out, name)
    table = summary_table(mb, "size", "bytes", "MB/s", "Throughput by message size")
    return Chart(name, title, caption, png, svg, True, [table])


def cpu_at_load(run: Run, out: Path) -> Chart:
    name, title = "15-cpu-at-load", "Server CPU per request at one offered rate"
    rate = at_load_rate(run)
    caption = (
        f"Every server at the same offered load ({fmt.num(rate) if rate else '?'} requests/s "
        "in all, open loop, 64 B, persistent connections; a pool has a worker per "
        "connection), at 10, 100 and 1000 connections: the server's own CPU (its cgroup: "
        "parent, children, threads and the kernel's work for them) over the window, per "
        "request. This is the comparison at load that the server decides: the load generator "
        "kept the same schedule for all, and a server's CPU per request falls as its load "
        "rises (it handles more per wake-up), so figures taken at different rates would not "
        "compare. Log scales; lower is cheaper."
    )
    s = scenario_points(run, "cpu_us_per_req", "at-load")
    if s.empty:
        return not_measured(out, name, title, caption, "no ok cell of scenario 'at-load'")
    fig, ax = plt.subplots(figsize=(11, 5))
    for server in server_sort(list(s["server"].unique())):
        draw_line(ax, s, server, "connections")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("persistent connections (log)")
    ax.set_ylabel("server CPU us per request (log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    draw_legend(ax, bool((s["saturated"] | s["port_bound"]).any()))
    png, svg = save_figure(fig, out, name)
    table = summary_table(s, "connections", "connections", "server CPU us/request", "At load")
    return Chart(name, title, caption, png, svg, True, [table])
