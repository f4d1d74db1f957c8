"""Every registered echo server, as a real process on 127.0.0.1, with real sockets (issue 2).

For each server in records.registry.SERVERS (plus inetd's Python handler, a smaller variant since
it starts an interpreter per connection):
* 50 concurrent clients echo random binary payloads of 1 B .. 1 MiB, byte-exact, then half-close
  and expect the server to close after the last byte;
* a client that resets mid-message disturbs neither the clients echoing at the same time nor the
  ones that come after;
* SIGTERM and SIGINT end the server with exit 0 within the launcher's 2 s, leaving no process of
  its group and no zombie, even with a client connected.
`test_every_registered_server_is_covered` fails if a registered server has no case here.

The client helpers below are imported by the other test_servers_*.py files.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import server_param

from records.registry import SERVERS

MIB = 1 << 20
CLIENT_TIMEOUT_S = 60.0  # a bound on a hung server, never a performance expectation

# (id, registered name, extra args): every registered server, plus inetd's Python handler.
VARIANTS: list[tuple[str, str, tuple[str, ...]]] = [(name, name, ()) for name in SERVERS]
VARIANTS.append(("inetd-python", "inetd", ("--handler", "python")))
VARIANT_IDS = [v[0] for v in VARIANTS]


def _variant_params() -> list[Any]:
    return [server_param(name, args, id=vid) for vid, name, args in VARIANTS]


# --- client helpers -----------------------------------------------------------------------------


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), MIB))
        if not chunk:
            raise EOFError(f"server closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _send_all(sock: socket.socket, payload: bytes, errors: list[BaseException]) -> None:
    try:
        sock.sendall(payload)
    except BaseException as exc:
        errors.append(exc)


def echo_one(sock: socket.socket, payload: bytes) -> None:
    """Send `payload` and read it back byte-exact. Big payloads are sent from a second thread:
    the server echoes while we send, and a client that sent 1 MiB before reading anything back
    would deadlock against a server whose send buffer is full."""
    if len(payload) <= 64 * 1024:  # fits in loopback socket buffers: no reader needed meanwhile
        sock.sendall(payload)
        got = recv_exact(sock, len(payload))
    else:
        errors: list[BaseException] = []
        sender = threading.Thread(target=_send_all, args=(sock, payload, errors))
        sender.start()
        try:
            got = recv_exact(sock, len(payload))
        except BaseException:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # unblock the sender before joining it
            raise
        finally:
            sender.join()
        if errors:
            raise errors[0]
    if got != payload:
        first = next(i for i, (a, b) in enumerate(zip(got, payload, strict=True)) if a != b)
        raise AssertionError(f"echo differs from payload of {len(payload)} B at byte {first}")


def echo_session(host: str, port: int, payloads: Sequence[bytes]) -> int:
    """One connection: echo every payload in turn, then half-close and expect the server to
    close too. Returns the bytes echoed."""
    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT_S) as sock:
        for payload in payloads:
            echo_one(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        tail = sock.recv(1)
        if tail != b"":
            raise AssertionError(f"expected EOF after half-close, got {tail!r}")
    return sum(map(len, payloads))


def log_uniform_sizes(rng: random.Random, count: int, lo: int = 1, hi: int = MIB) -> list[int]:
    """Sizes spread evenly over orders of magnitude: many small messages, a few big ones."""
    return [int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))) for _ in range(count)]


def run_clients(count: int, session: Callable[[int], int]) -> list[int]:
    """Run `session(i)` for i in range(count) concurrently, one thread each; re-raise the first
    failure."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(session, i) for i in range(count)]
        return [f.result(timeout=CLIENT_TIMEOUT_S * 2) for f in futures]


def reset_mid_message(host: str, port: int) -> None:
    """Start a 1 MiB message, read part of its echo, then close with RST (SO_LINGER 0)."""
    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(b"r" * 100_000)  # of a 1 MiB message: small enough not to block unread
        recv_exact(sock, 10_000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- tests --------------------------------------------------------------------------------------


def test_every_registered_server_names_code_that_exists() -> None:
    """issue 22: the registry names a module with run(cfg) (Python) or a program the servers'
    Makefile builds (C). An entry whose code is missing fails here by name, before the echo
    tests try to start it (the old test compared the registry with a list built from it)."""
    makefile = (Path(__file__).resolve().parents[1] / "servers" / "c" / "Makefile").read_text()
    for name, spec in SERVERS.items():
        if spec.native:
            assert f"bin/{spec.native}:" in makefile, f"{name}: no Makefile rule for {spec.native}"
        else:
            assert callable(getattr(spec.import_module(), "run", None)), f"{name}: no run()"
    assert len(set(VARIANT_IDS)) == len(VARIANT_IDS)


@pytest.mark.parametrize(("name", "args"), _variant_params())
def test_concurrent_clients_echo_byte_exact(start_server: Any, name: str, args: tuple[str]) -> None:
    clients, per_client = (50, 3) if "python" not in args else (10, 2)
    rng = random.Random(f"echo-{name}-{args}")
    plans = [[rng.randbytes(n) for n in log_uniform_sizes(rng, per_client)] for _ in range(clients)]
    plans[0] += [b"\x00", rng.randbytes(MIB)]  # both ends of the range, always
    plans[1].insert(0, rng.randbytes(MIB))
    server = start_server(name, *args)

    echoed = run_clients(clients, lambda i: echo_session(server.host, server.port, plans[i]))

    assert echoed == [sum(map(len, p)) for p in plans]
    report = server.stop()
    assert report.clean_exit, report


@pytest.mark.parametrize(("name", "args"), _variant_params())
def test_client_reset_mid_message_disturbs_nobody(
    start_server: Any, name: str, args: tuple[str]
) -> None:
    server = (
        start_server(name, *args, "--workers", "8")
        if name in ("prefork", "threadpool")
        else (start_server(name, *args))
    )
    rng = random.Random(f"reset-{name}")
    plans = [[rng.randbytes(n) for n in (300_000, 1, 200_000, 70_000)] for _ in range(4)]
    started = threading.Barrier(len(plans) + 1, timeout=CLIENT_TIMEOUT_S)

    def good(i: int) -> int:
        with socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S) as s:
            echo_one(s, plans[i][0])
            started.wait()  # the reset happens while these connections are mid-conversation
            for payload in plans[i][1:]:
                echo_one(s, payload)
        return 1

    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        futures = [pool.submit(good, i) for i in range(len(plans))]
        started.wait()
        reset_mid_message(server.host, server.port)
        assert [f.result(timeout=CLIENT_TIMEOUT_S) for f in futures] == [1] * len(plans)

    # and the server still serves newcomers
    assert echo_session(server.host, server.port, [b"after the reset"]) == 15
    report = server.stop()
    assert report.clean_exit, report


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(("name", "args"), _variant_params())
def test_stop_signal_leaves_nothing(
    start_server: Any, name: str, args: tuple[str], sig: signal.Signals
) -> None:
    server = start_server(name, *args)
    # A client still connected (and known to be served) when the signal comes: its child or
    # thread must be ended too.
    with socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S) as idle:
        echo_one(idle, b"still here")
        report = server.stop(sig=sig)
        # the server ended the connection: EOF (or a reset), never a hang
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(1) == b""
    assert report.exit_code == 0, report
    assert report.leftovers == [], report
    assert report.clean_exit, report
    assert report.stdout_lines == [], "nothing on stdout but READY (and STATS with a counter)"


@pytest.mark.parametrize(
    "name", [server_param(n) for n, s in SERVERS.items() if s.model.value == "event"]
)
def test_event_servers_apply_flow_control(start_server: Any, name: str) -> None:
    """A client that sends without ever reading must be stopped by the server (pause_reading /
    not reading while a chunk is pending), not buffered without bound in the server's memory."""
    server = start_server(name)
    limit, chunk = 64 * MIB, b"f" * MIB
    sent = 0
    with socket.create_connection((server.host, server.port), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.settimeout(2.0)  # a send blocked this long means the server stopped reading
        with contextlib.suppress(TimeoutError):
            while sent < limit:
                sent += sock.send(chunk)
    # Socket buffers and one high-water mark hold a few MiB; without flow control all 64 MiB
    # would be read into the server.
    assert sent < limit // 2, f"the server accepted {sent} bytes from a client that never reads"
    report = server.stop()
    assert report.clean_exit, report
