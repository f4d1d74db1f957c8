"""Cluster cells on a real Dask LocalCluster (issue 14): real workers, real servers, real load.

Three worker processes on this machine, each offering both roles: the runner's Cluster takes the
first for the server and the other two for two load shards. What is checked is what a cluster
run must never get wrong: the shards' histograms merge exactly (the merged count is the sum of
theirs and equals the requests), and a worker killed mid-cell gives a failed cell within
seconds, never a hang, with its load generator gone too (it dies with its worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.cell import CpuPlan
from bench.cluster import Cluster, ClusterCellRun, split_counts
from bench.profile import CellSpec, load_config
from records import hist, schema
from records.schema import CellParams

REPO = Path(__file__).resolve().parent.parent
distributed = pytest.importorskip("distributed")


def spec(connections: int, duration_s: float, server: str = "thread") -> CellSpec:
    params = CellParams(
        mode="persistent",
        load="closed",
        connections=connections,
        size=64,
        duration_s=duration_s,
        warmup_s=0.2,
    )
    return CellSpec(
        cell_id=f"cluster_{server}_c{connections}",
        point_key=f"cluster_{server}_c{connections}",
        scenario="cluster",
        server=server,
        server_args=(),
        params=params,
        placement="split",
        trial=1,
        load=load_config(params, 5.0),
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    local = distributed.LocalCluster(
        n_workers=3,
        threads_per_worker=2,
        processes=True,
        dashboard_address=":0",
        resources={"server": 1, "client": 1},
    )
    try:
        c = Cluster.connect(local.scheduler_address)
        try:
            yield c
        finally:
            c.close()
    finally:
        local.close()


def plan() -> CpuPlan:
    cpus = sorted(os.sched_getaffinity(0))
    return CpuPlan((cpus[0],), tuple(cpus[1:]) or (cpus[0],))


def test_split_counts_cover_the_total() -> None:
    assert split_counts(5, 2) == [3, 2]
    assert split_counts(1, 3) == [1, 0, 0]
    assert sum(split_counts(1001, 7)) == 1001


def test_two_shards_merge_exactly(cluster: Cluster) -> None:
    assert len(cluster.clients) == 2
    cell = ClusterCellRun(spec(4, 0.5), cluster, plan(), 1).run()
    assert cell.status == "ok", (cell.reason, cell.notes)
    assert cell.cluster is not None
    assert len(cell.cluster.shards) == 2
    assert {s.worker for s in cell.cluster.shards} == {w.address for w in cluster.clients}
    assert cell.cluster.server_worker == cluster.server.address
    load = cell.load
    assert load is not None
    assert load.config.connections == 4
    merged = hist.decode_histogram(load.histograms["latency"].encoded).get_total_count()
    shards = [s.requests for s in cell.cluster.shards]
    assert all(n > 0 for n in shards)
    assert merged == sum(shards) == load.requests
    assert load.served == 4
    assert load.starved == 0
    # the server's CPU was accounted over the window the first shard published
    assert cell.cpu is not None
    assert 0.3 < cell.cpu.window_s < 0.8
    assert cell.cluster.start_skew_s is not None
    assert cell.cluster.start_skew_s < 0.5


def _loadgens_of(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "loadgen" in " ".join(k.cmdline())]


def test_a_worker_killed_mid_cell_fails_the_cell_not_the_run(cluster: Cluster) -> None:
    victim = cluster.clients[1].address
    pid = int(cluster.client.run(os.getpid)[victim])
    found: list[psutil.Process] = []
    result: list[schema.CellResult] = []
    cell = ClusterCellRun(spec(4, 8.0), cluster, plan(), 1)
    t = threading.Thread(target=lambda: result.append(cell.run()))
    t0 = time.monotonic()
    t.start()
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline and t.is_alive():
        found = _loadgens_of(pid)  # the shard's load generator has started: kill its worker
        time.sleep(0.05)  # polling for an event, with a deadline
    assert found, "the shard never started its load generator"
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=60)
    assert not t.is_alive(), "the cell hung after its worker was killed"
    assert time.monotonic() - t0 < 8.0 + 20, "the cell did not end soon after the kill"
    (got,) = result
    assert got.status == "failed"
    assert got.reason is not None
    assert "left the cluster" in got.reason
    _, gone = psutil.wait_procs(found, timeout=10)
    assert not gone, f"the killed worker's load generator outlived it: {gone}"
    # the cluster itself is fine: the next cell runs (the nanny restarted the worker)
    again = Cluster.connect(cluster.address)
    try:
        ok = ClusterCellRun(spec(2, 0.3), again, plan(), 1).run()
        assert ok.status == "ok", ok.reason
    finally:
        again.close()


def test_bad_cluster_address_is_one_line_exit_2(tmp_path: Path) -> None:
    for arg, needle in (
        ("nonsense", "expected tcp://HOST:PORT"),
        ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler"),
    ):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                "--profile",
                "quick",
                "--out",
                str(tmp_path),
                "--cluster",
                arg,
            ],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2, p.stderr
        assert len(lines) == 1, p.stderr
        assert needle in lines[0], p.stderr
    assert not any(tmp_path.iterdir()), "a refused run must not leave a run directory"


def test_a_cluster_without_a_role_is_refused() -> None:
    local = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
        resources={"client": 1},
    )
    try:
        from bench.cluster_tasks import ClusterError  # noqa: PLC0415

        with pytest.raises(ClusterError, match="no worker offering server"):
            Cluster.connect(local.scheduler_address)
    finally:
        local.close()
