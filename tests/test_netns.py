"""A cluster run across two hosts, on this machine (issue 14): two network namespaces joined by
a veth pair stand for two machines.

Namespace A holds the Dask scheduler, a worker offering `server` and the runner; namespace B a
worker offering `client`. The addresses are a /30 the test picks for itself and that exists only
inside those namespaces, so no packet leaves them. A real `python -m bench run --cluster` runs a
tiny profile across them; the servers bind A's address, the load comes from B. Both namespaces
(and with them the veth pair) are removed afterwards, also when the test fails; every process
started here is in its own process group and ended by its id. Skipped with one line where
namespaces cannot be created (not root, no `ip`, or a container without the capability).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from records import schema

REPO = Path(__file__).resolve().parent.parent
PORT = 8786  # inside namespace A only: its network stack is new, nothing else listens there
READY_TIMEOUT_S = 60.0

pytest.importorskip("distributed")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class TwoHosts:
    tag: str
    a: str
    b: str
    addr_a: str
    addr_b: str
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        self.procs.append((popen, log))
        return popen

    def wait_log(self, log: Path, needle: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if needle in log.read_text(errors="replace"):
                return
            time.sleep(0.05)  # polling a readiness line, with a deadline
        pytest.fail(f"no {needle!r} in {log.name}: {log.read_text(errors='replace')[-2000:]}")

    def end(self) -> None:
        for popen, _ in reversed(self.procs):
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGTERM)
        for popen, _ in reversed(self.procs):
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=10)
        for ns in (self.a, self.b):
            # Anything still inside (a server a dying worker left behind) is ended by its pid.
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[TwoHosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")
    tag = f"eb{os.getpid() % 100000}"
    net = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}"
    hosts = TwoHosts(tag, f"{tag}a", f"{tag}b", f"{net}.1", f"{net}.2")
    try:
        ip("netns", "add", hosts.a)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode().strip()}")
    try:
        ip("netns", "add", hosts.b)
        ip("link", "add", f"{tag}x", "type", "veth", "peer", "name", f"{tag}y")
        ip("link", "set", f"{tag}x", "netns", hosts.a)
        ip("link", "set", f"{tag}y", "netns", hosts.b)
        for ns, dev, addr in (
            (hosts.a, f"{tag}x", hosts.addr_a),
            (hosts.b, f"{tag}y", hosts.addr_b),
        ):
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield hosts
    finally:
        hosts.end()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert hosts.a not in leftover.stdout
    assert hosts.b not in leftover.stdout


def test_a_run_across_two_hosts(two_hosts: TwoHosts, tmp_path: Path) -> None:
    h = two_hosts

    scheduler = f"tcp://{h.addr_a}:{PORT}"
    sched_log = tmp_path / "scheduler.log"
    h.start(
        h.a,
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            h.addr_a,
            "--port",
            str(PORT),
            "--no-dashboard",
        ],
        sched_log,
    )
    h.wait_log(sched_log, "Scheduler at:")
    for ns, addr, role in ((h.a, h.addr_a, "server"), (h.b, h.addr_b, "client")):
        log = tmp_path / f"{role}.log"
        h.start(
            ns,
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                scheduler,
                "--host",
                addr,
                "--resources",
                f"{role}=1",
                "--nthreads",
                "2",
                "--no-dashboard",
                "--name",
                role,
            ],
            log,
        )
        h.wait_log(log, "Registered to")
    profile = tmp_path / "two-hosts.toml"
    profile.write_text(
        'name = "two-hosts"\ndescription = "one cell per server across two namespaces"\n'
        "trials = 1\nduration_s = 0.5\nwarmup_s = 0.2\ntimeout_s = 5.0\n"
        'servers = ["thread", "process"]\n\n[[scenarios]]\nname = "concurrency"\n'
        "connections = [4]\n"
    )
    out = tmp_path / "results"
    log = tmp_path / "runner.log"
    runner = h.start(
        h.a,
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--profile",
            str(profile),
            "--out",
            str(out),
            "--cluster",
            scheduler,
            "--no-report",
            "--no-microbench",
        ],
        log,
    )
    code = runner.wait(timeout=180)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    (run_dir,) = out.iterdir()
    manifest = schema.read_manifest(run_dir / "manifest.json")
    assert manifest.cluster == scheduler
    roles = {h_.host: h_.roles for h_ in manifest.hosts}
    assert roles == {h.addr_a: ["server"], h.addr_b: ["client"]}
    cells = [schema.read_cell(p) for p in sorted((run_dir / "cells").glob("*.json"))]
    assert {c.server for c in cells} == {"thread", "process"}
    for cell in cells:
        assert cell.status == "ok", (cell.cell_id, cell.reason)
        assert cell.cluster is not None
        assert cell.load is not None
        assert cell.cluster.server_host == h.addr_a
        assert cell.load.config.host == h.addr_a
        assert [s.host for s in cell.cluster.shards] == [h.addr_b]
        assert cell.load.requests > 0
        assert cell.load.served == 4
