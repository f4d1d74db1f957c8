"""`python -m analysis compare RUN_A RUN_B [...]`: the same cells across runs, as ratios.

Every later run is compared with the first (A): per cell (scenario, server, placement,
parameters) the ratio B/A of the median requests/s and of the median p99, with the range the
trials allow (B's min over A's max .. B's max over A's min). When that range contains 1.00 the
difference is inside the noise and is said to be. Runs whose environments differ in what
changes the figures (CPU model, core count, kernel, Python) are flagged first: then a ratio
compares machines, not servers.

Two more figures judge how far two runs agree, and why they may not:

* each server's median divided by the book's process server's median *in the same cell of the
  same run*: a ratio inside one run cancels most of the machine's drift, so it is the figure
  that should reproduce;
* the runs' canaries (bench/canary.py): when B's machine ran its fixed workload faster than
  A's, absolute figures differ by about as much and the comparison says so, so that a faster
  machine is not mistaken for a faster hour or a better server.

The comparison ends with summary lines `requests/s: N of M common cells within ±10%` and the
same for the ratios to the process server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis import (
    charts,  # noqa: F401 - sets the headless backend before pyplot draws
    fmt,
    micro,
)
from analysis.document import Document, Heading, Para, Table, to_markdown
from analysis.noise import PROMISE
from analysis.results import Run
from analysis.scorecard import scorecard

ENV_KEYS = ("cpu_model", "cpu_count_logical", "kernel", "python", "python_implementation")
AGREE = 0.10  # two medians "agree" when B/A is within ±10%
BOOK_SERVER = "process"  # CS:APP Fig. 12.5: every ratio inside a run is to this server
_KEY = ["scenario", "server", "server_args", "placement", "match_key"]


@dataclass(frozen=True)
class Ratio:
    ratio: float
    lo: float
    hi: float
    single: bool  # a side had one trial: no spread to judge noise by

    @property
    def in_noise(self) -> bool:
        return not self.single and self.lo <= 1.0 <= self.hi

    def text(self) -> str:
        if self.single:
            return fmt.ratio(self.ratio)
        return f"{fmt.ratio(self.ratio)} [{fmt.ratio(self.lo)}-{fmt.ratio(self.hi)}]"


def ratio_of(a: pd.Series, b: pd.Series) -> Ratio:
    def div(x: float, y: float) -> float:
        return x / y if y else math.nan

    single = int(a["n"]) < 2 or int(b["n"]) < 2
    return Ratio(
        div(b["median"], a["median"]), div(b["lo"], a["hi"]), div(b["hi"], a["lo"]), single
    )


def environment_differences(a: Run, b: Run) -> list[str]:
    if a.manifest is None or b.manifest is None:
        return ["a run has no readable manifest: environments cannot be compared"]
    ea, eb = a.manifest.environment, b.manifest.environment
    return [f"{k}: {ea.get(k)!r} vs {eb.get(k)!r}" for k in ENV_KEYS if ea.get(k) != eb.get(k)]


HEADLINE = ("concurrency", "per-request")  # the scenarios whose agreement the suite promises


def _by_key(run: Run, metric: str) -> pd.DataFrame:
    """Summarised cells indexed by what they measured (their length left out: see match_key)."""
    s = run.findings.summary(metric, faults=True)
    return s.drop_duplicates(subset=_KEY).set_index(_KEY)


def _figures(s: pd.DataFrame) -> pd.DataFrame:
    """The cells that are figures: a starved cell (clients never served) is not one."""
    return s[s["starved"].fillna(0) == 0]


def canary_speed(run: Run) -> tuple[float, float] | None:
    """Median (spin us, pipe round trip us) of a run's canaries, or None (v1 runs have none)."""
    if run.manifest is None or not run.manifest.canary:
        return None
    c = run.manifest.canary
    return (
        float(pd.Series([x.spin_us for x in c]).median()),
        float(pd.Series([x.pipe_rtt_us for x in c]).median()),
    )


def canary_text(a: Run, b: Run) -> str:
    ca, cb = canary_speed(a), canary_speed(b)
    if ca is None or cb is None:
        return "Canary: not in both runs (a version 1 run has none): machine speed unknown."
    spin, rtt = ca[0] / cb[0], ca[1] / cb[1]
    return (
        f"Canary (the machine's own speed, median over each run): B ran the fixed CPU loop "
        f"{spin:.2f}x as fast as A and the cross-CPU pipe round trip {rtt:.2f}x as fast. "
        + (
            "Absolute figures may differ by about that much because the machine did."
            if abs(spin - 1) > AGREE or abs(rtt - 1) > AGREE
            else "The machine ran at about the same speed in both."
        )
    )


def _book_ratios(s: pd.DataFrame) -> dict[tuple[str, ...], float]:
    """Each cell's median over the book's process server's median in the same cell."""
    out: dict[tuple[str, ...], float] = {}
    s = _figures(s)
    for key, row in s.iterrows():
        scenario, server, args, placement, match = key
        ref = (scenario, BOOK_SERVER, "", placement, match)
        if server == BOOK_SERVER or ref not in s.index:
            continue
        base = float(s.loc[ref]["median"])
        if base > 0:
            out[(scenario, server, args, placement, match)] = float(row["median"]) / base
    return out


def _agree(x: float, y: float) -> bool:
    return x > 0 and abs(y / x - 1.0) <= AGREE


def compare_pair(a: Run, b: Run) -> list[Heading | Para | Table]:
    blocks: list[Heading | Para | Table] = [Heading(f"{b.run_id} / {a.run_id}")]
    diffs = environment_differences(a, b)
    if diffs:
        blocks.append(Para("ENVIRONMENTS DIFFER (ratios compare machines): " + "; ".join(diffs)))
    else:
        blocks.append(Para("Same CPU model, core count, kernel and Python."))
    ra, rb = _by_key(a, "requests_per_s"), _by_key(b, "requests_per_s")
    pa, pb = _by_key(a, "p99_us"), _by_key(b, "p99_us")
    rows = []
    for key in [k for k in ra.index if k in rb.index]:
        x, y = ra.loc[key], rb.loc[key]
        r = ratio_of(x, y)
        p99 = ratio_of(pa.loc[key], pb.loc[key]) if key in pa.index and key in pb.index else None
        notes = []
        if r.in_noise:
            notes.append("inside the noise")
        elif r.single:
            notes.append("one trial: noise unknown")
        if x["param_key"] != y["param_key"]:
            notes.append("cells of different length (duration/warm-up)")
        if bool(x["saturated"]) or bool(y["saturated"]):
            notes.append("client-saturated")
        rows.append(
            [
                key[0],
                str(x["label"]),
                key[3],
                fmt.params_text(x),
                fmt.num(x["median"]),
                fmt.num(y["median"]),
                r.text(),
                p99.text() if p99 else "n/a",
                "; ".join(notes),
            ]
        )
    headers = [
        "scenario",
        "server",
        "placement",
        "parameters",
        "A req/s",
        "B req/s",
        "req/s B/A [range]",
        "p99 B/A [range]",
        "note",
    ]
    blocks.append(Table(headers, rows))
    only_a = len([k for k in ra.index if k not in rb.index])
    only_b = len([k for k in rb.index if k not in ra.index])
    if only_a or only_b:
        blocks.append(Para(f"Cells only in A: {only_a}; only in B: {only_b}."))
    blocks.append(Para(canary_text(a, b)))
    blocks += micro_blocks(a, b)
    blocks += scorecard_blocks(a, b)
    fa, fb = _figures(ra), _figures(rb)
    ba, bb = _book_ratios(ra), _book_ratios(rb)
    left_out = len([k for k in ra.index if k in rb.index]) - len(
        [k for k in fa.index if k in fb.index]
    )
    for scope, scenarios in (
        ("", None),
        ("headline scenarios (concurrency, per-request): ", HEADLINE),
    ):
        common = [k for k in fa.index if k in fb.index and (scenarios is None or k[0] in scenarios)]
        same = sum(_agree(float(fa.loc[k]["median"]), float(fb.loc[k]["median"])) for k in common)
        both = [k for k in ba if k in bb and (scenarios is None or k[0] in scenarios)]
        same_r = sum(_agree(ba[k], bb[k]) for k in both)
        blocks.append(
            Para(f"{scope}requests/s: {same} of {len(common)} common cells within ±{AGREE:.0%}")
        )
        blocks.append(
            Para(
                f"{scope}ratios to the {BOOK_SERVER} server: {same_r} of {len(both)} common "
                f"cells within ±{AGREE:.0%}"
            )
        )
    if left_out:
        blocks.append(
            Para(f"({left_out} common cell(s) left out of these counts: starved in a run.)")
        )
    blocks.append(Para(calibration_line(fa, fb)))
    return blocks


def inside(outer: pd.DataFrame, other: pd.DataFrame, keys: list[tuple[str, ...]]) -> int:
    """How many of `other`'s medians fall inside `outer`'s stated intervals, over `keys`."""
    return sum(
        float(outer.loc[k]["lo"]) <= float(other.loc[k]["median"]) <= float(outer.loc[k]["hi"])
        for k in keys
    )


def calibration_line(fa: pd.DataFrame, fb: pd.DataFrame) -> str:
    """Does each run's stated interval hold the other run's median as often as it promises?
    Over the headline points both runs measured with more than one trial."""
    keys = [
        k
        for k in fa.index
        if k in fb.index
        and k[0] in HEADLINE
        and int(fa.loc[k]["n"]) > 1
        and int(fb.loc[k]["n"]) > 1
    ]
    if not keys:
        return "calibration: no headline point with more than one trial in both runs"
    a_holds_b, b_holds_a = inside(fa, fb, keys), inside(fb, fa, keys)
    return (
        f"calibration (headline requests/s): B's medians inside A's intervals {a_holds_b} of "
        f"{len(keys)} ({a_holds_b / len(keys):.0%}), A's inside B's {b_holds_a} of {len(keys)} "
        f"({b_holds_a / len(keys):.0%}); promised {PROMISE:.0%}"
    )


def micro_blocks(a: Run, b: Run) -> list[Heading | Para | Table]:
    """The microbenchmarks of both runs, as ratios B/A with the range their rounds allow."""
    ma, mb = a.micro, b.micro
    if ma.empty or mb.empty:
        return [Para("Microbenchmarks: not in both runs.")]
    ia = ma.set_index(["name", "impl"])
    ib = mb.set_index(["name", "impl"])
    rows = []
    for key in sorted((k for k in ia.index if k in ib.index), key=lambda k: micro.order(k[0])):
        x, y = ia.loc[key], ib.loc[key]
        r = Ratio(
            y["median_us"] / x["median_us"],
            y["min_us"] / x["max_us"],
            y["max_us"] / x["min_us"],
            int(x["rounds"]) < 2 or int(y["rounds"]) < 2,
        )
        rows.append(
            [
                micro.words(key[0]),
                key[1],
                fmt.num(x["median_us"]),
                fmt.num(y["median_us"]),
                r.text(),
                "inside the noise" if r.in_noise else "",
            ]
        )
    headers = ["operation", "impl", "A us", "B us", "B/A [range]", "note"]
    return [Heading("Microbenchmarks", 3), Table(headers, rows)]


def scorecard_blocks(a: Run, b: Run) -> list[Heading | Para | Table]:
    """Each scorecard claim's verdict in both runs: the book's claims, reproduced or not."""
    ca, cb = scorecard(a), scorecard(b)
    rows = [
        [x.claim, str(x.verdict), str(y.verdict), "same" if x.verdict == y.verdict else "CHANGED"]
        for x, y in zip(ca, cb, strict=True)
    ]
    same = sum(r[3] == "same" for r in rows)
    return [
        Heading("Scorecard", 3),
        Table(["claim", "A", "B", ""], rows),
        Para(f"scorecard verdicts: {same} of {len(rows)} the same"),
    ]


def ratio_chart(a: Run, b: Run, path: Path) -> Path:
    """One chart of B/A requests/s per common cell, with the range the trials allow."""
    ra, rb = _by_key(a, "requests_per_s"), _by_key(b, "requests_per_s")
    keys = [k for k in ra.index if k in rb.index]
    ratios = [ratio_of(ra.loc[k], rb.loc[k]) for k in keys]
    labels = [f"{k[0]} {ra.loc[k]['label']} {fmt.params_text(ra.loc[k])}"[:70] for k in keys]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.18 * len(keys) + 1.5)))
    ys = list(range(len(keys)))
    med = [r.ratio for r in ratios]
    err = [[max(0.0, r.ratio - r.lo) for r in ratios], [max(0.0, r.hi - r.ratio) for r in ratios]]
    ax.errorbar(med, ys, xerr=err, fmt="o", markersize=3, capsize=2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for edge in (1 - AGREE, 1 + AGREE):
        ax.axvline(edge, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yticks(ys, labels, fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("requests/s, B / A (log; dotted: ±10%)")
    ax.set_title(f"{b.run_id} / {a.run_id}")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(runs: list[Run]) -> str:
    doc = Document("echobench comparison")
    doc.add(Para("A = " + runs[0].run_id + "; each other run is B. Ratios are B/A of medians."))
    for b in runs[1:]:
        doc.add(*compare_pair(runs[0], b))
    return to_markdown(doc)
