"""More cores (issue 14): the same servers on 1, 2, 4, ... CPUs, connection per request.

The Python half of 12.1.2: processes (fork per connection, prefork) can spread over cores;
threads in one interpreter share its lock, and an event loop is one thread. The table gives
connections/s at each CPU count and the speed-up over one CPU; on a machine too small for the
sweep the runner skipped it and the manifest says why, and so does this section.
"""

from __future__ import annotations

from analysis import fmt
from analysis.document import Table
from analysis.results import Run, ok_cells
from analysis.stats import summarise
from records.registry import SERVERS


def section(run: Run) -> tuple[list[str], Table | None]:
    skipped = [
        line
        for line in (run.manifest.limits.get("skipped", []) if run.manifest else [])
        if line.startswith("cores")
    ]
    d = ok_cells(run)
    cores = d[d["scenario"] == "cores"] if not d.empty else d
    words = [
        "The same servers pinned to 1, 2, 4, ... CPUs with the load generator on the rest, a "
        "new connection per request (100 clients): forking servers spread their children over "
        "the cores; a thread server's threads take turns holding one interpreter lock; an event "
        "loop is one thread. Every other cell of the run gives the server "
        f"{len(run.manifest.server_cpus or ()) if run.manifest else 1} CPU(s), as the "
        "reference run did, so runs on different machines compare like for like.",
        *skipped,
    ]
    if cores.empty or "server_cpus" not in cores.columns:
        if not skipped:
            words.append(f"The sweep was {fmt.NOT_MEASURED} (not in this run's profile).")
        return words, None
    s = summarise(cores.assign(param_key=cores["server_cpus"].astype(str)), "requests_per_s")
    counts = sorted({int(k) for k in cores["server_cpus"].dropna()})
    rows = []
    for server in [n for n in SERVERS if n in set(s["server"])]:
        own = s[s["server"] == server]
        by_k = {int(r["param_key"]): r for _, r in own.iterrows()}
        one = by_k.get(counts[0])
        cells = []
        for k in counts:
            r = by_k.get(k)
            if r is None:
                cells.append(fmt.NOT_MEASURED)
                continue
            speed = f" ({fmt.ratio(r['median'] / one['median'])})" if one is not None else ""
            cells.append(fmt.spread(r["median"], r["lo"], r["hi"], int(r["n"])) + speed)
        rows.append([SERVERS[server].label, *cells])
    headers = ["server", *[f"{k} CPU{'s' if k > 1 else ''}: conn/s (x 1 CPU)" for k in counts]]
    return words, Table(headers, rows, "Connections/s by the server's CPU count")
