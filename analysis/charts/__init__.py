"""The report's charts: one function per chart, each drawing from the run's findings.

Every chart function takes the loaded `Run` (and the output directory), writes
`charts/<name>.png` and `charts/<name>.svg`, and returns a `Chart` with the numbers it drew as
a table, so the report shows each figure twice: as a picture and as text with its spread.

Conventions, the same on every chart (they are the report's honesty rules):

* a point is the median over trials; its error bar is its interval;
* a red star marks a point whose trials disagree (coefficient of variation over 10%);
* a hollow marker is a client-saturated (or port-bound) cell: the load generator, not the
  server, was the limit, so the figure is a lower bound and never the server's capacity;
* a chart whose cells are absent from the run is still written, saying "not measured in this
  run", so a missing experiment is visible rather than silently gone.

matplotlib runs headless (Agg). Each server is drawn in its own colour and marker, both owned
by the registry (records/registry.py): no two servers share a pair, in any chart. Legends sit
outside the plotting area, so they never cover the points the text quotes.

The package splits at its seams (issue 22): `style` (how a server and a point are drawn, and
how a chart is saved with its hover values), `tables` (the numbers behind a chart), and the
charts themselves by subject: `load`, `sharing`, `fork`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt

from analysis.charts.fork import LABEL_STEP_PT, fork_timeline, fork_xray, timeline_figure
from analysis.charts.link import over_a_link
from analysis.charts.load import (
    connections_per_second,
    cpu_at_load,
    cpu_per_request,
    latency_distribution,
    latency_vs_concurrency,
    memory_per_connection,
    message_size,
    open_loop_tail,
    throughput_vs_concurrency,
)
from analysis.charts.sharing import (
    book_warnings,
    creation_and_ipc_costs,
    machine_speed,
    shared_counter,
)
from analysis.charts.style import Chart, at_load_rate, colour, label, marker
from analysis.charts.tables import flags, summary_table
from analysis.results import Run

__all__ = [
    "ALL",
    "LABEL_STEP_PT",
    "Chart",
    "at_load_rate",
    "colour",
    "draw_all",
    "flags",
    "label",
    "marker",
    "plt",
    "summary_table",
    "timeline_figure",
]

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
    over_a_link,
]


def draw_all(run: Run, out: Path) -> list[Chart]:
    return [chart(run, out) for chart in ALL]
