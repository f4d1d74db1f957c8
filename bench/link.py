"""A link with a round trip (issue 23): two network namespaces of the suite's own, joined through
a delay element that holds every real packet for a configured time.

    [ns A: 198.18.0.1] tun A == linkdelay (this namespace) == tun B [ns B: 198.18.0.2]

Every cell on loopback answers in tens of microseconds; real clients sit milliseconds away, and
then a server that answers R requests/s holds R x RTT connections open at once (Little's law).
This module makes that distance real: bench/native/linkdelay.c moves each IP packet from one
TUN device to the other after holding it, so TCP on both sides sees the round trip (its
handshake, its window, its timers), which a proxy that delays bytes between two TCP
connections would hide. The addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range)
and exist only inside the two namespaces: no packet leaves them.

`Link.up(rtt_us)` measures what the path costs with no delay (the two TUN hops and the
element's own wake-ups), then asks the element for the rest, so the round trip measured with
TCP handshakes (`probe`) is the one configured. The element runs in its own process group,
pinned where the caller says (the load generator's CPUs, never the server's), and reports the
packets it moved and its own CPU when it stops.

Nothing is left behind: the context manager removes both namespaces and ends the element by its
id (its TUN devices vanish with it) on success, failure or Ctrl-C; `sweep()` removes what a
killed run left (namespaces named with PREFIX). Where the machine cannot do this (not root, no
`ip`, no /dev/net/tun, the element not built), `unavailable()` says why in one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from records import schema
from records.usage import OneLineParser

ELEMENT = Path(__file__).with_name("native") / "bin" / "linkdelay"
PREFIX = "echobench-link-"
ADDR_A, ADDR_B = "198.18.0.1", "198.18.0.2"
READY_TIMEOUT_S = 10.0
PROBE_PORT = 9  # the probe's own listener inside namespace B (a fresh stack: nothing else there)
# The delay is corrected until the probe's median is within this share of the asked round trip
# (at most CALIBRATION_ROUNDS times: 40 handshakes each, 0.05 s at 1 ms, 2 s at 50 ms). The probe
# that lands inside is the one recorded: a separate probe after calibration would measure the
# path's own drift (on a noisy host the no-delay path wanders by ~60 us of its ~250) and could
# land outside what the calibration had just reached.
CALIBRATED = 0.02
CALIBRATION_ROUNDS = 8

# A TCP connect() returns after SYN -> SYN-ACK: one round trip. The probe runs inside namespace A
# and prints one connect time per line, in microseconds.
_PROBE = """
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    t = time.perf_counter_ns()
    s = socket.create_connection((host, port), timeout=5)
    print((time.perf_counter_ns() - t) / 1000, flush=True)
    s.close()
    time.sleep(0.002)
"""
_LISTEN = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)
print("READY", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


class LinkError(RuntimeError):
    """The link could not be set up (the message is one line)."""


def unavailable() -> str | None:
    """None when this machine can make the link; else why not, in one line."""
    if os.geteuid() != 0:
        return "link: needs root (network namespaces and TUN devices); skipped"
    if shutil.which("ip") is None:
        return "link: no `ip` (iproute2); skipped"
    if not os.path.exists("/dev/net/tun"):
        return "link: no /dev/net/tun on this machine; skipped"
    if not ELEMENT.exists():
        return f"link: {ELEMENT} is not built (run `make native`); skipped"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise LinkError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def sweep() -> list[str]:
    """Remove every namespace of the suite's links a killed run left; returns their names."""
    gone = [ns for ns in namespaces() if ns.startswith(PREFIX)]
    for ns in gone:
        with contextlib.suppress(LinkError):
            _ip("netns", "del", ns)
    return gone


@dataclass(frozen=True, slots=True)
class Rtt:
    """Round trips measured with TCP handshakes across the link, in microseconds."""

    samples: list[float]

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)

    @property
    def jitter_us(self) -> float:
        """p90 - p10: how much the round trip wanders."""
        q = statistics.quantiles(self.samples, n=10)
        return q[-1] - q[0]


@dataclass(frozen=True, slots=True)
class ElementStats:
    packets_ab: int
    packets_ba: int
    dropped: int
    cpu_us: int

    @property
    def cpu_us_per_packet(self) -> float:
        return self.cpu_us / max(1, self.packets_ab + self.packets_ba)


class Link:
    """Two namespaces and the delay element between them; use `Link.up(...)`."""

    def __init__(self, rtt_us: int, cpus: tuple[int, ...] | None = None) -> None:
        self.rtt_us = rtt_us
        self.cpus = cpus
        tag = f"{os.getpid()}"
        self.ns_a, self.ns_b = f"{PREFIX}{tag}-a", f"{PREFIX}{tag}-b"
        self.tun_a, self.tun_b = f"ebla{tag}"[:15], f"eblb{tag}"[:15]
        self.base: Rtt | None = None  # the path with no delay
        self.one_way_us = 0  # what the element holds each packet for, once calibrated
        self.measured: Rtt | None = None  # with the delay: what the cells see
        self.stats: ElementStats | None = None
        self._element: subprocess.Popen[str] | None = None
        self._listener: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def up(cls, rtt_us: int, cpus: tuple[int, ...] | None = None) -> Iterator[Link]:
        why = unavailable()
        if why is not None:
            raise LinkError(why)
        link = cls(rtt_us, cpus)
        try:
            link._start()
            yield link
        finally:
            link._stop()

    def in_a(self, argv: list[str]) -> list[str]:
        """`argv` run inside namespace A (the clients' side)."""
        return ["ip", "netns", "exec", self.ns_a, *argv]

    def in_b(self, argv: list[str]) -> list[str]:
        """`argv` run inside namespace B (the server's side)."""
        return ["ip", "netns", "exec", self.ns_b, *argv]

    def probe(self, n: int = 40, port: int = PROBE_PORT) -> Rtt:
        """`n` TCP handshakes from A to B:port, one at a time."""
        argv = self.in_a([sys.executable, "-c", _PROBE, ADDR_B, str(port), str(n)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60 + n, check=False)
        if done.returncode != 0:
            raise LinkError(f"link probe failed: {done.stderr.strip()[-300:]}")
        return Rtt([float(x) for x in done.stdout.split()])

    # ------------------------------------------------------------------ setup and teardown

    def _start(self) -> None:
        _ip("netns", "add", self.ns_a)
        _ip("netns", "add", self.ns_b)
        self._element = subprocess.Popen(
            [str(ELEMENT), self.tun_a, self.tun_b, "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        if self.cpus:
            os.sched_setaffinity(self._element.pid, self.cpus)
        assert self._element.stdout is not None
        if self._element.stdout.readline().strip() != "READY":
            err = self._element.stderr.read() if self._element.stderr else ""
            raise LinkError(f"linkdelay did not start: {err[-300:]}")
        for tun, ns, mine, peer in (
            (self.tun_a, self.ns_a, ADDR_A, ADDR_B),
            (self.tun_b, self.ns_b, ADDR_B, ADDR_A),
        ):
            _ip("link", "set", tun, "netns", ns)
            _ip("-n", ns, "addr", "add", mine, "peer", peer, "dev", tun)
            _ip("-n", ns, "link", "set", tun, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self._listener = subprocess.Popen(
            self.in_b([sys.executable, "-c", _LISTEN, ADDR_B, str(PROBE_PORT)]),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._listener.stdout is not None
        if self._listener.stdout.readline().strip() != b"READY":
            raise LinkError("the link's probe listener did not start")
        self.tune(self.rtt_us)

    def tune(self, rtt_us: int) -> Rtt:
        """Make the link's round trip `rtt_us` and measure it (the runner retunes one link for
        each round trip of its cells). What the path costs with no delay is measured first;
        the element holds each packet for the rest, corrected until the probe agrees. If it never
        agrees, the last probe is kept and `on_target` says so (the cells note it)."""
        self.rtt_us = rtt_us
        self._set_delay(0)
        self.base = self.probe(20)
        one_way = max(0, round((rtt_us - self.base.median_us) / 2))
        for _ in range(CALIBRATION_ROUNDS):
            self._set_delay(one_way)
            self.one_way_us = one_way
            self.measured = self.probe(40)
            off = self.measured.median_us - rtt_us
            if self.on_target:
                break
            one_way = max(0, round(one_way - off / 2))
        assert self.measured is not None
        return self.measured

    @property
    def on_target(self) -> bool:
        """The measured round trip is within CALIBRATED of the asked one."""
        if self.measured is None:
            return False
        return abs(self.measured.median_us - self.rtt_us) <= CALIBRATED * max(self.rtt_us, 1)

    def record(self) -> schema.LinkRun:
        """What a cell stores about the link it ran across (records.schema.LinkRun)."""
        assert self.measured is not None
        return schema.LinkRun(
            self.rtt_us, round(self.measured.median_us, 1), round(self.measured.jitter_us, 1),
            self.one_way_us,
        )  # fmt: skip

    def _set_delay(self, one_way_us: int) -> None:
        """The element's one-way delay from now on; returns once it has acknowledged it."""
        el = self._element
        assert el is not None
        assert el.stdin is not None
        assert el.stdout is not None
        el.stdin.write(f"delay {one_way_us}\n")
        el.stdin.flush()
        if el.stdout.readline().strip() != f"DELAY {one_way_us}":
            raise LinkError("linkdelay did not take its delay")

    def _stop(self) -> None:
        for popen in (self._listener, self._element):
            if popen is None or popen.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                out, _ = popen.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                out, _ = popen.communicate(timeout=5)
            if popen is self._element and isinstance(out, str):
                self.stats = _parse_stats(out)
        for ns in (self.ns_a, self.ns_b):
            with contextlib.suppress(LinkError):
                _ip("netns", "del", ns)


def _parse_stats(out: str) -> ElementStats | None:
    m = re.search(r"packets_ab=(\d+) packets_ba=(\d+) dropped=(\d+) cpu_us=(\d+)", out)
    return ElementStats(*(int(x) for x in m.groups())) if m else None


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.link RTT_MS`: bring a link up, print what it measured, hold it until
    Ctrl-C or SIGTERM (or `--seconds`), then take it down."""
    p = OneLineParser(prog="python -m bench.link", description=main.__doc__)
    p.add_argument("rtt_ms", type=float, help="the round trip to configure, ms")
    p.add_argument("--seconds", type=float, default=0.0, help="hold this long (0: until a stop)")
    args = p.parse_args(argv)
    if not 0 <= args.rtt_ms <= 10_000:
        p.error(f"RTT {args.rtt_ms} ms outside 0..10000")
    stop = {"now": False}

    def on_stop(_sig: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    try:
        with Link.up(round(args.rtt_ms * 1000)) as link:
            assert link.base is not None
            assert link.measured is not None
            print(
                f"link: {link.ns_a} -> {link.ns_b}: asked {args.rtt_ms:g} ms, path alone "
                f"{link.base.median_us:,.0f} us, held {link.one_way_us:,} us each way, "
                f"measured {link.measured.median_us:,.0f} us "
                f"(jitter p90-p10 {link.measured.jitter_us:,.0f} us)",
                flush=True,
            )
            end = time.monotonic() + args.seconds
            while not stop["now"] and (args.seconds <= 0 or time.monotonic() < end):
                time.sleep(0.2)  # holding the link; a stop signal ends the wait early
        if link.stats is not None:
            s = link.stats
            print(f"link: down; {s.packets_ab + s.packets_ba} packets, {s.dropped} dropped, "
                  f"{s.cpu_us_per_packet:.1f} us of the element's CPU per packet")  # fmt: skip
    except LinkError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
