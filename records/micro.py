"""The one reader of microbenchmark results: `read_microbench(run_dir) -> list[MicroResult]`.

A run directory holds two files written by `python -m microbench run`:

* `microbench.json`: pytest-benchmark's own JSON. Times there are seconds *per operation*
  (each round timed `batch` operations and pytest-benchmark divided by it); the echobench
  labels (stable name, group, placement, CPUs) are in each benchmark's `extra_info`.
* `microbench_c.json`: the C floor, a small document of this package's own (`C_FORMAT`),
  with per-operation figures in microseconds. It may list no results (no C compiler).

Both become `MicroResult`s in microseconds, so the analysis can put a Python figure beside the
C figure of the same `op` and placement. A file that cannot be read or does not look like what
the runner writes raises `MicrobenchError` naming the file and what is wrong: never a guess.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from records.schema import MicroPlacement, SchemaError

PY_FILE = "microbench.json"
C_FILE = "microbench_c.json"
C_FORMAT = "echobench-microbench-c"
# History of the C file's format_version (the Python file is pytest-benchmark's own JSON, whose
# extra_info follows the same words):
# * 1 -- 2026-12: first version; placements "same-cpu" / "cross-cpu" / "n/a".
# * 2 -- 2026-12: placements take the suite's one vocabulary, "shared" / "split" / "n/a"
#   (records.schema.Placement), in `placement` and in the name's "[...]". Files of version 1, and
#   Python files in the old words, are read with their words translated (`_upgrade`).
C_FORMAT_VERSION = 2
C_FORMATS_READ = frozenset({1, 2})

Group = Literal["process-control", "ipc", "shared-counter"]
Language = Literal["python", "c"]


class MicrobenchError(SchemaError):
    """A microbenchmark result file that is missing, unreadable or not in the expected shape."""


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str  # unique per language: op, plus "[placement]" when there are two ends
    op: str  # the operation, shared by Python and C figures (e.g. "rtt.pipe")
    group: Group
    language: Language
    placement: MicroPlacement
    median_us: float  # per operation
    min_us: float
    max_us: float
    stddev_us: float
    mean_us: float
    rounds: int  # timed rounds, each `batch` operations
    batch: int
    cpus: tuple[int, ...]  # the CPUs the measured ends were pinned to
    what: str  # one line: exactly what was timed


def read_microbench(run_dir: str | os.PathLike[str]) -> list[MicroResult]:
    """All microbenchmark figures of a run: Python ones, then the C floor (if the file exists)."""
    run = Path(run_dir)
    py_path = run / PY_FILE
    if not py_path.exists():
        raise MicrobenchError(f"{py_path}: no microbenchmark results (run `python -m microbench`)")
    results = _python_results(py_path, _read_json(py_path))
    c_path = run / C_FILE
    if c_path.exists():
        results += _c_results(c_path, _read_json(c_path))
    return results


def _read_json(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MicrobenchError(f"{path}: cannot read microbenchmark results: {exc}") from exc
    if not isinstance(data, Mapping):
        raise MicrobenchError(f"{path}: expected a JSON object at the top level")
    return data


# --------------------------------------------------------------------------- field checks


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise MicrobenchError(f"{where}: missing {key!r}")
    value = obj[key]
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise MicrobenchError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _choice(obj: Mapping[str, Any], key: str, literal: Any, where: str) -> Any:
    value = _get(obj, key, str, where)
    if value not in get_args(literal):
        raise MicrobenchError(f"{where}.{key}: {value!r} is not one of {get_args(literal)}")
    return value


def _cpus(obj: Mapping[str, Any], where: str) -> tuple[int, ...]:
    cpus = _get(obj, "cpus", list, where)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
        raise MicrobenchError(f"{where}.cpus: expected a list of CPU numbers, got {cpus!r}")
    return tuple(cpus)


def _positive(value: float, what: str, where: str) -> float:
    if not value > 0:
        raise MicrobenchError(f"{where}: {what} must be positive, got {value!r}")
    return float(value)


# ------------------------------------------------------------------- Python (pytest-benchmark)


def _python_results(path: Path, doc: Mapping[str, Any]) -> list[MicroResult]:
    benchmarks = _get(doc, "benchmarks", list, str(path))
    results: list[MicroResult] = []
    for i, bench in enumerate(benchmarks):
        where = f"{path}: benchmarks[{i}]"
        if not isinstance(bench, Mapping):
            raise MicrobenchError(f"{where}: expected an object")
        info = _get(bench, "extra_info", dict, where)
        stats = _get(bench, "stats", dict, where)
        where_info, where_stats = f"{where}.extra_info", f"{where}.stats"
        if info.get("language") != "python":
            raise MicrobenchError(f"{where_info}: not an echobench microbenchmark (no language)")
        us = {k: float(_get(stats, k, float, where_stats)) * 1e6 for k in _STAT_KEYS}
        name, placement = _upgrade(info, where_info)
        results.append(
            MicroResult(
                name=name,
                op=_get(info, "op", str, where_info),
                group=_choice(info, "group", Group, where_info),
                language="python",
                placement=placement,
                median_us=_positive(us["median"], "median", where_stats),
                min_us=_positive(us["min"], "min", where_stats),
                max_us=_positive(us["max"], "max", where_stats),
                stddev_us=us["stddev"],
                mean_us=_positive(us["mean"], "mean", where_stats),
                rounds=_get(stats, "rounds", int, where_stats),
                batch=_get(info, "batch", int, where_info),
                cpus=_cpus(info, where_info),
                what=_get(info, "what", str, where_info),
            )
        )
    _check_unique(path, results)
    return results


_STAT_KEYS = ("median", "min", "max", "mean", "stddev")


# --------------------------------------------------------------------------- C floor


def _c_results(path: Path, doc: Mapping[str, Any]) -> list[MicroResult]:
    where = str(path)
    if doc.get("format") != C_FORMAT:
        raise MicrobenchError(
            f"{where}: not a C microbenchmark file (format {doc.get('format')!r})"
        )
    version = doc.get("format_version")
    if version not in C_FORMATS_READ:
        raise MicrobenchError(
            f"{where}: format_version {version!r} is not one this echobench reads "
            f"(knows {sorted(C_FORMATS_READ)})"
        )
    results: list[MicroResult] = []
    for i, item in enumerate(_get(doc, "results", list, where)):
        at = f"{where}: results[{i}]"
        if not isinstance(item, Mapping):
            raise MicrobenchError(f"{at}: expected an object")
        samples = [float(s) for s in _get(item, "samples_us", list, at)]
        if not samples or any(not s > 0 for s in samples):
            raise MicrobenchError(f"{at}.samples_us: expected positive per-operation figures")
        name, placement = _upgrade(item, at)
        results.append(
            MicroResult(
                name=name,
                op=_get(item, "op", str, at),
                group=_choice(item, "group", Group, at),
                language="c",
                placement=placement,
                median_us=_positive(_get(item, "median_us", float, at), "median_us", at),
                min_us=_positive(_get(item, "min_us", float, at), "min_us", at),
                max_us=_positive(_get(item, "max_us", float, at), "max_us", at),
                stddev_us=statistics.stdev(samples) if len(samples) > 1 else 0.0,
                mean_us=statistics.fmean(samples),
                rounds=len(samples),
                batch=_get(item, "batch", int, at),
                cpus=_cpus(item, at),
                what=_get(item, "what", str, at),
            )
        )
    _check_unique(path, results)
    return results


# The first version's placement words, and the suite's words for the same placements.
_OLD_WORDS: dict[str, MicroPlacement] = {"same-cpu": "shared", "cross-cpu": "split"}


def _upgrade(obj: Mapping[str, Any], where: str) -> tuple[str, MicroPlacement]:
    """A result's name and placement in the suite's placement words, whichever words it was
    written in: 'rtt.pipe[cross-cpu]' is read as 'rtt.pipe[split]'."""
    name = _get(obj, "name", str, where)
    raw = _get(obj, "placement", str, where)
    new = _OLD_WORDS.get(raw)
    if new is None:
        return name, _choice(obj, "placement", MicroPlacement, where)
    return name.replace(f"[{raw}]", f"[{new}]"), new


def _check_unique(path: Path, results: list[MicroResult]) -> None:
    seen: set[str] = set()
    for r in results:
        if r.name in seen:
            raise MicrobenchError(f"{path}: result {r.name!r} appears twice")
        seen.add(r.name)


def c_document(results: list[dict[str, Any]], notes: list[str], **meta: Any) -> dict[str, Any]:
    """The C file's document, as the runner writes it (the format `_c_results` reads)."""
    return cast(
        dict[str, Any],
        {
            "format": C_FORMAT,
            "format_version": C_FORMAT_VERSION,
            **meta,
            "results": results,
            "notes": notes,
        },
    )
