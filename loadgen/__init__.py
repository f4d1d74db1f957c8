"""echobench's load generator (issue 3): asyncio Protocols on uvloop, one process per worker.

`run(config)` is the one entry point for code; `python -m loadgen` is the one for people.
This module stays light on purpose: the analysis imports `records.schema` and must not pay for
uvloop, numpy or HdrHistogram, so everything heavy is imported inside `run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from records.schema import LoadConfig, LoadResult

__all__ = ["run"]


def run(config: LoadConfig) -> LoadResult:
    """Run one load against `config.host:config.port` and return what it measured.

    Raises `loadgen.coordinator.UsageError` for a configuration that cannot run and
    `loadgen.coordinator.RunFailure` when the target cannot be reached at all.
    """
    from loadgen import coordinator  # noqa: PLC0415 - heavy imports only when a run starts

    return coordinator.run(config)
