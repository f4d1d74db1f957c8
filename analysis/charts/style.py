"""How every chart draws a server and saves itself: the servers' style (their label, colour,
marker and order, owned by the registry), points with their intervals, legends outside the
data, plain log ticks, and hover values written into the SVG (issue 22: no module state)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
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

from analysis import fmt
from analysis.document import Table
from analysis.results import Run
from analysis.stats import CV_LIMIT
from records.registry import SERVERS

ORDER = list(SERVERS)


def outside_legend(
    ax: Axes,
    handles: list[Any] | None = None,
    labels: list[str] | None = None,
    title: str | None = None,
) -> None:
    """A legend right of the plotting area: it never covers a point the text quotes."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        labels,
        title=title,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )


def colour(server: str) -> str:
    spec = SERVERS.get(server)
    return spec.colour if spec else "#777777"


def marker(server: str) -> str:
    spec = SERVERS.get(server)
    return spec.marker if spec else "o"


def label(server: str) -> str:
    spec = SERVERS.get(server)
    return spec.label if spec else server


def server_sort(servers: list[str]) -> list[str]:
    return sorted(servers, key=lambda s: (ORDER.index(s) if s in ORDER else 99, s))


@dataclass
class Chart:
    name: str  # file stem under charts/
    title: str
    caption: str  # how to read it
    png: Path
    svg: Path
    measured: bool
    tables: list[Table] = field(default_factory=list)


TIP = "tip-"  # the gid of an artist that carries a hover value: TIP + the value, hex-encoded
SVG_NS = "http://www.w3.org/2000/svg"


def add_tip(artist: Any, text: str) -> None:
    """A hover value for one artist, carried by the artist itself (matplotlib writes its gid as
    the SVG element's id); `svg_titles` turns it into the element's <title>."""
    artist.set_gid(TIP + text.encode("utf-8").hex())


def svg_titles(svg: Path) -> None:
    """Every tip-carrying element gets a <title> (a browser shows it on hover) and a short id
    unique in the report, which inlines every chart's SVG into one page."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    tree = ET.parse(svg)
    for i, el in enumerate(e for e in tree.iter() if e.get("id", "").startswith(TIP)):
        title = ET.Element(f"{{{SVG_NS}}}title")
        title.text = bytes.fromhex(el.get("id", "")[len(TIP) :]).decode("utf-8")
        el.insert(0, title)
        el.set("id", f"{svg.stem}-tip{i}")
    tree.write(svg, encoding="utf-8", xml_declaration=True)


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


def save_figure(fig: Figure, out: Path, name: str, layout: bool = True) -> tuple[Path, Path]:
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
    svg_titles(svg)
    return png, svg


def not_measured(out: Path, name: str, title: str, caption: str, what: str) -> Chart:
    fig, ax = plt.subplots(figsize=(8, 2.2))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"{fmt.NOT_MEASURED}\n({what})", ha="center", va="center", fontsize=12)
    png, svg = save_figure(fig, out, name)
    return Chart(name, title, caption, png, svg, measured=False)


def draw_line(ax: Axes, s: pd.DataFrame, server: str, x: str, scale: float = 1.0) -> None:
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
        ax.scatter(
            [float(r[x])],
            [0.0],
            marker="x",
            color=c,
            clip_on=False,
            zorder=4,
            transform=ax.get_xaxis_transform(),
        )
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
        add_tip(dot, tip)
    noisy = (d["cv"].fillna(0) > CV_LIMIT).to_numpy()
    for px, py in zip(xs[noisy], med[noisy], strict=True):
        ax.annotate("*", (px, py), xytext=(4, 4), textcoords="offset points", color="red")


def draw_legend(ax: Axes, hollow: bool) -> None:
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


def scenario_cells(run: Run, scenario: str, placement: str | None = "split") -> pd.DataFrame:
    """A scenario's ok cells (one row per trial), at one placement."""
    d = run.findings.cells(scenario)
    return d[d["placement"] == placement] if placement and not d.empty else d


def scenario_points(
    run: Run, metric: str, scenario: str, placement: str | None = "split"
) -> pd.DataFrame:
    """A scenario's points (median and interval of `metric`), from the run's findings."""
    s = run.findings.summary(metric, scenario)
    if placement is None or s.empty:
        return s
    return s[s["placement"] == placement].reset_index(drop=True)


def at_load_rate(run: Run) -> float | None:
    """The at-load scenario's offered rate (requests/s, the same for every cell), if run."""
    d = scenario_cells(run, "at-load")
    if d.empty or "rate" not in d.columns:
        return None
    rates = d["rate"].dropna()
    return float(rates.iloc[0]) if len(rates) else None
