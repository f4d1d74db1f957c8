"""The report's charts: one function per chart, each drawing from the run's tidy DataFrame.

Every chart function takes the loaded `Run` (and the output directory), writes
`charts/<name>.png` and `charts/<name>.svg`, and returns a `Chart` with the numbers it drew as
a table, so the report shows each figure twice: as a picture and as text with its spread.

Conventions, the same on every chart (they are the report's honesty rules):

* a point is the median over trials; its error bar spans the trials' min..max;
* a red star marks a point whose trials disagree (coefficient of variation over 10%);
* a hollow marker is a client-saturated (or port-bound) cell: the load generator, not the
  server, was the limit, so the figure is a lower bound and never the server's capacity;
* a chart whose cells are absent from the run is still written, saying "not measured in this
  run", so a missing experiment is visible rather than silently gone.

matplotlib runs headless (Agg). Each server is drawn in its own colour and marker, both owned
by the registry (servers/registry.py): no two servers share a pair, in any chart. Legends sit
outside the plotting area, so they never cover the points the text quotes.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from analysis import fmt, forkcost, micro
from analysis.document import Table
from analysis.results import Run, merged_histogram, ok_cells, percentiles_us
from analysis.stats import CV_LIMIT, summarise
from servers.registry import SERVERS

_ORDER = list(SERVERS)


def outside_legend(ax: Axes, handles: list[Any] | None = None, labels: list[str] | None = None,
                   title: str | None = None) -> None:  # fmt: skip
    """A legend right of the plotting area: it never covers a point the text quotes."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, title=title, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # fmt: skip


def colour(server: str) -> str:
    spec = SERVERS.get(server)
    return spec.colour if spec else "#777777"


def marker(server: str) -> str:
    spec = SERVERS.get(server)
    return spec.marker if spec else "o"


def label(server: str) -> str:
    spec = SERVERS.get(server)
    return spec.label if spec else server


def _server_sort(servers: list[str]) -> list[str]:
    return sorted(servers, key=lambda s: (_ORDER.index(s) if s in _ORDER else 99, s))


@dataclass
class Chart:
    name: str  # file stem under charts/
    title: str
    caption: str  # how to read it
    png: Path
    svg: Path
    measured: bool
    tables: list[Table] = field(default_factory=list)


# Hover values: a point's artist gets an SVG id and its text here; _save writes the text as the
# SVG <title> of that element, which a browser shows on hover (the HTML inlines the SVG).
_TIPS: dict[str, str] = {}
_TIP_IDS = itertools.count()


def _tip(artist: Any, text: str) -> None:
    gid = f"tip{next(_TIP_IDS)}"
    artist.set_gid(gid)
    _TIPS[gid] = text


def _svg_titles(svg: Path) -> None:
    text = svg.read_text(encoding="utf-8")
    for gid, tip in list(_TIPS.items()):
        anchor = f'<g id="{gid}">'
        if anchor in text:
            text = text.replace(anchor, f"{anchor}<title>{html.escape(tip)}</title>", 1)
            del _TIPS[gid]
    svg.write_text(text, encoding="utf-8")


def _tick(value: float, _pos: object = None) -> str:
    """A log axis's tick as a plain number: 1, 10, 100, 1,000 (never 10^0, 10^1)."""
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:g}"


def _plain_log_ticks(fig: Figure) -> None:
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":  # minor ticks too: never "4 x 10^1"
                axis.set_major_formatter(FuncFormatter(_tick))
                axis.set_minor_formatter(FuncFormatter(_tick))


def _save(fig: Figure, out: Path, name: str, layout: bool = True) -> tuple[Path, Path]:
    """`layout=False`: the figure is laid out already (labels placed against its geometry)."""
    out.mkdir(parents=True, exist_ok=True)
    _plain_log_ticks(fig)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    # one layout pass, not bbox_inches="tight" (which draws every figure twice per format)
    if layout:
        fig.tight_layout()
    fig.savefig(png, dpi=100)
    fig.savefig(svg)
    plt.close(fig)
    _svg_titles(svg)
    return png, svg


def _not_measured(out: Path, name: str, title: str, caption: str, what: str) -> Chart:
    fig, ax = plt.subplots(figsize=(8, 2.2))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"{fmt.NOT_MEASURED}\n({what})", ha="center", va="center", fontsize=12)
    png, svg = _save(fig, out, name)
    return Chart(name, title, caption, png, svg, measured=False)


def _flags(row: pd.Series) -> str:
    flags = []
    if not math.isnan(row["cv"]) and row["cv"] > CV_LIMIT:
        flags.append(f"CV {fmt.pct(row['cv'])} (noisy)")
    if row["saturated"]:
        flags.append("client-saturated: a lower bound, not capacity")
    if row["port_bound"]:
        flags.append("port-bound: measures the port allocator")
    if row.get("starved", 0):
        served = int(row.get("served", 0) or 0)
        flags.append(
            f"STARVED: {served} of {int(row.get('asked', 0) or 0)} connections served in the "
            "window (the rest waited > window): not capacity, not latency"
        )
    return "; ".join(flags)


def summary_table(s: pd.DataFrame, x: str, x_name: str, metric_name: str, caption: str) -> Table:
    """The numbers behind a chart as a grid: one row per server (the registry's order), one
    column per value of `x`; each cell the median [min-max] over trials, with its flags."""
    xs = list(dict.fromkeys(s[x].dropna().tolist())) if not s.empty else []
    with contextlib.suppress(TypeError, ValueError):
        xs = sorted(xs, key=float)  # numbers in order; words (placements, counters) as found
    rows = []
    notes: list[str] = []
    for server in _server_sort(list(s["server"].unique())) if not s.empty else []:
        own = s[s["server"] == server]
        row = [label(server)]
        for xv in xs:
            hit = own[own[x] == xv]
            if hit.empty:
                row.append("")
                continue
            r = hit.iloc[0]
            text = fmt.spread(r["median"], r["lo"], r["hi"], int(r["n"]))
            marks = []
            if not math.isnan(r["cv"]) and r["cv"] > CV_LIMIT:
                marks.append("noisy")
            if r["saturated"]:
                marks.append("client-limited")
            if r["port_bound"]:
                marks.append("port-bound")
            if r.get("starved", 0):
                served, asked = int(r.get("served", 0) or 0), int(r.get("asked", 0) or 0)
                text = f"STARVED: {served} of {asked} served"
            row.append(text + (f" ({', '.join(marks)})" if marks else ""))
        rows.append(row)
    if any("client-limited" in c for r in rows for c in r):
        notes.append("client-limited: the load generator's CPUs were the limit, a lower bound")
    if any("STARVED" in c for r in rows for c in r):
        notes.append("STARVED: not every connection was served in the window: not a figure")
    if any("noisy" in c for r in rows for c in r):
        notes.append(f"noisy: trials' CV over {fmt.pct(CV_LIMIT)}")
    text = f"{caption}: {metric_name}, median [interval] over trials"
    if notes:
        text += ". " + "; ".join(notes)
    return Table(["server", *[f"{fmt.param(v)} {x_name}" for v in xs]], rows, text)


def _line(ax: Axes, s: pd.DataFrame, server: str, x: str, scale: float = 1.0) -> None:
    """One server's medians with interval bars; hollow markers where the client was the limit.

    A starved cell is not on the line: a cross on the x axis, in the server's colour, marks
    where it would be (it measured a few clients, not the connections it names; the table
    under the chart says how many were served)."""
    d = s[s["server"] == server].sort_values(x)
    hungry = d["starved"].fillna(0) > 0 if "starved" in d.columns else d["median"].isna() & False
    starved, d = d[hungry], d[~hungry]
    c = colour(server)
    for _, r in starved.iterrows():
        # a cross on the axis where the point would be; how many were served is in the table
        ax.scatter([float(r[x])], [0.0], marker="x", color=c, clip_on=False, zorder=4,
                   transform=ax.get_xaxis_transform())  # fmt: skip
    if d.empty:
        return
    xs = d[x].astype(float).to_numpy()
    med = d["median"].to_numpy() * scale
    err = np.vstack([med - d["lo"].to_numpy() * scale, d["hi"].to_numpy() * scale - med])
    mk = marker(server)
    ax.errorbar(xs, med, yerr=err, color=c, marker=mk, ms=6, capsize=3, label=label(server))
    limited = (d["saturated"] | d["port_bound"]).to_numpy()
    for i, (px, py) in enumerate(zip(xs, med, strict=True)):
        # One artist per point, so the SVG can carry each point's value as a hover title.
        r = d.iloc[i]
        tip = (
            f"{label(server)}, {fmt.param(r[x])} {x}: "
            f"{fmt.spread(r['median'] * scale, r['lo'] * scale, r['hi'] * scale, int(r['n']))}"
            + (" (client-limited)" if limited[i] else "")
        )
        face = "white" if limited[i] else c  # hollow: drawn over the line's filled marker
        dot = ax.scatter([px], [py], facecolors=face, edgecolors=c, marker=mk, zorder=3)
        _tip(dot, tip)
    noisy = (d["cv"].fillna(0) > CV_LIMIT).to_numpy()
    for px, py in zip(xs[noisy], med[noisy], strict=True):
        ax.annotate("*", (px, py), xytext=(4, 4), textcoords="offset points", color="red")


def _legend(ax: Axes, hollow: bool) -> None:
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="$*$", color="red", linestyle="none"))
    labels.append(f"* trials' CV > {fmt.pct(CV_LIMIT)}: noisy")
    handles.append(Line2D([], [], marker="x", color="grey", linestyle="none"))
    labels.append("x on the axis: clients starved, not a figure (see table)")
    if hollow:
        handles.append(
            Line2D([], [], marker="o", color="grey", markerfacecolor="none", linestyle="none")
        )
        labels.append("hollow: client-limited, not capacity")
    outside_legend(ax, handles, labels)


def _scenario(run: Run, scenario: str, placement: str | None = "split") -> pd.DataFrame:
    d = ok_cells(run)
    if d.empty:
        return d
    d = d[d["scenario"] == scenario]
    return d[d["placement"] == placement] if placement else d


# --------------------------------------------------------------------------- 1


def throughput_vs_concurrency(run: Run, out: Path) -> Chart:
    name, title = "01-throughput-vs-concurrency", "Throughput vs concurrency (persistent, 64 B)"
    caption = (
        "Requests/s (one request = one 64 B echo round trip) against the number of persistent "
        "connections, closed loop. Higher is better."
    )
    return _rate_by_connections(
        run, out, "concurrency", (name, title, caption),
        ("persistent connections (log)", "requests/s", False),
        ("connections", "requests/s", "Throughput"),
    )  # fmt: skip


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
    s = summarise(_scenario(run, scenario), "requests_per_s")
    if s.empty:
        return _not_measured(out, name, title, caption, f"no ok cell of scenario '{scenario}'")
    fig, ax = plt.subplots(figsize=(9, 5))
    for server in _server_sort(list(s["server"].unique())):
        _line(ax, s, server, "connections")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(ax, bool((s["saturated"] | s["port_bound"]).any()))
    png, svg = _save(fig, out, name)
    table = summary_table(s, "connections", *table_labels)
    return Chart(name, title, caption, png, svg, True, [table])


# --------------------------------------------------------------------------- 2


def latency_vs_concurrency(run: Run, out: Path) -> Chart:
    name, title = "02-latency-vs-concurrency", "Latency percentiles vs concurrency (persistent)"
    caption = (
        "Round-trip latency at p50, p99 and p99.9 (from each trial's HdrHistogram) against "
        "persistent connections. Log scales; lower is better."
    )
    d = _scenario(run, "concurrency")
    metrics = [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")]
    sums = {m: summarise(d, m) for m, _ in metrics}
    if all(s.empty for s in sums.values()):
        return _not_measured(out, name, title, caption, "no ok cell of scenario 'concurrency'")
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), sharey=True)
    for ax, (m, pname) in zip(axes, metrics, strict=True):
        s = sums[m]
        for server in _server_sort(list(s["server"].unique())):
            _line(ax, s, server, "connections")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("persistent connections (log)")
        ax.set_title(pname)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("latency (us, log)")
    _legend(axes[0], any(bool((s["saturated"] | s["port_bound"]).any()) for s in sums.values()))
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
    tables = [
        summary_table(sums[m], "connections", "connections", f"{pname} us", f"Latency {pname}")
        for m, pname in metrics
    ]
    return Chart(name, title, caption, png, svg, True, tables)


# --------------------------------------------------------------------------- 3

DIST_PERCENTILES = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]


def distribution_cell(run: Run) -> int | None:
    """The connections count whose cells the distribution chart shows: 100 if run, else most."""
    d = _scenario(run, "concurrency")
    if d.empty:
        return None
    conns = sorted(int(c) for c in d["connections"].dropna().unique())
    return 100 if 100 in conns else (conns[-1] if conns else None)


def latency_distribution(run: Run, out: Path) -> Chart:
    name = "03-latency-distribution"
    conns = distribution_cell(run)
    title = f"Latency by percentile, {conns} persistent connections (all trials merged)"
    caption = (
        "HdrHistogram-style percentile distribution: x is the percentile on a 1/(1-p) scale, so "
        "the tail gets the room it deserves; y is the latency there. Trials are merged into one "
        "histogram per server (lossless: same bounds everywhere). A server that did not serve "
        "every connection in the window is left out (its waiting clients' latency is more "
        "than the window) and listed as starved in the table."
    )
    d = _scenario(run, "concurrency")
    if conns is None:
        return _not_measured(out, name, title, caption, "no ok cell of scenario 'concurrency'")
    d = d[d["connections"] == conns]
    fig, ax = plt.subplots(figsize=(10, 5))
    rows = []
    for server in _server_sort(list(d["server"].unique())):
        own = d[d["server"] == server]
        hungry = own["starved"].fillna(0) > 0 if "starved" in own.columns else own["trial"] < 0
        if hungry.any():
            # A pool that served 4 of 100 has the best latency of all, for 4 clients: its
            # distribution is not this chart's; the other clients waited longer than the window.
            served = int(own["served"].min())
            rows.append([label(server), f"STARVED: {served} of {conns} served",
                         "> window", "> window", "> window", "> window"])  # fmt: skip
            continue
        cells = [run.cells[c] for c in own["cell_id"]]
        h = merged_histogram(cells)
        if h is None or h.get_total_count() == 0:
            continue
        values = percentiles_us(h, DIST_PERCENTILES)
        xs = [1.0 / (1.0 - p / 100.0) for p in DIST_PERCENTILES]
        ax.plot(xs, [values[p] for p in DIST_PERCENTILES], color=colour(server),
                marker=marker(server), ms=4)  # fmt: skip
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
    png, svg = _save(fig, out, name)
    table = Table(
        ["server", "samples", "p50 us", "p99 us", "p99.9 us", "p99.99 us"],
        rows,
        "Merged histograms",
    )
    return Chart(name, title, caption, png, svg, True, [table])


# --------------------------------------------------------------------------- 4


def connections_per_second(run: Run, out: Path) -> Chart:
    name = "04-connections-per-second"
    title = "Connections per second, connection per request (connect, 64 B echo, close)"
    caption = (
        "Each request opens a connection, echoes 64 B and closes: for the fork-per-connection "
        "servers every request pays a fork (and an exec for inetd) and a waitpid. This is the "
        "process-control cost of CS:APP 12.1.2 as a client feels it. Higher is better."
    )
    return _rate_by_connections(
        run, out, "per-request", (name, title, caption),
        ("concurrent clients (log)", "connections/s (log)", True),
        ("clients", "connections/s", "Connections per second"),
    )  # fmt: skip


# --------------------------------------------------------------------------- 5


def memory_per_connection(run: Run, out: Path) -> Chart:
    name, title = "05-memory-per-connection", "Server memory per connection (PSS and RSS)"
    caption = (
        "Growth of the server's whole process tree (peak minus idle) divided by connections. RSS "
        "counts a shared page once in every process that maps it, so it overstates a forked "
        "server; PSS splits shared pages between their sharers and is the fair figure."
    )
    d = _scenario(run, "concurrency")
    sums = {m: summarise(d, m) for m in ("pss_per_conn_bytes", "rss_per_conn_bytes")}
    if all(s.empty for s in sums.values()):
        return _not_measured(out, name, title, caption, "no monitored 'concurrency' cell")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, (m, s) in zip(axes, sums.items(), strict=True):
        for server in _server_sort(list(s["server"].unique())):
            _line(ax, s, server, "connections", scale=1 / 1024)
        ax.set_xscale("log")
        ax.set_yscale("log")  # 1 KiB (event loop) to ~1 MiB (a forked child): decades apart
        ax.set_xlabel("persistent connections (log)")
        ax.set_ylabel("KiB per connection (log)")
        ax.set_title("PSS" if m.startswith("pss") else "RSS")
        ax.grid(True, alpha=0.3)
    _legend(axes[0], hollow=False)
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
    tables = []
    for m, s in sums.items():
        kib = s.copy()
        for col in ("median", "lo", "hi"):
            kib[col] = kib[col] / 1024
        what = "PSS" if m.startswith("pss") else "RSS"
        tables.append(summary_table(kib, "connections", "connections", f"{what} KiB/conn", what))
    return Chart(name, title, caption, png, svg, True, tables)


# --------------------------------------------------------------------------- 6


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
        d = _scenario(run, scen)
        if not d.empty:
            # at 10 clients, and only cells that served all 10 (a pool of 4 is not "10 clients")
            d = d[(d["connections"] == 10) & (d["starved"].fillna(0) == 0)]
        su, ss = summarise(d, "cpu_user_us_per_req"), summarise(d, "cpu_sys_us_per_req")
        st = summarise(d, "cpu_us_per_req")
        data.append((ptitle, su, ss, st))
    if all(st.empty for _, _, _, st in data):
        return _not_measured(out, name, title, caption, "no monitored cell at 10 clients")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    tables = []
    for ax, (ptitle, su, ss, st) in zip(axes, data, strict=True):
        ax.set_title(ptitle)
        if st.empty:
            ax.text(0.5, 0.5, fmt.NOT_MEASURED, ha="center", va="center", transform=ax.transAxes)
            continue
        servers = _server_sort(list(st["server"].unique()))
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
        ax.errorbar(xs, tot["median"], yerr=err, fmt="D", color="black", capsize=3,
                    label="total, median [interval]")  # fmt: skip
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
        headers = ["server", "user us (median)", "sys us (median)", "total us, median [interval]",
                   "trials"]  # fmt: skip
        tables.append(Table(headers, rows, f"CPU per request, {ptitle}, 10 clients"))
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
    return Chart(name, title, caption, png, svg, True, tables)


# --------------------------------------------------------------------------- 7


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
        return _not_measured(out, name, title, caption, run.micro_absent)
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
            ax.barh(ys[sel], py["median_us"][sel], xerr=err[:, sel], color=col, capsize=3,
                    label=f"Python: {cat}")  # fmt: skip
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
    png, svg = _save(fig, out, name)
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


# --------------------------------------------------------------------------- 8


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
    d = _scenario(run, "shared-counter")
    if d.empty:
        return _not_measured(out, name, title, caption, "no ok cell of scenario 'shared-counter'")
    s = summarise(d, "cpu_us_per_req")
    s["counter"] = s["shared_counter"].fillna("off").astype(str)
    servers = _server_sort(list(s["server"].unique()))
    modes = ["off", *[m for m in ("global", "lock", "naive", "shm", "pipe", "message")
                      if m in set(s["counter"])]]  # fmt: skip
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
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=mode,
               color=plt.get_cmap("Set2")(j), hatch=hatches[j % len(hatches)],
               edgecolor="black")  # fmt: skip
    ax.set_xticks(np.arange(len(servers)), [label(x) for x in servers], rotation=20, ha="right")
    ax.set_ylabel("server CPU us per request, median [interval]")
    ax.set_title("what the count costs")
    ax.grid(True, axis="y", alpha=0.3)
    outside_legend(ax, title="shared counter")
    counted = _counted_share(d)
    ys_r = np.arange(len(counted))
    right.barh(ys_r, [c * 100 for _, c in counted], color="#55a868", edgecolor="black")
    for y, (_, share) in zip(ys_r, counted, strict=True):
        right.annotate(f"{share:.1%}", (share * 100, y), xytext=(3, 0),
                       textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    right.set_yticks(ys_r, [w for w, _ in counted], fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, 110)
    right.axvline(100, color="grey", linestyle=":")
    right.set_xlabel("bytes counted / bytes echoed, % (all trials)")
    right.set_title("whether it counts")
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
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
    order = {n: i for i, n in enumerate(_ORDER)}
    found.sort(key=lambda x: (order.get(x[0], 99), x[1]))
    return [(f"{label(server)}: {mode}", share) for server, mode, share in found]


# --------------------------------------------------------------------------- 9


def open_loop_tail(run: Run, out: Path) -> Chart:
    name, title = "09-open-loop-tail", "Open loop: tail latency vs offered load"
    caption = (
        "Requests sent on a fixed schedule at a fraction of the server's own closed-loop rate; "
        "latency counts from when a request was due, so queueing is included (no coordinated "
        "omission). p50 and p99, log scale."
    )
    d = _scenario(run, "open-loop")
    sums = {m: summarise(d, m) for m in ("p50_us", "p99_us")}
    if all(s.empty for s in sums.values()):
        return _not_measured(out, name, title, caption, "no ok cell of scenario 'open-loop'")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, (m, s) in zip(axes, sums.items(), strict=True):
        s["pct_load"] = s["rate_fraction"].astype(float) * 100
        for server in _server_sort(list(s["server"].unique())):
            _line(ax, s, server, "pct_load")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (% of the server's closed-loop requests/s)")
        ax.set_title(m.split("_")[0])
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("latency (us, log)")
    _legend(axes[0], any(bool((s["saturated"] | s["port_bound"]).any()) for s in sums.values()))
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
    tables = [
        summary_table(s, "pct_load", "offered % of capacity", f"{m.split('_')[0]} us", m)
        for m, s in sums.items()
    ]
    return Chart(name, title, caption, png, svg, True, tables)


# --------------------------------------------------------------------------- 10


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
        return _not_measured(out, name, title, caption, "no canary in this run (version 1)")
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
    png, svg = _save(fig, out, name)
    rows = [
        [c.at[11:19], str(c.after_cell), fmt.num(c.spin_us), fmt.num(c.pipe_rtt_us)]
        for c in m.canary
    ]
    headers = ["UTC", "after cell", "CPU loop us", "pipe round trip us"]
    return Chart(name, title, caption, png, svg, True, [Table(headers, rows, "Canary runs")])


def _fault_lines(run: Run, scenario: str) -> list[tuple[str, str, list[float], list[int], Any]]:
    """(line label, cell id, t, values source samples) of a fault scenario's cells, switch first."""
    d = ok_cells(run, faults=True)
    d = d[d["scenario"] == scenario].sort_values(["fault", "trial"], ascending=[False, True])
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
        return _not_measured(
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
            left.plot(t, [c or 0 for c in cw], color=styles[kind], linestyle="--",
                      label=f"CLOSE_WAIT sockets, {kind}")  # fmt: skip
        rows.append(["--leak-connfd", kind, cell_id, f"{fds[0]:,} -> {max(fds):,}",
                     f"{fds[-1]:,}", f"{max((c or 0) for c in cw):,}"])  # fmt: skip
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
        left.axhline(limit, color="grey", linestyle=":", linewidth=1,
                     label=f"open-files limit of one process ({limit:,})")  # fmt: skip
        left.legend(fontsize=8)
    left.set_title("--leak-connfd vs closing connfd")
    right.set_title("--naive-reaper vs the loop reaper")
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
    headers = ["switch", "server", "cell drawn", "descriptors start -> peak", "at end",
               "CLOSE_WAIT peak"]  # fmt: skip
    tables = [Table(headers, rows, "The two warnings: the trial drawn")]
    peaks = _fault_peaks(run)
    if peaks.rows:
        tables.append(peaks)
    return Chart(name, title, caption, png, svg, True, tables)


def _fault_peaks(run: Run) -> Table:
    """Every trial's peak, as the scorecard reads them (its figure is the largest)."""
    d = ok_cells(run, faults=True)
    rows = []
    for scenario, col in (("leak-connfd", "fds_peak"), ("naive-reaper", "zombies_peak")):
        sel = d[d["scenario"] == scenario] if not d.empty else d
        for fault, g in sel.groupby(sel["fault"].fillna(""), sort=False):
            vals = g[col].dropna().astype(int).tolist()
            if vals:
                kind = "switch on" if fault else "as written (Fig. 12.5)"
                rows.append([scenario, kind, ", ".join(f"{v:,}" for v in vals), f"{max(vals):,}"])
    return Table(["scenario", "server", "peak in each trial", "largest (the scorecard's)"],
                 rows, "Every trial's peak (descriptors or zombies)")  # fmt: skip


def _nofile(run: Run) -> int | None:
    """The leak-connfd scenario's RLIMIT_NOFILE, as the run's profile set it."""
    if run.manifest is None:
        return None
    for sc in run.manifest.profile.get("scenarios", []):
        if isinstance(sc, dict) and sc.get("name") == "leak-connfd" and "nofile" in sc:
            return int(sc["nofile"])
    return None


# --------------------------------------------------------------------------- 12


def message_size(run: Run, out: Path) -> Chart:
    name, title = "12-message-size", "Echo throughput vs message size (10 persistent connections)"
    caption = (
        "Bytes echoed per second (requests/s x message size) against the message size, log "
        "scales. Small messages measure the per-request cost of the model; big ones the copy "
        "cost, which the kernel pays alike for every model, so the lines should meet there."
    )
    d = _scenario(run, "size")
    s = summarise(d, "requests_per_s")
    if s.empty:
        return _not_measured(out, name, title, caption, "no ok cell of scenario 'size'")
    mb = s.copy()
    for col in ("median", "lo", "hi"):
        mb[col] = mb[col] * mb["size"].astype(float) / 1e6
    fig, ax = plt.subplots(figsize=(9, 5))
    for server in _server_sort(list(mb["server"].unique())):
        _line(ax, mb, server, "size")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("message size, bytes (log)")
    ax.set_ylabel("MB/s echoed (log)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(ax, bool((mb["saturated"] | mb["port_bound"]).any()))
    png, svg = _save(fig, out, name)
    table = summary_table(mb, "size", "bytes", "MB/s", "Throughput by message size")
    return Chart(name, title, caption, png, svg, True, [table])


# --------------------------------------------------------------------------- 13


def fork_xray(run: Run, out: Path) -> Chart:
    name, title = "13-fork-xray", "Where a fork's cost goes: one connection, Python beside C"
    caption = (
        "The X-ray cells (1 client, connection per request, every step stamped). Left: one "
        "connection's life from accept to reap as consecutive segments (medians over the "
        "trials of each step's median; inetd's child execs cat, so its steps after exec are "
        "one segment). Middle: what wait4 reported for each child: minor page faults (each a "
        "copy-on-write copy or a first touch) and CPU. Right: fork + exit + waitpid against "
        "the parent's memory (microbenchmarks): a fork copies page tables, so its cost grows "
        "with what the parent has mapped."
    )
    points = forkcost.xray_points(run)
    if not points:
        return _not_measured(out, name, title, caption, "no X-ray cells in this run")
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw={"width_ratios": [2.2, 1.2, 1]})
    ax = axes[0]
    palette = plt.get_cmap("tab10")
    ys = np.arange(len(points))
    colours: dict[str, Any] = {}
    for i, p in enumerate(points):
        for words, start, width in forkcost.segments(p.timeline()):
            col = colours.setdefault(words, palette(len(colours)))
            hatch = "//" if words == forkcost.EXEC_WORDS else None
            bar = ax.barh(i, width, left=start, color=col, hatch=hatch, label=words)
            _tip(bar.patches[0], f"{p.label}: {words} {width:,.1f} us")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper center", ncol=3,
              bbox_to_anchor=(0.5, -0.16))  # fmt: skip
    ax.set_yticks(ys, [p.label for p in points], fontsize=8)
    ax.invert_yaxis()  # the run's order, top down
    ax.set_xlabel("microseconds since accept (one real connection, the run's median)")
    ax.grid(True, axis="x", alpha=0.3)
    ax = axes[1]
    width = 0.38
    faults = [p.child("minflt") for p in points]
    cpu = [p.child("utime_us") for p in points]
    ax.barh(ys - width / 2, [f.median if f else 0 for f in faults], width, color="#dd8452",
            label="minor faults per child")  # fmt: skip
    ax.barh(ys + width / 2, [f.median if f else 0 for f in cpu], width, color="#4c72b0",
            label="child CPU, us")  # fmt: skip
    ax.set_yticks(ys, ["" for _ in points])
    ax.invert_yaxis()
    ax.set_xlabel("per child (median)")
    ax.legend(fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    ax = axes[2]
    m = run.micro
    sizes = [("fork_wait.small_parent", 10), ("fork_wait.heap_100mb", 100),
             ("fork_wait.heap_1gb", 1024)]  # fmt: skip
    xs, vs = [], []
    for key, mb in sizes:
        v = micro.figure(m, key) if not m.empty else None
        if v is not None:
            xs.append(mb)
            vs.append(v)
    if xs:
        ax.plot(xs, vs, "o-", color="#55a868")
        for x, v in zip(xs, vs, strict=True):
            ax.annotate(f"{v:,.0f} us", (x, v), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parent's memory, MiB (log; 'small' ~10)")
        ax.set_ylabel("fork + exit + waitpid, us (log)")
    else:
        ax.text(0.5, 0.5, fmt.NOT_MEASURED, ha="center", transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    png, svg = _save(fig, out, name)
    return Chart(name, title, caption, png, svg, True, [forkcost.xray_table(run)])


# --------------------------------------------------------------------------- 14


def fork_timeline(run: Run, out: Path) -> Chart:
    name, title = "14-fig-12-5-timeline", "Fig. 12.5, one real connection: who does what, when"
    caption = (
        "One connection through each forking server, from its X-ray: the parent's steps on "
        "the top lane, the child's in the middle, the SIGCHLD handler's at the bottom, in "
        "microseconds since accept returned. The panels share one time scale, so a shorter "
        "panel is a faster server. The parent is back in accept long before the child has "
        "echoed: that is the concurrency; the reap comes last, after the child exits."
    )
    points = [p for p in forkcost.xray_points(run) if "gc.freeze" not in p.label]
    if not points:
        return _not_measured(out, name, title, caption, "no X-ray cells in this run")
    fig = timeline_figure([(p.label, p.server, p.timeline()) for p in points])
    png, svg = _save(fig, out, name, layout=False)
    return Chart(name, title, caption, png, svg, True, [forkcost.timeline_table(run)])


_LANES = {
    "accept": 2, "fork_start": 2, "fork_end": 2, "parent_closed": 2,
    "child_start": 1, "listenfd_closed": 1, "exec": 1, "first_echo": 1, "exit": 1,
    "handler": 0, "reaped": 0,
}  # fmt: skip
LABEL_STEP_PT = 8.5  # one level of label height, in points


def timeline_figure(panels: list[tuple[str, str, dict[str, float]]]) -> Figure:
    """Chart 14's figure: one panel per (label, server, timeline), one shared time axis, every
    step labelled where its label overlaps no other text (checked on the drawn bounding boxes,
    so a fast server whose steps crowd together gets its labels stacked, never overprinted)."""
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(12, 2.6 * len(panels) + 0.6), squeeze=False, sharex=True
    )
    items: list[tuple[Axes, float, int, str]] = []
    for ax, (words, server, tl) in zip(axes[:, 0], panels, strict=True):
        for step, t in tl.items():
            lane = _LANES[step]
            mark = ax.scatter(t, lane, color=colour(server), marker=marker(server), zorder=3)
            _tip(mark, f"{words}: {forkcost.STEP_WORDS[step]} at {t:,.1f} us")
            items.append((ax, t, lane, forkcost.STEP_WORDS[step]))
        if "fork_start" in tl and "child_start" in tl:
            ax.annotate("", (tl["child_start"], 1), (tl["fork_start"], 2),
                        arrowprops={"arrowstyle": "->", "color": "grey"})  # fmt: skip
        end = tl.get("exit", tl.get("exec"))
        if end is not None and "handler" in tl:
            ax.annotate("", (tl["handler"], 0), (end, 1),
                        arrowprops={"arrowstyle": "->", "color": "grey"})  # fmt: skip
        ax.set_yticks([0, 1, 2], ["handler", "child", "parent"], fontsize=8)
        ax.set_ylim(-0.5, 3.2)
        ax.set_title(words, fontsize=9, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    last = max((t for _, _, tl in panels for t in tl.values()), default=1.0)
    axes[0, 0].set_xlim(-0.02 * last, last * 1.25)  # room on the right for the last labels
    axes[-1, 0].set_xlabel("microseconds since accept (one time scale for every panel)")
    fig.tight_layout()
    _place_labels(fig, items)
    return fig


def _place_labels(fig: Figure, items: list[tuple[Axes, float, int, str]]) -> None:
    """Each label at the lowest level above its point where it overlaps no label already
    placed (nor a panel's title): greedy, left to right within each lane."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    titles = [getattr(ax, "_left_title", ax.title) for ax in fig.axes]  # set_title(loc="left")
    placed = [t.get_window_extent(renderer) for t in titles if t.get_text()]
    for ax, t, lane, text in sorted(items, key=lambda i: (id(i[0]), i[2], i[1])):
        for level in range(12):
            ann = ax.annotate(text, (t, lane), xytext=(3, 4 + LABEL_STEP_PT * level),
                              textcoords="offset points", fontsize=6)  # fmt: skip
            box = ann.get_window_extent(renderer).padded(1.5)  # a hair apart, never touching
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            ann.remove()
        else:  # no free level: say so on the point itself rather than overprint
            ann = ax.annotate("*", (t, lane), xytext=(3, 4), textcoords="offset points",
                              fontsize=6)  # fmt: skip
            placed.append(ann.get_window_extent(renderer))


# --------------------------------------------------------------------------- 15


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
    d = _scenario(run, "at-load")
    s = summarise(d, "cpu_us_per_req")
    if s.empty:
        return _not_measured(out, name, title, caption, "no ok cell of scenario 'at-load'")
    fig, ax = plt.subplots(figsize=(11, 5))
    for server in _server_sort(list(s["server"].unique())):
        _line(ax, s, server, "connections")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("persistent connections (log)")
    ax.set_ylabel("server CPU us per request (log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, bool((s["saturated"] | s["port_bound"]).any()))
    png, svg = _save(fig, out, name)
    table = summary_table(s, "connections", "connections", "server CPU us/request", "At load")
    return Chart(name, title, caption, png, svg, True, [table])


def at_load_rate(run: Run) -> float | None:
    """The at-load scenario's offered rate (requests/s, the same for every cell), if run."""
    d = _scenario(run, "at-load")
    if d.empty or "rate" not in d.columns:
        return None
    rates = d["rate"].dropna()
    return float(rates.iloc[0]) if len(rates) else None


ALL: list[Callable[[Run, Path], Chart]] = [
    throughput_vs_concurrency,
    latency_vs_concurrency,
    latency_distribution,
    connections_per_second,
    memory_per_connection,
    cpu_per_request,
    creation_and_ipc_costs,
    shared_counter,
    open_loop_tail,
    machine_speed,
    book_warnings,
    message_size,
    fork_xray,
    fork_timeline,
    cpu_at_load,
]


def draw_all(run: Run, out: Path) -> list[Chart]:
    return [chart(run, out) for chart in ALL]
