"""Where a fork's cost goes: the X-ray of one connection and Fig. 12.5's timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis import fmt, forkcost, micro
from analysis.charts.style import Chart, add_tip, colour, marker, not_measured, save_figure
from analysis.results import Run


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
        return not_measured(out, name, title, caption, "no X-ray cells in this run")
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
            add_tip(bar.patches[0], f"{p.label}: {words} {width:,.1f} us")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(
        uniq.values(),
        uniq.keys(),
        fontsize=7,
        loc="upper center",
        ncol=3,
        bbox_to_anchor=(0.5, -0.16),
    )
    ax.set_yticks(ys, [p.label for p in points], fontsize=8)
    ax.invert_yaxis()  # the run's order, top down
    ax.set_xlabel("microseconds since accept (one real connection, the run's median)")
    ax.grid(True, axis="x", alpha=0.3)
    ax = axes[1]
    width = 0.38
    faults = [p.child("minflt") for p in points]
    cpu = [p.child("utime_us") for p in points]
    ax.barh(
        ys - width / 2,
        [f.median if f else 0 for f in faults],
        width,
        color="#dd8452",
        label="minor faults per child",
    )
    ax.barh(
        ys + width / 2,
        [f.median if f else 0 for f in cpu],
        width,
        color="#4c72b0",
        label="child CPU, us",
    )
    ax.set_yticks(ys, ["" for _ in points])
    ax.invert_yaxis()
    ax.set_xlabel("per child (median)")
    ax.legend(fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    ax = axes[2]
    m = run.micro
    sizes = [
        ("fork_wait.small_parent", 10),
        ("fork_wait.heap_100mb", 100),
        ("fork_wait.heap_1gb", 1024),
    ]
    xs, vs = [], []
    for key, mb in sizes:
        v = micro.figure(m, key) if not m.empty else None
        if v is not None:
            xs.append(mb)
            vs.append(v)
    if xs:
        ax.plot(xs, vs, "o-", color="#55a868")
        for x, v in zip(xs, vs, strict=True):
            ax.annotate(
                f"{v:,.0f} us", (x, v), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parent's memory, MiB (log; 'small' ~10)")
        ax.set_ylabel("fork + exit + waitpid, us (log)")
    else:
        ax.text(0.5, 0.5, fmt.NOT_MEASURED, ha="center", transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    return Chart(name, title, caption, png, svg, True, [forkcost.xray_table(run)])


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
        return not_measured(out, name, title, caption, "no X-ray cells in this run")
    fig = timeline_figure([(p.label, p.server, p.timeline()) for p in points])
    png, svg = save_figure(fig, out, name, layout=False)
    return Chart(name, title, caption, png, svg, True, [forkcost.timeline_table(run)])


_LANES = {
    "accept": 2,
    "fork_start": 2,
    "fork_end": 2,
    "parent_closed": 2,
    "child_start": 1,
    "listenfd_closed": 1,
    "exec": 1,
    "first_echo": 1,
    "exit": 1,
    "handler": 0,
    "reaped": 0,
}


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
            add_tip(mark, f"{words}: {forkcost.STEP_WORDS[step]} at {t:,.1f} us")
            items.append((ax, t, lane, forkcost.STEP_WORDS[step]))
        if "fork_start" in tl and "child_start" in tl:
            ax.annotate(
                "",
                (tl["child_start"], 1),
                (tl["fork_start"], 2),
                arrowprops={"arrowstyle": "->", "color": "grey"},
            )
        end = tl.get("exit", tl.get("exec"))
        if end is not None and "handler" in tl:
            ax.annotate(
                "", (tl["handler"], 0), (end, 1), arrowprops={"arrowstyle": "->", "color": "grey"}
            )
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
            ann = ax.annotate(
                text,
                (t, lane),
                xytext=(3, 4 + LABEL_STEP_PT * level),
                textcoords="offset points",
                fontsize=6,
            )
            box = ann.get_window_extent(renderer).padded(1.5)  # a hair apart, never touching
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            ann.remove()
        else:  # no free level: say so on the point itself rather than overprint
            ann = ax.annotate("*", (t, lane), xytext=(3, 4), textcoords="offset points", fontsize=6)
            placed.append(ann.get_window_extent(renderer))
