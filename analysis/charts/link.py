"""Over a link (issue 23): what each model holds alive, and what that costs, as its clients move
from loopback to 1, 10 and 50 ms away.

By Little's law a server that answers R requests/s, each taking T seconds of a client's
connection, holds R x T connections at once. With a connection per request the fork server
holds a child for each: T is the round trip (the client's FIN comes one round trip after the
echo leaves) plus the service time, so its children grow with the distance while an event loop
holds only small objects. The expected line is R x (the measured round trip + the service
time), R the connections served per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt
import pandas as pd

from analysis import fmt
from analysis.charts.style import (
    Chart,
    colour,
    label,
    marker,
    not_measured,
    outside_legend,
    save_figure,
    server_sort,
)
from analysis.document import Table
from analysis.results import Run
from records.registry import SERVERS, Model

SCENARIO = "link"
LITTLE_TOLERANCE = 0.15  # the check: the fork server within 15% of R x (RTT + service)
Z90 = 1.645  # a two-sided 90% interval of a mean, from its standard error


def _cells(run: Run, mode: str) -> pd.DataFrame:
    """The link scenario's cells in `mode`, one row per trial, with what the server held alive
    for its clients: a process model's processes beyond the parent, a thread model's threads
    beyond the main one (an event loop holds neither), and the spread of the looks at it."""
    d = run.findings.cells(SCENARIO)
    if d.empty:
        return d
    d = d[d["mode"] == mode].copy()
    d["rtt_ms"] = d["rtt_us"].fillna(0).astype(float) / 1000
    d["measured_ms"] = d["link_measured_us"].fillna(0).astype(float) / 1000
    procs = d["server"].map(lambda n: SERVERS[n].model is Model.PROCESS)
    d["held"] = (d["processes_mean"] - 1).where(procs, d["threads_mean"] - 1).clip(lower=0)
    d["held_sd"] = d["processes_sd"].where(procs, d["threads_sd"]).fillna(0).astype(float)
    d["pss_growth_mib"] = (d["pss_mean_bytes"] - d["pss_base_bytes"]) / 2**20
    d["p50_less_rtt_us"] = d["p50_us"] - d["link_measured_us"].fillna(0)
    return d


def _points(run: Run, mode: str) -> pd.DataFrame:
    """One row per (server, round trip) of the link scenario in `mode`: medians over trials of
    what the server held alive over the window, and the round trip measured before each cell."""
    d = _cells(run, mode)
    if d.empty:
        return d
    cols = ["held", "processes_mean", "threads_mean", "pss_growth_mib", "cpu_us_per_req",
            "p50_less_rtt_us", "measured_ms", "rate", "requests_per_s"]  # fmt: skip
    g = d.groupby(["server", "rtt_ms"], as_index=False)[cols].median()
    g["trials"] = d.groupby(["server", "rtt_ms"]).size().to_numpy()
    return g.sort_values(["server", "rtt_ms"])


def over_a_link(run: Run, out: Path) -> Chart:
    name, title = "16-over-a-link", "Over a link: what each model holds alive"
    caption = (
        "The link scenario: every server offered the same rate, open loop, a new connection "
        "per request, with its clients on loopback (0) or behind a link of 1, 10 and 50 ms of "
        "round trip (two network namespaces and a delay element that holds every packet; "
        "docs/link.md). Left: what the server held alive for its clients over the window "
        "(children beyond the parent, threads beyond the main one; medians over trials), with "
        "Little's law for the fork server dashed: the connections it served per second x (the "
        "measured round trip + its service time). Right: the memory that cost (the server "
        "tree's PSS over the "
        "window, less its idle PSS)."
    )
    p = _points(run, "per-request")
    if p.empty:
        return not_measured(out, name, title, caption, "no ok cell of scenario 'link'")
    checks = little_check(run)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    for server in server_sort(list(p["server"].unique())):
        own = p[p["server"] == server]
        c, m = colour(server), marker(server)
        left.plot(own["rtt_ms"], own["held"], color=c, marker=m, label=label(server))
        right.plot(own["rtt_ms"], own["pss_growth_mib"], color=c, marker=m, label=label(server))
        mine = [k for k in checks if k.server == server]
        if mine:
            # from loopback, where Little's law is the service time by definition, to each check
            base = own[own["rtt_ms"] == 0]["held"].tolist()
            left.plot([0.0] * len(base) + [k.rtt_ms for k in mine],
                      base + [k.expected for k in mine], color=c, linestyle="--",
                      label=f"{label(server)}: Little's law")  # fmt: skip
    left.set_xlabel("round trip, ms (0: loopback)")
    left.set_ylabel("held alive for clients (mean over the window)")
    right.set_xlabel("round trip, ms (0: loopback)")
    right.set_ylabel("server PSS growth, MiB")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    # the left panel's handles: they include the dashed Little's-law line the right one lacks
    handles, labels = left.get_legend_handles_labels()
    outside_legend(right, handles, labels)
    fig.suptitle(title)
    png, svg = save_figure(fig, out, name)
    return Chart(name, title, caption, png, svg, True, [table(run)])


def little_words(c: LittleCheck) -> str:
    """One check as a reader meets it: both counts with their 90% intervals, then the verdict."""
    return (
        f"{fmt.num(c.got)} [{fmt.num(max(0.0, c.got - c.got_half))}-{fmt.num(c.got + c.got_half)}]"
        f" alive against {fmt.num(c.expected)} [{fmt.num(max(0.0, c.expected - c.expected_half))}"
        f"-{fmt.num(c.expected + c.expected_half)}] expected ({c.off:+.0%}): {c.verdict}"
    )


def table(run: Run) -> Table:
    rows = []
    checks = {(c.server, c.rtt_ms): c for c in little_check(run)}
    for mode in ("per-request", "persistent"):
        p = _points(run, mode)
        for server in server_sort(list(p["server"].unique())) if not p.empty else []:
            own = p[p["server"] == server]
            for _, r in own.iterrows():
                check = checks.get((server, float(r["rtt_ms"]))) if mode == "per-request" else None
                little = little_words(check) if check is not None else ""
                rows.append([
                    label(server), mode, "loopback" if r["rtt_ms"] == 0 else f"{r['rtt_ms']:g}",
                    fmt.num(r["measured_ms"] * 1000) if r["rtt_ms"] else "-",
                    fmt.num(r["held"]), fmt.num(r["pss_growth_mib"]),
                    fmt.num(r["cpu_us_per_req"]), fmt.num(r["p50_less_rtt_us"]), little,
                    str(int(r["trials"])),
                ])  # fmt: skip
    headers = ["server", "mode", "RTT asked, ms", "RTT measured, us", "held alive (mean)",
               "PSS growth, MiB", "server CPU us/request", "p50 less the RTT, us",
               "children alive vs Little's law", "trials"]  # fmt: skip
    return Table(headers, rows, "Over a link (medians over trials)")


@dataclass(frozen=True, slots=True)
class LittleCheck:
    """Little's law for one forking server at one round trip: the children the monitor saw alive
    (the mean of its looks at random instants, pooled over trials) against lambda x W, each with
    its 90% sampling interval, and the verdict they allow."""

    server: str
    rtt_ms: float
    got: float
    got_half: float  # 90% half-width of `got` from the looks' spread
    expected: float
    expected_half: float  # from the loopback looks that give the service time
    looks: int

    @property
    def off(self) -> float:
        return self.got / self.expected - 1

    @property
    def verdict(self) -> str:
        """ "agrees" when the whole 90% interval of the difference lies within LITTLE_TOLERANCE
        of the expected count, "off" when it lies wholly beyond it, else undecided."""
        diff = abs(self.got - self.expected)
        noise = math.hypot(self.got_half, self.expected_half)
        band = LITTLE_TOLERANCE * self.expected
        if diff + noise <= band:
            return f"agrees (within {LITTLE_TOLERANCE:.0%})"
        if diff - noise > band:
            return f"off by more than {LITTLE_TOLERANCE:.0%}"
        return f"cannot tell from {self.looks} looks (inside the sampling noise)"


def _looked(d: pd.DataFrame) -> tuple[float, float, int]:
    """Pooled over a point's trials: mean of what the looks saw held, 90% half-width of that
    mean, and the number of looks. Each look is one count at a random instant."""
    n = d["held_looks"].fillna(0).astype(float)
    if float(n.sum()) < 2:
        return float(d["held"].mean()), math.inf, int(n.sum())
    total = float(n.sum())
    mean = float((n * d["held"]).sum()) / total
    within = float(((n - 1).clip(lower=0) * d["held_sd"] ** 2).sum())
    between = float((n * (d["held"] - mean) ** 2).sum())
    se = math.sqrt((within + between) / (total - 1) / total)
    return mean, Z90 * se, int(total)


def little_check(run: Run) -> list[LittleCheck]:
    """Each forking server's link cells with a round trip, connection per request: the issue's
    Little's-law check, lambda the rate it served and W the measured round trip plus the service
    time its loopback cells show (their children over their rate)."""
    d = _cells(run, "per-request")
    if d.empty:
        return []
    out = []
    for server in server_sort([s for s in d["server"].unique() if SERVERS[s].forks_per_connection]):
        own = d[d["server"] == server]
        base = own[own["rtt_ms"] == 0]
        lam0 = float(base["requests_per_s"].mean()) if not base.empty else 0.0
        if not lam0:
            continue
        held0, half0, _ = _looked(base)
        for rtt, cells in own[own["rtt_ms"] > 0].groupby("rtt_ms"):
            lam = float(cells["requests_per_s"].mean())
            rtt_s = float(cells["link_measured_us"].astype(float).median()) / 1e6
            got, half, looks = _looked(cells)
            expected = lam * (rtt_s + held0 / lam0)
            if expected > 0:
                out.append(
                    LittleCheck(server, float(rtt), got, half, expected, half0 * lam / lam0, looks)
                )
    return out
