"""The link of issue 23 at small scale: two namespaces of the test's own, a delay element
between them, one real server behind it and a few hundred real requests across it.

Checked: the round trip measured with TCP handshakes is the one configured (1 ms, within 5%);
a real echo server in namespace B answers the load generator in namespace A, every request
paying that round trip; nothing is left behind (no namespace, no TUN device, no process), also
after a Ctrl-C; and where namespaces cannot be made, the scenario says so in one line.
Addresses are 198.18.0.1 and .2, inside the two namespaces only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import link
from bench.launch import ServerProcess
from records import schema

REPO = Path(__file__).resolve().parent.parent
RTT_US = 1000

needs_link = pytest.mark.skipif(link.unavailable() is not None, reason=str(link.unavailable()))


def _tun_devices() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def _ours_left() -> list[str]:
    """The suite's namespaces and TUN devices still on the machine."""
    left = [ns for ns in link.namespaces() if ns.startswith(link.PREFIX)]
    return left + [d for d in _tun_devices() if d.startswith(("ebla", "eblb"))]


@needs_link
def test_a_real_server_across_a_1_ms_link() -> None:
    assert _ours_left() == []
    with link.Link.up(RTT_US) as ln:
        assert ln.measured is not None
        rtt = ln.measured.median_us
        assert abs(rtt - RTT_US) <= 0.05 * RTT_US, (rtt, ln.base)
        with (
            ServerProcess.start("c-epoll", host=link.ADDR_B, wrap=ln.in_b) as server,
            tempfile.TemporaryDirectory() as tmp,
        ):
            out = Path(tmp) / "load.json"
            argv = [sys.executable, "-m", "loadgen", "--target", f"{link.ADDR_B}:{server.port}",
                    "--connections", "4", "--duration", "0.4", "--warmup", "0.1",
                    "--cluster-hosts", link.ADDR_B,  # a host the run names: the link's
                    "--output", str(out)]  # fmt: skip
            done = subprocess.run(
                ln.in_a(argv), capture_output=True, text=True, timeout=60, cwd=REPO, check=False
            )
            assert done.returncode == 0, done.stderr[-500:]
            result = schema.read_load(out)
        assert server.stop().clean_exit
    assert result.complete
    assert result.requests >= 300  # 4 connections, one round trip each per request
    assert sum(result.errors.values()) == 0
    p50 = result.histograms["latency"].summary.p50_us
    # every echo crossed the link and back: the element held it one way and its answer the other
    # (a bound that holds however the no-delay part of the path wanders on a busy host)
    assert p50 >= 2 * ln.one_way_us > 0
    assert ln.stats is not None
    assert ln.stats.packets_ab > 0
    assert ln.stats.dropped == 0
    assert _ours_left() == []


@needs_link
def test_a_round_trip_below_the_paths_own_is_reported_off_target() -> None:
    """Asked for less than the path costs with no delay at all (tens of us, where TUN and the
    element cost hundreds), calibration cannot reach it: the link keeps what it measured and says
    it is off target, rather than recording the asked figure."""
    with link.Link.up(RTT_US) as ln:
        assert ln.on_target
        measured = ln.tune(10)
        assert not ln.on_target
        assert ln.one_way_us == 0
        assert ln.record().measured_us == round(measured.median_us, 1) > 10
    assert _ours_left() == []


@needs_link
def test_ctrl_c_takes_the_link_down() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "bench.link", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # printed once the link is up and measured
        assert line.startswith("link: "), (line, holder.stderr.read() if holder.stderr else "")
        assert _ours_left() != []
        os.killpg(holder.pid, signal.SIGINT)
        out, _ = holder.communicate(timeout=30)
        assert holder.returncode == 0
        assert "link: down" in out
    finally:
        if holder.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
    assert _ours_left() == []


def test_the_skip_line_where_namespaces_are_not_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: the link cannot be made, and one line says why (the tests above skip with it)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    why = link.unavailable()
    assert why is not None
    assert why.startswith("link: needs root")
    assert "\n" not in why
    with pytest.raises(link.LinkError, match="needs root"), link.Link.up(RTT_US):
        pass  # never reached: refused before anything is set up


@needs_link
def test_the_runner_runs_a_link_cell_and_takes_the_link_down(tmp_path: Path) -> None:
    """A profile's link cell through `python -m bench run`: the server in namespace B, the load
    generator in A, the link recorded in the cell, and nothing left when the run ends."""
    profile = tmp_path / "tiny-link.toml"
    profile.write_text(
        'name = "tiny-link"\ntrials = 1\nduration_s = 0.4\nwarmup_s = 0.2\n'
        'servers = ["process"]\n[[scenarios]]\nname = "link"\nrtts_ms = [1]\n'
        'modes = ["per-request"]\nrates = [200]\nconnections = [20]\n'
    )
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "bench", "run", "--profile", str(profile), "--out", str(out),
            "--no-report"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run_dir,) = out.iterdir()
    (path,) = (run_dir / "cells").glob("*.json")
    cell = schema.read_cell(path)
    assert cell.status == "ok", cell.reason
    assert cell.params.rtt_us == RTT_US
    assert cell.link is not None
    assert abs(cell.link.measured_us - RTT_US) <= 0.05 * RTT_US
    assert cell.load is not None
    assert cell.load.requests >= 50  # a few hundred requests due at 200/s over 0.4 s, most served
    assert _ours_left() == []
