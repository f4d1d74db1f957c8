"""What the coordinator and its workers say to each other, typed (see worker.py for the phases).

The coordinator sends each worker one `WorkerInit` (the LoadConfig whole, as the user gave it
and `coordinator.validate` checked it, plus this worker's share of the connections); the worker
answers its last phase with one `WorkerReport`, whose fields carry the LoadResult's own names so
that merging is a sum per field (`coordinator.build_result`). Both cross the pipe as JSON through
the record layer's `to_dict`/`from_dict`, which checks every field's type on the way in: a worker
of another version fails loudly, never half-read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from records.schema import ClientCpu, LoadConfig, TimelineSecond


@dataclass(frozen=True, slots=True)
class WorkerInit:
    parent_pid: int
    config: LoadConfig
    uids: list[int]  # global indexes of this worker's connections (their source addresses)
    sources: list[str | None]
    idle_uids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One worker's share of a LoadResult (same field names), plus whether it was measured."""

    interrupted: bool
    measured: bool  # reached the measured phase: the counts below are its window's
    window_start_ns: int
    window_end_ns: int
    bytes_received_total: int  # warm-up included
    client_port_bound: bool
    client_cpu: ClientCpu | None = None  # `worker` is filled in by the coordinator
    timeline: list[TimelineSecond] = field(default_factory=list)
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    connections_opened: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_details: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, str] = field(default_factory=dict)  # name -> HdrHistogram encoding
    served: int = 0
    starved: int = 0
    unfinished: int = 0
    due_unsent: int = 0
    idle_opened: int = 0
    idle_alive_at_end: int = 0
    idle_errors: dict[str, int] = field(default_factory=dict)
