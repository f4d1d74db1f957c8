"""The record layer (issue 10/11): one versioned schema, read through one loader.

A version 1 file (the committed reference run, made before version 2 existed) still loads and
renders through the version 2 loader, upgraded on the way in; a file from a future version is
refused with the version message, never half-read; every recorded cell of a version 2 run
accounts no more server CPU than the CPUs its server was pinned to.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.results import read_run
from records import schema

DATA = Path(__file__).parent / "data"
V1_RUN = DATA / "analysis-run"
V2_RUN = DATA / "v2-run"


def test_a_version_1_cell_is_upgraded_on_load() -> None:
    path = next((V1_RUN / "cells").glob("*.json"))
    assert json.loads(path.read_text())["schema_version"] == 1
    cell = schema.read_cell(path)
    assert cell.schema_version == schema.SCHEMA_VERSION == 6
    assert cell.load is not None
    assert cell.load.schema_version == 6
    # what versions 2 and 3 added reads as "not measured", never as a made-up figure
    assert cell.cpu is None
    assert cell.git is None
    assert cell.load.fill is None
    assert cell.xray is None
    assert cell.link is None  # version 6: no link, loopback


def test_a_future_version_is_refused_with_the_version_message(tmp_path: Path) -> None:
    data = json.loads(next((V2_RUN / "cells").glob("*.json")).read_text())
    data["schema_version"] = schema.SCHEMA_VERSION + 1
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(schema.SchemaError, match=r"schema_version 7 is not one this echobench"):
        schema.read_cell(path)


def test_the_version_1_run_still_renders_its_cpu_within_its_cpus() -> None:
    run = read_run(V1_RUN)
    assert not run.unreadable
    d = run.df[run.df["server_cpu_util"].notna()]
    assert len(d) > 0
    assert set(d["cpu_source"]) <= {"v1-rate", "v1-rate-capped"}
    assert (d["server_cpu_util"] <= 1.0 + 1e-9).all()  # every v1 server was pinned to 1 CPU


def test_no_recorded_cell_reports_more_server_cpu_than_it_was_given() -> None:
    run = read_run(V2_RUN)
    assert not run.unreadable
    assert len(run.cells) > 0
    for cell in run.cells.values():
        if cell.status != "ok":
            continue
        assert cell.cpu is not None, cell.cell_id
        assert cell.cpu.server_cpus >= 1
        assert cell.cpu.server_cpu_s <= cell.cpu.window_s * cell.cpu.server_cpus + 1e-9
        assert cell.git is not None
        assert cell.git.commit
    d = run.df
    assert (d["server_cpu_util"].dropna() <= d["server_cpus"].dropna() + 1e-9).all()
    for col in ("asked", "served", "starved", "fill_s"):
        assert col in d.columns


def _imports(package: str, but: str = "") -> set[str]:
    """Every echobench module a package's files import, lazily or not (read from the source)."""
    import ast  # noqa: PLC0415 - only this test reads source

    ours = {"records", "servers", "loadgen", "bench", "microbench", "analysis"}
    found: set[str] = set()
    for path in (Path(__file__).parents[1] / package).rglob("*.py"):
        if path.name == but:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            found |= {n for n in names if n.split(".")[0] in ours - {package}}
    return found


def test_the_import_graph_has_the_record_layer_at_the_bottom() -> None:
    # records <- servers, loadgen, microbench <- bench (the suite and its harnesses: launch,
    # selfbench, twins);  records <- analysis (the registry is on the record layer). No module
    # is exempt (issue 22).
    tops = {
        p: {m.split(".")[0] for m in _imports(p)}
        for p in ("records", "servers", "loadgen", "microbench", "bench", "analysis")
    }
    assert tops["records"] == set()
    assert tops["servers"] <= {"records"}
    assert tops["loadgen"] <= {"records"}
    assert tops["microbench"] <= {"records"}
    assert tops["bench"] <= {"records", "servers", "loadgen"}
    assert _imports("analysis") <= {
        "records",
        "records.schema",
        "records.micro",
        "records.xray",
        "records.usage",
        "records.hist",
        "records.rerun",
        "records.registry",
    }
