"""A blocking-socket, process-per-connection echo client: the vmbench-style comparison.

`python -m loadgen.blocking HOST PORT SIZE SECONDS` runs one connection in one process with
blocking send/recv, verifies each echo, and prints `requests=N errors=E`. selfbench starts one
such process per connection (pinned like the load generator) to show what an async client buys:
the issue's goal is at least 2x these requests/s. Bounded: fixed duration, loopback only.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def cmd_client(args: argparse.Namespace) -> int:
    size = args.size
    body = bytes(range(256)) * (size // 256 + 1)
    requests = errors = 0
    with socket.create_connection((args.host, args.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(size)
        view = memoryview(buf)
        end = time.monotonic_ns() + int(args.seconds * 1e9)
        seq = 0
        while time.monotonic_ns() < end:
            seq += 1
            msg = (seq.to_bytes(8, "little") + body)[:size]
            sock.sendall(msg)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:])
                if n == 0:
                    print(f"requests={requests} errors={errors + 1}", flush=True)
                    return 1
                got += n
            if buf == msg:
                requests += 1
            else:
                errors += 1
    print(f"requests={requests} errors={errors}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.blocking")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("size", type=int)
    p.add_argument("seconds", type=float)
    p.set_defaults(func=cmd_client)
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
