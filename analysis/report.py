"""`python -m analysis report RUN_DIR`: the report a design review (or a student) reads.

Writes into RUN_DIR: `report.md`, `report.html` (self-contained: charts inlined as base64 PNG),
`charts/*.png` + `charts/*.svg`, and `cells.csv` (one tidy row per cell and trial). The report
opens with the CS:APP 12.1.2 scorecard and the two reader questions, then the charts each with
the numbers behind it, then what went wrong (flagged and failed cells), every cell, and the
manifest in full. Every number comes from the run through `analysis.fmt`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from analysis import charts, cores, fmt, forkcost, method, questions, summary
from analysis.charts import label
from analysis.charts.link import little_check, little_words
from analysis.document import (
    Bullets,
    Code,
    Document,
    Heading,
    Image,
    Para,
    Table,
    to_html,
    to_markdown,
)
from analysis.results import Run, read_run
from analysis.scorecard import scorecard
from analysis.stats import CV_LIMIT
from analysis.verdict import RULE
from records import gitinfo, schema

HOW_TO_READ = [
    "Each point is the median over trials; its error bar is its interval (the glossary says "
    "what that promises). One trial shows no interval: treat it as a single sample.",
    f"A red star marks a point whose trials disagree (CV over {fmt.pct(CV_LIMIT)}).",
    "Each server has its own colour and marker in every chart.",
    "Hollow markers and 'client-saturated' flags mark cells where the load generator, not the "
    "server, was the limit: those figures are lower bounds, never the server's capacity. "
    "'port-bound' marks connection-per-request cells limited by the kernel's ephemeral ports.",
    "Placement 'split' pins the server to one CPU and the load generator to another; 'shared' "
    "puts both on one CPU; 'unpinned' lets the scheduler choose (noisy).",
    "A starved point (see the glossary) is a cross on the axis, never a figure.",
    "uvloop accepts in Python here (so that, out of descriptors, it backs off): with a new "
    "connection per request it makes about two thirds of what uvloop accepting in C makes.",
]


def _paragraphs(lines: list[str]) -> list[Para | Bullets]:
    """Plain lines as paragraphs; runs of '- ' lines as one bullet list."""
    out: list[Para | Bullets] = []
    items: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("- "):
            items.append(line[2:])
            continue
        if items:
            out.append(Bullets(items))
            items = []
        if line:
            out.append(Para(line))
    return out


def _overview(run: Run) -> list[str]:
    d = run.df
    m = run.manifest
    n_ok = int((d["status"] == "ok").sum()) if not d.empty else 0
    n_failed = int((d["status"] == "failed").sum()) if not d.empty else 0
    trials = int(d["trial"].nunique()) if not d.empty else 0
    lines = [
        f"Run `{run.run_id}`"
        + (
            f", profile `{m.profile_name}`, host `{m.hostname}`, started {m.created_at}"
            if m
            else ""
        )
        + (f", ended {m.ended_at}" if m and m.ended_at else "")
        + ".",
        *(_cluster_hosts(m) if m and m.cluster else []),
        f"{n_ok} cell results ok, {n_failed} failed, over {trials} trial(s).",
        _provenance(run),
    ]
    return lines


def _cluster_hosts(m: schema.Manifest) -> list[str]:
    """Who served and who loaded in a cluster run (its hosts in full are in the method)."""
    servers = [f"`{h.hostname}` ({h.host})" for h in m.hosts if "server" in h.roles]
    clients = [f"`{h.hostname}` ({h.host})" for h in m.hosts if "client" in h.roles]
    return [
        f"Load from other hosts (Dask cluster {m.cluster}): servers on {', '.join(servers)}; "
        f"load from {len(clients)} host(s): {', '.join(clients)}."
    ]


def _provenance(run: Run) -> str:
    """The code that measured the cells (their stamps) and the code that rendered this."""
    measured = sorted(
        {
            str(c.git.commit)[:12] + ("+dirty" if c.git.dirty else "")
            for c in run.cells.values()
            if c.git is not None
        }
    )
    here = gitinfo.git_state()
    rendered = str(here["commit"])[:12] + ("+dirty" if here["dirty"] else "")
    return (
        f"Measured by commit {', '.join(measured) or 'unknown (a version 1 run)'}; "
        f"rendered by commit {rendered}."
    )


def _warnings(run: Run) -> list[str]:
    w = []
    m = run.manifest
    if m is None:
        w.append("No readable manifest: the environment of this run is unknown.")
    else:
        if not m.finished:
            w.append("The run did not finish (interrupted or still running): cells are missing.")
        w += [f"Machine busy before the run: {b}" for b in m.busy_warnings]
    w += [f"Unreadable file {name}: {why}" for name, why in run.unreadable]
    d = run.findings.ok_all
    if not d.empty:
        unpinned = int((d["placement"] == "unpinned").sum())
        if unpinned:
            w.append(f"{unpinned} cell result(s) ran unpinned: expect noise.")
        s = run.findings.summary("requests_per_s", faults=True)
        noisy = int((s["cv"] > CV_LIMIT).sum())
        if noisy:
            w.append(
                f"{noisy} of {len(s)} points have a requests/s CV over {fmt.pct(CV_LIMIT)} "
                "(flagged in the appendix)."
            )
        sat_results = int(d["client_saturated"].fillna(False).astype(bool).sum())
        sat_points = int((s["sat_trials"] > 0).sum())
        if sat_results:
            w.append(
                f"{sat_results} of {len(d)} cell results, in {sat_points} of {len(s)} points, "
                "were client-saturated: their requests/s are lower bounds, never a capacity "
                "(their server CPU per request still counts)."
            )
    return w


def _flagged_table(run: Run) -> Table:
    d = run.df
    rows = []
    if not d.empty:
        ok = run.findings.ok_all
        s = run.findings.summary("requests_per_s", faults=True)
        for _, r in s[s["cv"] > CV_LIMIT].iterrows():
            rows.append(
                [
                    r["scenario"],
                    r["label"],
                    r["placement"],
                    fmt.params_text(r),
                    f"requests/s CV {fmt.pct(r['cv'])} over {int(r['n'])} trials",
                ]
            )
        for _, r in ok.iterrows():
            why = []
            if r["client_saturated"]:
                why.append("client-saturated")
            if r["client_port_bound"]:
                why.append("port-bound")
            if (r["errors"] or 0) > 0:
                why.append(f"{int(r['errors'])} errors")
            if r.get("server_clean_exit") is False:
                why.append("server did not exit cleanly")
            if (r["monitor_dropped"] or 0) > 0:
                why.append(f"{int(r['monitor_dropped'])} monitor samples dropped")
            if why:
                rows.append(
                    [r["scenario"], r["label"], r["placement"], str(r["cell_id"]), "; ".join(why)]
                )
    return Table(["scenario", "server", "placement", "cell", "flag"], rows)


def notes_table(run: Run) -> Table:
    """What the runner noticed about each cell (counter checks, monitor rate, ...)."""
    d = run.df
    rows = []
    if not d.empty and "notes" in d.columns:
        for _, r in d[d["notes"].fillna("") != ""].iterrows():
            rows.append([str(r["cell_id"]), str(r["notes"])])
    return Table(["cell", "runner's notes"], rows)


def failed_table(run: Run) -> Table:
    d = run.df
    f = d[d["status"] == "failed"] if not d.empty else d
    rows = [[str(r["cell_id"]), r["label"], str(r["reason"])] for _, r in f.iterrows()]
    return Table(["cell", "server", "reason"], rows)


def _all_cells_table(run: Run) -> Table:
    rps = run.findings.summary("requests_per_s", faults=True)
    if not rps.empty:
        order = ["scenario", "server", "placement", "connections", "size", "rate_fraction"]
        rps = rps.sort_values(order, na_position="first", kind="stable")
    key_cols = ["scenario", "server", "server_args", "placement", "param_key"]
    p99 = run.findings.summary("p99_us", faults=True).set_index(key_cols)
    rows = []
    for _, r in rps.iterrows():
        key = tuple(r[k] for k in key_cols)
        p = p99.loc[key] if key in p99.index else None
        n = int(r["n"])
        rows.append(
            [
                r["scenario"],
                r["label"],
                r["placement"],
                fmt.params_text(r),
                fmt.spread(r["median"], r["lo"], r["hi"], n),
                fmt.spread(p["median"], p["lo"], p["hi"], n) if p is not None else "n/a",
                str(n),
                "" if math.isnan(r["cv"]) else fmt.pct(r["cv"]),
                charts.flags(r),
            ]
        )
    headers = [
        "scenario",
        "server",
        "placement",
        "parameters",
        "requests/s",
        "p99 us",
        "trials",
        "CV",
        "flags",
    ]
    return Table(headers, rows)


def _placement_table(run: Run) -> Table:
    s = run.findings.placements()
    return charts.summary_table(s, "placement", "placement", "requests/s", "")


APPENDIX = "appendix.md"
# Charts whose number tables are long: the chart and its caption stay in the report, the
# numbers move to the appendix page under the same title (issue 21: a report one finishes).
TABLES_IN_APPENDIX = frozenset(
    {
        "01-throughput-vs-concurrency",
        "02-latency-vs-concurrency",
        "03-latency-distribution",
        "05-memory-per-connection",
        "06-cpu-per-request",
        "07-creation-and-ipc-costs",
        "09-open-loop-tail",
        "10-machine-speed",
        "12-message-size",
        "13-fork-xray",
        "14-fig-12-5-timeline",
    }
)
SCORECARD_INTRO = (
    "Each claim of section 12.1 / 12.1.2, the figures from this run that test it, and a "
    "verdict computed from them by a written rule. Figures are medians [the interval that holds "
    "a repeat run's median 90% of the time; for microbenchmarks, min-max over rounds]. The "
    f"comparison rule, the same for every part of every claim: {RULE}. A claim made of several "
    "parts shows each part's verdict; its own is what the decided parts agree on, 'mixed' when "
    "they disagree. Each claim's own rule is listed under the table."
)


def build(run: Run) -> tuple[Document, Document]:
    """The report and its appendix page."""
    out = run.path / "charts"
    drawn = charts.draw_all(run, out)
    doc = Document(f"echobench report: {run.run_id}", glossary=summary.hover_terms())
    appendix = Document(f"echobench report, appendix: {run.run_id}")
    headers, rows = summary.which_model_when(run)
    ceiling, ceiling_words = forkcost.ceiling_table(run)
    vs_c, vs_c_words = forkcost.python_vs_c(run)
    cores_words, cores_table = cores.section(run)
    claims = scorecard(run)
    ipc_words = questions.why_ipc_hurts(run)  # four paragraphs, around the three IPC tables
    doc.add(
        Para(" ".join(_overview(run))),
        Heading("In one screen"),
        Para(summary.what_was_run(run)),
        Para(summary.answer_fork(run)),
        Para(summary.answer_ipc(run)),
        summary.glance(run),
    )
    warnings = _warnings(run)
    if warnings:
        doc.add(Heading("Warnings"), Bullets(warnings))
    doc.add(
        Heading("Glossary"),
        Bullets(summary.glossary_items()),
        Heading("The CS:APP 12.1.2 scorecard"),
        Para(SCORECARD_INTRO),
        Table(
            ["claim", "figures from this run", "verdict"],
            [[c.claim, c.figure, c.verdict_text] for c in claims],
        ),
        Bullets([f"*{c.claim}*: {c.rule}." for c in claims]),
        Heading("Fork, exec, waitpid?"),
        Para(questions.FORK_CONCEPTS),
        Para("What Fig. 12.5 does for each client, step by step:"),
        Code(questions.fig_12_5_picture()),
        Para(
            "And the same steps as this run measured them, for one real connection through "
            "each forking server (its X-ray; chart 14 draws it):"
        ),
        forkcost.timeline_table(run),
        *[Para(p) for p in questions.fork_exec_waitpid(run) if p],
        Heading("Why is IPC a disadvantage?"),
        Para(ipc_words[0]),
        Para(ipc_words[1]),
        questions.same_mechanism_table(run),
        Para(ipc_words[2]),
        questions.share_count_table(run),
        Para(ipc_words[3]),
        questions.end_to_end_table(run),
        *[Para(p) for p in [questions.placement_words(run)] if p],
        Heading("Which model when: what each server spends at load"),
        Para(WHICH_MODEL_WHEN),
        Table(headers, rows, "Which model when (medians [interval])"),
        Heading("Where a fork's cost goes: the model, Python, and the machine's ceiling"),
        Para(ceiling_words),
        ceiling,
        *[Para(p) for p in vs_c_words],
        vs_c,
        Para(
            "Chart 13 takes one connection apart (the parent inside fork(), the wait until the "
            "child runs, the child's copy-on-write faults and CPU, the wait for the reap) and "
            "sets fork's cost against the parent's memory. `make bench-servers` measures each "
            "Python server against a minimal twin of its model."
        ),
        Heading("More cores: processes, threads and one interpreter lock"),
        *[Para(p) for p in cores_words],
        *([cores_table] if cores_table is not None else []),
        Heading("Over a link"),
        *[Para(p) for p in link_words(run)],
        Heading("How sure: method and noise"),
        *_paragraphs(method.brief(run)),
        Para(f"The method in full, every re-run and every flag: [the appendix]({APPENDIX})."),
        Heading("How to read the charts"),
        Bullets(HOW_TO_READ),
    )
    for i, ch in enumerate(drawn, start=1):
        doc.add(Heading(f"{i}. {ch.title}"), Para(ch.caption))
        doc.add(Image(ch.png, ch.title, f"charts/{ch.png.name}"))
        if not ch.measured:
            doc.add(Para(f"{fmt.NOT_MEASURED.capitalize()}."))
        if ch.name in TABLES_IN_APPENDIX:
            if ch.tables:
                doc.add(Para(f"Its numbers: [the appendix]({APPENDIX}), under the same title."))
                appendix.add(Heading(f"{i}. {ch.title}"), *ch.tables)
            continue
        for t in ch.tables:
            doc.add(t)
    doc.add(
        Heading("Appendix"),
        Para(
            f"On its own page, [{APPENDIX}]({APPENDIX}): the method in full, the charts' "
            "number tables, placement, flagged cells, the runner's notes, failed cells, every "
            "cell and the manifest."
        ),
    )
    failed = failed_table(run)
    appendix.blocks[:0] = [
        Para("The report this page belongs to: [report.md](report.md)."),
        Heading("How sure: the method in full"),
        *_paragraphs(method.section(run)),
    ]
    appendix.add(
        Heading("Placement: one CPU or two"),
        Para(
            "1 connection, 64 B: the same server with the load generator on another CPU "
            "('split') and on the same CPU ('shared')."
        ),
        _placement_table(run),
        Heading("Flagged cells"),
        _flagged_table(run),
        Heading("Runner's notes"),
        notes_table(run),
        Heading("Failed cells"),
        failed if failed.rows else Para("None: every cell ran."),
        Heading("Every cell"),
        _all_cells_table(run),
        Heading("Environment (manifest, in full)"),
        Code(
            json.dumps(schema.to_dict(run.manifest), indent=1)
            if run.manifest
            else "no readable manifest.json",
            "json",
        ),
    )
    return doc, appendix


def link_words(run: Run) -> list[str]:
    """issue 23: the student's sentence, and Little's law checked on the fork server's cells."""
    checks = little_check(run)
    if not checks:
        return [
            "Not measured in this run: the link profile (`make bench PROFILE=link`) puts the "
            "clients 1, 10 and 50 ms away (chart 16)."
        ]
    parts = [
        "Why a process per connection costs more the farther away its clients are: a child "
        "lives until its client has answered, one round trip at least, so at R requests/s the "
        "server holds R x RTT children, each an address space of its own, where an event loop "
        "holds R x RTT small objects (Little's law; chart 16 draws it)."
    ]
    lines = [f"{label(c.server)}, {c.rtt_ms:g} ms: {little_words(c)}" for c in checks]
    parts.append(
        "Little's law on this run's cells (children alive on average, from the monitor's looks "
        "at random instants, against the rate served x (the measured round trip + the service "
        "time of the loopback cells); [90% intervals] from the looks' spread): "
        + "; ".join(lines)
        + "."
    )
    return parts


WHICH_MODEL_WHEN = (
    "Here the load generator runs out of CPU before the cheaper servers do, so a closed-loop "
    "figure often says where the client stopped. What the server alone decides is its CPU per "
    "request: every server was offered the same load, open loop (a pool with a worker per "
    "connection). A capacity comes only from points the server limited (else 'at least'); one "
    "connection is a round trip; 'what breaks first' reads only the cells."
)


def write_report(run_dir: str | Path) -> Path:
    """Render the report of a run into the run directory; returns the markdown path."""
    run = read_run(run_dir)
    doc, appendix = build(run)
    md, html_path = run.path / "report.md", run.path / "report.html"
    _write_text(md, to_markdown(doc))
    _write_text(html_path, to_html(doc))
    _write_text(run.path / APPENDIX, to_markdown(appendix))
    _write_text(run.path / APPENDIX.replace(".md", ".html"), to_html(appendix))
    _write_text(run.path / "cells.csv", run.df.to_csv(index=False))
    return md


def _write_text(path: Path, text: str) -> None:
    """Atomic like the schema's writer: a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
