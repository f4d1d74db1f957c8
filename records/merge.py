"""Several load results as one: the shards of a cluster cell (bench/cluster.py, issue 14).

Each shard is a whole `python -m loadgen` run on its own host, against the same server, for the
same duration. Merging them is exact where it can be: counts add up, and histograms are added
bucket by bucket from their HdrHistogram encodings (never by averaging percentiles). What is not
exact is said: the shards' windows open a little apart (bench/cluster.py records how far, on
the scheduler's clock), so the merged requests/s is the sum of each shard's own rate over its
own window, which is the server's rate when the windows overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

from records import hist
from records.schema import ClientCpu, Fill, Histogram, LoadConfig, LoadResult, TimelineSecond

_FILL_ORDER = ("stopped", "deadline", "stalled", "all")  # the worst ending wins


def _sum(parts: Sequence[LoadResult], name: str) -> int:
    return sum(int(getattr(p, name)) for p in parts)


def _counts(dicts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            out[key] = out.get(key, 0) + n
    return out


def merge_fills(parts: Sequence[LoadResult]) -> Fill | None:
    fills = [p.fill for p in parts if p.fill is not None]
    if not fills:
        return None
    return Fill(
        asked=sum(f.asked for f in fills),
        connected=sum(f.connected for f in fills),
        echoed=sum(f.echoed for f in fills),
        fill_s=max(f.fill_s for f in fills),
        deadline_s=max(f.deadline_s for f in fills),
        stall_s=max(f.stall_s for f in fills),
        ended=min((f.ended for f in fills), key=_FILL_ORDER.index),
    )


def merge_loads(
    parts: Sequence[LoadResult],
    config: LoadConfig,
    window_ns: tuple[int, int] = (0, 0),
    failure: str | None = None,
) -> LoadResult:
    """The shards `parts` as one result under `config` (the whole cell's configuration).

    `window_ns` is the window as the server's host saw it (its CLOCK_MONOTONIC), so the server's
    CPU is accounted over it; `failure` is why the cell's load is incomplete beyond the shards'
    own failures (a shard that never reported, say)."""
    names = sorted({name for p in parts for name in p.histograms})
    histograms: dict[str, Histogram] = {
        name: hist.to_schema(
            hist.merge([p.histograms[name].encoded for p in parts if name in p.histograms])
        )
        for name in names
    }
    timeline: dict[int, list[int]] = {}
    for p in parts:
        for t in p.timeline:
            slot = timeline.setdefault(t.second, [0, 0])
            slot[0] += t.completed
            slot[1] += t.errors
    cpus = [
        ClientCpu(
            worker=i, user_s=c.user_s, sys_s=c.sys_s, wall_s=c.wall_s, cpus_given=c.cpus_given
        )
        for i, c in enumerate(c for p in parts for c in p.client_cpu)
    ]
    failure = failure or next((p.failure for p in parts if p.failure), None)
    rps = sum(p.requests_per_s for p in parts)
    return LoadResult(
        config=config,
        started_at=min((p.started_at for p in parts), default=""),
        ended_at=max((p.ended_at for p in parts), default=""),
        elapsed_s=max((p.elapsed_s for p in parts), default=0.0),
        complete=bool(parts) and failure is None and all(p.complete for p in parts),
        failure=failure,
        requests=_sum(parts, "requests"),
        bytes_sent=_sum(parts, "bytes_sent"),
        bytes_received=_sum(parts, "bytes_received"),
        bytes_received_total=_sum(parts, "bytes_received_total"),
        connections_opened=_sum(parts, "connections_opened"),
        errors=_counts([p.errors for p in parts]),
        error_details=_counts([p.error_details for p in parts]),
        histograms=histograms,
        timeline=[TimelineSecond(s, v[0], v[1]) for s, v in sorted(timeline.items())],
        client_cpu=cpus,
        client_saturated=any(p.client_saturated for p in parts),
        client_port_bound=any(p.client_port_bound for p in parts),
        requests_per_s=round(rps, 3),
        idle_opened=_sum(parts, "idle_opened"),
        idle_alive_at_end=_sum(parts, "idle_alive_at_end"),
        window_start_ns=window_ns[0],
        window_end_ns=window_ns[1],
        fill=merge_fills(parts),
        served=_sum(parts, "served"),
        starved=config.connections - _sum(parts, "served") if parts else config.connections,
        unfinished=_sum(parts, "unfinished"),
        target_rate=config.rate if config.load == "open" else None,
        sent=_sum(parts, "sent"),
        due_unsent=_sum(parts, "due_unsent"),
        rate_miss=any(p.rate_miss for p in parts),
    )
