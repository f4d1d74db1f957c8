"""The analysis renders a real run (tests/data/analysis-run, made by `python -m bench run` with
tests/data/analysis-profile.toml) into a report whose numbers can be recomputed from the raw
cells, draws every chart as a valid image, compares a run with itself as ratios of 1.00, and
turns bad input into one line on stderr with exit status 2.

The figures themselves are whatever that run measured; the tests check that the report says
what the raw histograms and counts say, never that a server is fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

from analysis import charts, fmt, forkcost, results
from analysis.charts.link import LittleCheck, little_words
from analysis.check import check_report, find_browser, report_shape
from analysis.compare import compare
from analysis.report import failed_table, write_report
from analysis.results import read_run
from analysis.scorecard import Evidence, parent_must_close_connfd
from analysis.stats import capacity, summarise
from records import schema
from records.registry import SERVERS

DATA = Path(__file__).parent / "data" / "analysis-run"
ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        check=False,
    )


def copy_run(dst: Path) -> Path:
    shutil.copytree(DATA, dst, ignore=shutil.ignore_patterns("charts", "report*", "cells.csv"))
    return dst


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The committed run, copied and rendered once by the real CLI."""
    run = copy_run(tmp_path_factory.mktemp("analysis") / "run")
    done = run_cli("report", str(run))
    assert done.returncode == 0, done.stderr
    return run


def raw_cells() -> list[dict[str, Any]]:
    """The cell documents as plain JSON: the test's own reading, independent of analysis.results."""
    return [json.loads(p.read_text()) for p in sorted((DATA / "cells").glob("*.json"))]


def raw_group(scenario: str, server: str, connections: int) -> list[dict[str, Any]]:
    found = [
        c
        for c in raw_cells()
        if c["scenario"] == scenario
        and c["server"] == server
        and c["status"] == "ok"
        and c["placement"] == "split"
        and c["params"]["connections"] == connections
    ]
    assert found, f"the committed run has no ok {scenario}/{server}/c{connections} cell"
    return found


def p99_of(cell: dict[str, Any]) -> float:
    encoded = cell["load"]["histograms"]["latency"]["encoded"]
    return float(HdrHistogram.decode(encoded).get_value_at_percentile(99)) / 1000.0


def table_rows(md: str, first_cell: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith(f"| {first_cell} |")
    ]


def test_committed_run_is_real_and_small() -> None:
    manifest = schema.read_manifest(DATA / "manifest.json")
    assert manifest.profile_name == "analysis-test"
    assert manifest.finished
    cells = [schema.read_cell(p) for p in (DATA / "cells").glob("*.json")]
    assert len(cells) >= 30
    assert all(c.load is not None for c in cells if c.status == "ok")
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert size < 2 * 2**20


def test_report_writes_every_output(rendered: Path) -> None:
    for name in ("report.md", "report.html", "appendix.md", "appendix.html", "cells.csv"):
        assert (rendered / name).stat().st_size > 0
    pngs = sorted((rendered / "charts").glob("*.png"))
    svgs = sorted((rendered / "charts").glob("*.svg"))
    assert len(pngs) == len(svgs) == len(charts.ALL)
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC, png
    for svg in svgs:
        assert ET.parse(svg).getroot().tag.endswith("svg"), svg


def both_pages(rendered: Path) -> str:
    """The report and its appendix page (issue 21: long number tables live on the second)."""
    return (rendered / "report.md").read_text() + (rendered / "appendix.md").read_text()


def test_p99_recomputed_from_raw_histograms_is_in_report(rendered: Path) -> None:
    md = both_pages(rendered)
    label = SERVERS["uvloop"].label
    cells = raw_group("concurrency", "uvloop", 10)
    values = [p99_of(c) for c in cells]
    # the p99 grid: a row per server, a column per connection count (1, 10)
    grid = md.split("Latency p99: p99 us", 1)[1]
    rows = [r for r in table_rows(grid, label)]
    assert rows, "no uvloop row in the p99 grid"
    assert_figure(rows[0][2], values)


def assert_figure(text: str, values: list[float]) -> None:
    """A table's "median [lo-hi]" is the median of `values`, and its interval holds every one
    of them (a prediction interval is never narrower than the trials' [min-max])."""
    assert text.startswith(f"{fmt.num(statistics.median(values))} ["), (text, values)
    lo, hi = (
        float(x.replace(",", ""))
        for x in text.split("[", 1)[1].split("]", maxsplit=1)[0].split("-")
    )
    assert lo <= min(values) * 1.001, (text, values)
    assert hi >= max(values) * 0.999, (text, values)


def test_requests_per_s_median_over_trials_is_in_report(rendered: Path) -> None:
    md = both_pages(rendered)
    for server in ("process", "thread", "uvloop"):
        cells = raw_group("concurrency", server, 1)
        rps = [float(c["load"]["requests_per_s"]) for c in cells]
        assert len(rps) == 2  # the profile runs two trials: the figure is a median with a range
        label = SERVERS[server].label
        grid = md.split("Throughput: requests/s", 1)[1]
        rows = table_rows(grid, label)
        assert rows, f"{server}: no row in the requests/s grid"
        assert_figure(rows[0][1], rps)


def test_merged_distribution_matches_raw_histograms(rendered: Path) -> None:
    md = both_pages(rendered)
    merged = HdrHistogram(schema.HIST_LOWEST_NS, schema.HIST_HIGHEST_NS, 3)
    for c in raw_group("concurrency", "thread", 10):
        merged.add(HdrHistogram.decode(c["load"]["histograms"]["latency"]["encoded"]))
    p999 = fmt.num(merged.get_value_at_percentile(99.9) / 1000.0)
    row = [r for r in table_rows(md, SERVERS["thread"].label) if r[1] == f"{merged.total_count:,}"]
    assert row
    assert row[0][4] == p999


def test_scorecard_has_every_claim_with_a_computed_verdict(rendered: Path) -> None:
    md = (rendered / "report.md").read_text()
    section = md.split("## The CS:APP 12.1.2 scorecard", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 9  # header + the nine claims
    # The run has the naive counter: its verdict is computed, and agrees with the raw STATS.
    naive = [c for c in raw_cells() if c["params"].get("shared_counter") == "naive"]
    assert naive
    assert all(c["server_run"]["stats"]["bytes"] == 0 for c in naive)
    assert "parent reports 0 B of" in section
    assert "**confirmed**" in section
    # The fault experiments of issue 7 are not in this run: said, not guessed.
    assert section.count(fmt.NOT_MEASURED) >= 2


def test_report_shows_manifest_and_reader_questions(rendered: Path) -> None:
    md = (rendered / "report.md").read_text()
    manifest = json.loads((DATA / "manifest.json").read_text())
    assert manifest["environment"]["cpu_model"] in md
    assert manifest["run_id"] in md
    assert "## Fork, exec, waitpid?" in md
    assert "## Why is IPC a disadvantage?" in md
    html = (rendered / "report.html").read_text()
    assert html.count('<figure class="chart"') == len(charts.ALL)
    assert "<title>" in html.split("<body>", 1)[1]  # hover values on the charts' points
    # self-contained: nothing is fetched (SVG namespace URIs are names, not requests)
    for fetch in ('src="http', "src='http", 'href="http', "url(http", "@import"):
        assert fetch not in html, fetch


def test_cells_csv_has_one_row_per_cell_and_trial(rendered: Path) -> None:
    df = pd.read_csv(rendered / "cells.csv")
    assert len(df) == len(raw_cells())
    assert {"cell_id", "scenario", "server", "label", "trial", "requests_per_s", "p99_us"} <= set(
        df.columns
    )


def test_missing_scenario_says_not_measured(tmp_path: Path) -> None:
    run = copy_run(tmp_path / "run")
    for p in (run / "cells").glob("per-request_*.json"):
        p.unlink()
    chart = charts.connections_per_second(read_run(run), tmp_path / "charts")
    assert not chart.measured
    assert chart.png.read_bytes()[:8] == PNG_MAGIC


def test_run_without_cells_still_renders_and_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    shutil.copy(DATA / "manifest.json", run / "manifest.json")
    md = write_report(run).read_text()
    assert md.count(fmt.NOT_MEASURED) >= len(charts.ALL) + 7  # every chart and every claim
    assert len(list((run / "charts").glob("*.png"))) == len(charts.ALL)


def test_fault_experiment_cells_feed_the_scorecard_not_the_charts(tmp_path: Path) -> None:
    run = copy_run(tmp_path / "run")
    path = sorted((run / "cells").glob("per-request_process_*.json"))[0]
    cell = schema.read_cell(path)
    assert cell.server_run is not None
    # The same measured cell, relabelled as run with issue 7's --leak-connfd switch.
    sr = dataclasses.replace(cell.server_run, argv=[*cell.server_run.argv, "--leak-connfd"])
    schema.write_atomic(path, dataclasses.replace(cell, server_run=sr))
    loaded = read_run(run)
    chart = charts.connections_per_second(loaded, tmp_path / "charts")
    rows = [r for t in chart.tables for r in t.rows if r[0] == SERVERS["process"].label]
    # one trial left (no [min-max] range in the grid): the other is the fault
    assert rows
    assert all("[" not in r[1] for r in rows)
    claim = parent_must_close_connfd(Evidence(loaded.df, pd.DataFrame()))
    # the relabelled cell reaches the claim; without its fault scenario's control it cannot
    # decide, and says so rather than compare against another scenario's load
    assert claim.verdict == "inconclusive"
    assert "control" in claim.why


def test_failed_cell_is_listed_with_reason(tmp_path: Path) -> None:
    run = copy_run(tmp_path / "run")
    victim_path = sorted((run / "cells").glob("concurrency_uvloop_*.json"))[0]
    victim = schema.read_cell(victim_path)
    failed = dataclasses.replace(victim, status="failed", reason="server did not print READY")
    schema.write_atomic(victim_path, failed)
    loaded = read_run(run)
    table = failed_table(loaded)
    assert [[victim.cell_id, SERVERS["uvloop"].label, "server did not print READY"]] == table.rows
    # ...and the failed trial is out of every figure: only the other trial is summarised.
    s = summarise(loaded.df[loaded.df["scenario"] == "concurrency"], "requests_per_s")
    point = s[
        (s["server"] == "uvloop")
        & (s["param_key"] == loaded.df.set_index("cell_id").loc[victim.cell_id, "param_key"])
    ]
    assert point["n"].tolist() == [1]


def test_compare_with_itself_is_all_ones() -> None:
    run = read_run(DATA)
    text = compare([run, run])
    flat = [
        r for s in ("concurrency", "shared-counter", "per-request") for r in table_rows(text, s)
    ]
    assert len(flat) >= 10
    for r in flat:
        assert r[6].startswith("1.00x"), r
        assert r[7].startswith("1.00x") or r[7] == "n/a", r
    assert "ENVIRONMENTS DIFFER" not in text


def test_compare_flags_a_different_environment(tmp_path: Path) -> None:
    a = copy_run(tmp_path / "a")
    b = copy_run(tmp_path / "b")
    m = schema.read_manifest(b / "manifest.json")
    env = {**m.environment, "cpu_model": "Some Other CPU"}
    schema.write_atomic(b / "manifest.json", dataclasses.replace(m, environment=env))
    text = compare([read_run(a), read_run(b)])
    assert "ENVIRONMENTS DIFFER" in text
    assert "Some Other CPU" in text


@pytest.mark.parametrize(
    "args",
    [["report", "/nonexistent/run"], ["compare", str(DATA)], ["check-report", "/nonexistent"]],
)
def test_bad_input_is_one_line_and_status_2(args: list[str]) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1


def _need_chromium() -> None:
    if find_browser() is None:
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide the check
            pytest.fail("chromium is not installed in CI (.ci/run should have installed it)")
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")


@pytest.mark.chromium
def test_html_report_opens_in_headless_chromium_with_every_image(rendered: Path) -> None:
    _need_chromium()
    done = run_cli("check-report", str(rendered))
    assert done.returncode == 0, done.stdout + done.stderr
    n = len(charts.ALL)
    assert f"{n}/{n} images loaded; 0 console/page errors; missing sections: none" in done.stdout
    shot = rendered / "report-screenshot.png"
    assert shot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.chromium
def test_check_report_fails_on_a_console_error_or_a_missing_section(
    rendered: Path, tmp_path: Path
) -> None:
    _need_chromium()
    bad = tmp_path / "bad"
    bad.mkdir()
    html = (rendered / "report.html").read_text()
    html = html.replace('id="glossary"', 'id="not-the-glossary"')
    html = html.replace("</body>", "<script>console.error('boom')</script></body>")
    (bad / "report.html").write_text(html)
    result = check_report(bad, screenshot=False)
    assert result.errors >= 1
    assert result.missing_sections == ("glossary",)
    assert not result.ok


@pytest.mark.chromium
def test_check_report_fails_clearly_on_a_broken_image(rendered: Path, tmp_path: Path) -> None:
    _need_chromium()
    broken = tmp_path / "broken"
    broken.mkdir()
    html = (rendered / "report.html").read_text()
    # Empty one inlined chart: the check must notice rather than pass a blank picture.
    head, tail = html.split('<figure class="chart"', 1)
    _body, rest = tail.split("</figure>", 1)
    (broken / "report.html").write_text(head + '<figure class="chart"></figure>' + rest)
    result = check_report(broken, screenshot=False)
    assert result.images_total == len(charts.ALL)
    assert result.images_loaded == len(charts.ALL) - 1
    assert not result.ok


# --------------------------------------------------------------------------- issue 21: charts

TIMELINE_STEPS = [
    "accept",
    "fork_start",
    "fork_end",
    "parent_closed",
    "child_start",
    "listenfd_closed",
    "first_echo",
    "exit",
    "handler",
    "reaped",
]


def _label_boxes(fig: Any) -> list[Any]:
    renderer = fig.canvas.get_renderer()
    return [
        t.get_window_extent(renderer)
        for ax in fig.axes
        for t in ax.texts
        if t.get_text().strip()  # the arrows are annotations with no text
    ]


@pytest.mark.parametrize(
    "spread_us",
    [
        {"fork per connection": 1000.0, "C fork per connection": 350.0},  # as measured here
        {"fork per connection": 2700.0, "C fork per connection": 3.0},  # C's steps crowd
    ],
    ids=["measured-shape", "crowded"],
)
def test_fig_12_5_timeline_labels_never_overlap(spread_us: dict[str, float]) -> None:
    panels = [
        (
            words,
            "process" if "C" not in words else "c-process",
            {step: span * i / len(TIMELINE_STEPS) for i, step in enumerate(TIMELINE_STEPS)},
        )
        for words, span in spread_us.items()
    ]
    fig = charts.timeline_figure(panels)
    try:
        boxes = _label_boxes(fig)
        assert len(boxes) == len(TIMELINE_STEPS) * len(panels)  # every step is labelled
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), (a, b)
        # one time scale for every panel, so a faster server looks shorter
        assert len({ax.get_xlim() for ax in fig.axes}) == 1
    finally:
        charts.plt.close(fig)


def test_every_server_has_its_own_colour_and_marker() -> None:
    pairs = [(spec.colour.lower(), spec.marker) for spec in SERVERS.values()]
    assert len(set(pairs)) == len(pairs)
    # and its own colour outright: a marker alone is hard to tell apart in a legend
    assert len({c for c, _ in pairs}) == len(pairs)
    assert all(charts.colour(name) == spec.colour for name, spec in SERVERS.items())


def test_fork_segments_split_the_parents_time_inside_fork_from_the_wait() -> None:
    python_shape = {
        "accept": 0.0,
        "fork_start": 0.2,
        "fork_end": 225.0,
        "child_start": 583.0,
        "listenfd_closed": 605.0,
        "first_echo": 670.0,
        "exit": 724.0,
        "handler": 978.0,
        "reaped": 1002.0,
    }
    segs = {words: width for words, _, width in forkcost.segments(python_shape)}
    assert segs[forkcost.PAIR_WORDS["fork_start", "fork_end"]] == pytest.approx(224.8)
    assert segs[forkcost.PAIR_WORDS["fork_end", "child_start"]] == pytest.approx(358.0)
    # consecutive: the bar still runs from accept to the reap with no gap or overlap
    assert sum(segs.values()) == pytest.approx(1002.0)
    child_first = {**python_shape, "fork_end": 590.0}  # the child ran before fork returned
    words = [w for w, _, _ in forkcost.segments(child_first)]
    assert forkcost.STILL_IN_FORK in words
    assert sum(w for _, _, w in forkcost.segments(child_first)) == pytest.approx(1002.0)


def test_capacity_only_from_points_the_server_limited() -> None:
    def point(conns: int, median: float, sat_trials: int) -> dict[str, Any]:
        return {
            "server": "uvloop",
            "placement": "split",
            "connections": conns,
            "starved": 0,
            "median": median,
            "lo": median * 0.9,
            "hi": median * 1.1,
            "n": 3,
            "cv": 0.05,
            "saturated": sat_trials > 0,
            "sat_trials": sat_trials,
        }

    s = pd.DataFrame([point(1, 12000, 0), point(10, 90000, 3), point(100, 80000, 1)])
    cap = capacity(s, "uvloop")
    assert cap.best is None  # one connection is a round trip; the others the client limited
    assert cap.text().startswith("at least 90,000 req/s (the load generator's limit, 10 conns")
    s2 = pd.DataFrame([point(1, 12000, 0), point(10, 50000, 0), point(100, 80000, 2)])
    cap2 = capacity(s2, "uvloop")
    assert cap2.best is not None
    assert cap2.best_conns == 10
    assert "at least 80,000" in cap2.text()


def test_report_shape_promises_one_screen_and_an_appendix(rendered: Path, tmp_path: Path) -> None:
    assert report_shape(rendered) == ()
    md = (rendered / "report.md").read_text()
    assert "](appendix.md)" in md
    assert "## Every cell" not in md
    assert "## Every cell" in (rendered / "appendix.md").read_text()
    # the glossary comes before the scorecard, and defines the OS words
    assert md.index("## Glossary") < md.index("## The CS:APP 12.1.2 scorecard")
    for word in (
        "**fork**",
        "**exec**",
        "**waitpid**",
        "**zombie**",
        "**SIGCHLD**",
        "**copy-on-write**",
        "**page fault**",
        "**IPC**",
    ):
        assert word in md, word
    html = (rendered / "report.html").read_text()
    assert '<abbr title="creates a new process' in html  # hover text where 'fork' first appears
    long = tmp_path / "long"
    long.mkdir()
    (long / "report.md").write_text(
        "## In one screen\n\n"
        + "word " * 400
        + "\n\n| a | b |\n|---|---|\n"
        + "| 1 | 2 |\n" * 7
        + "\n## Rest\n\n"
        + "more " * 8000
    )
    problems = " ".join(report_shape(long))
    assert "opening is" in problems
    assert "7 rows" in problems
    assert "8,000" in problems
    assert "no appendix.md" in problems


def test_write_report_derives_the_findings_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 22: every section reads the run's findings; the ok-cell filter runs once per run
    (with and without the fault experiments) and the summariser once per metric and filter,
    not once per section."""
    run = copy_run(tmp_path / "run")
    calls: dict[tuple[str, object], int] = {}
    real_filter, real_summarise = results.filter_ok, results.summarise

    def counted_filter(df: pd.DataFrame, faults: bool = False) -> pd.DataFrame:
        calls["filter", faults] = calls.get(("filter", faults), 0) + 1
        return real_filter(df, faults)

    def counted_summarise(df: pd.DataFrame, metric: str) -> pd.DataFrame:
        key = ("summarise", (metric, id(df)))  # the findings hold both frames: ids are apart
        calls[key] = calls.get(key, 0) + 1
        return real_summarise(df, metric)

    monkeypatch.setattr(results, "filter_ok", counted_filter)
    monkeypatch.setattr(results, "summarise", counted_summarise)
    write_report(run)
    assert calls.get(("filter", False)) == 1
    assert calls.get(("filter", True)) == 1
    summarised = {k: n for k, n in calls.items() if k[0] == "summarise"}
    assert summarised, summarised
    assert all(n == 1 for n in summarised.values()), summarised
    # and no section summarises behind the findings' back
    for path in (ROOT / "analysis").glob("*.py"):
        if path.stem in ("results", "stats", "cores"):  # cores groups by CPUs given: its own
            continue
        assert "summarise(" not in path.read_text(), path


def test_littles_law_check_is_decided_by_its_sampling_noise() -> None:
    """The link's Little's-law check can come out each way: within the tolerance, beyond it, or
    undecided when the looks' noise spans both (a mean of a count near 1 from 30 looks)."""
    agrees = LittleCheck("process", 50.0, 19.7, 0.3, 19.7, 0.2, 30)
    off = LittleCheck("process", 1.0, 0.27, 0.15, 0.90, 0.15, 30)
    unsure = LittleCheck("process", 10.0, 4.13, 0.25, 4.55, 0.15, 30)
    assert agrees.verdict.startswith("agrees")
    assert off.verdict.startswith("off")
    assert unsure.verdict.startswith("cannot tell from 30 looks")
    assert little_words(off).startswith("0.27 [0.12-0.42] alive against 0.90 [0.75-1.05]")
