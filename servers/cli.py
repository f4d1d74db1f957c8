"""`python -m servers NAME [options]`: start one registered echo server.

One subcommand per server in records.registry, so `--help` lists them all (label, model,
reference) and each accepts only the switches its model uses: `--workers` for the pools,
`--leak-connfd`/`--naive-reaper` for `process`, `--handler` for `inetd`, and the
`--shared-counter` modes that fit the model (issue 5). Anything else is a usage error: one line
on stderr, exit 2.

The server's module is imported only after parsing (`spec.import_module()`), so the forking servers'
parent never loads asyncio or uvloop (CS:APP 12.1.2: a fork's cost grows with the parent).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from records.registry import LEAN_FLAGS, SERVERS, Option, ServerSpec, get
from records.usage import OneLineParser
from servers.common import ServerConfig, log


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _server_table() -> str:
    rows = [f"  {s.name:<11} {s.label:<29} {s.model.value:<8} {s.reference}" for s in _specs()]
    rows.append("  (the c-* servers are C programs: `make native` builds them)")
    return "servers (name, label, model, reference):\n" + "\n".join(rows)


def _specs() -> list[ServerSpec]:
    return list(SERVERS.values())


def _add_server_parser(sub: argparse._SubParsersAction[OneLineParser], spec: ServerSpec) -> None:
    p = sub.add_parser(
        spec.name,
        help=f"{spec.label} ({spec.model.value}; {spec.reference})",
        description=f"{spec.label}: {spec.description}. Reference: {spec.reference}.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port (default 0: a free one)")
    p.add_argument("--backlog", type=_positive, default=1024, help="listen backlog (1024)")
    if spec.counter_modes:
        p.add_argument(
            "--shared-counter",
            choices=spec.counter_modes,
            default=None,
            help="count echoed bytes in one counter shared by all connections; print STATS at exit",
        )
    opts = spec.options
    if Option.WORKERS in opts:
        p.add_argument("--workers", type=_positive, default=4, help="pool size (default 4)")
    if Option.LEAK_CONNFD in opts:
        p.add_argument(
            "--leak-connfd",
            action="store_true",
            help="teaching bug: the parent never closes its copy of the connected socket",
        )
    if Option.NAIVE_REAPER in opts:
        p.add_argument(
            "--naive-reaper",
            action="store_true",
            help="teaching bug: one waitpid per SIGCHLD, so some children stay zombies",
        )
    if Option.HANDLER in opts:
        p.add_argument(
            "--handler",
            choices=("cat", "python"),
            default="cat",
            help="what the child execs: the system's cat (default) or a Python echo handler",
        )
    if Option.XRAY in opts:
        p.add_argument(
            "--xray",
            metavar="FILE",
            help="write every connection's fork, echo, exit and reap times to FILE at exit",
        )
    if Option.GC_FREEZE in opts:
        p.add_argument(
            "--gc-freeze",
            action="store_true",
            help="gc.freeze() before the first fork: the collector never writes the parent's "
            "objects again",
        )
    p.set_defaults(func=cmd_serve, server=spec.name, parser=p)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m servers",
        description="Start one echo server. It prints `READY <host> <port> <pid>` once listening.",
        epilog=_server_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="server", metavar="NAME", required=True)
    for spec in _specs():
        _add_server_parser(sub, spec)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    spec = get(args.server)
    if spec.name == "inetd" and getattr(args, "shared_counter", None) and args.handler == "cat":
        args.parser.error("--shared-counter needs --handler python (cat counts nothing)")
    if getattr(args, "xray", None) and getattr(args, "shared_counter", None):
        args.parser.error("--xray times the model's own path: it takes no --shared-counter")
    cfg = ServerConfig(
        name=spec.name,
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        workers=getattr(args, "workers", 4),
        shared_counter=getattr(args, "shared_counter", None),
        leak_connfd=getattr(args, "leak_connfd", False),
        naive_reaper=getattr(args, "naive_reaper", False),
        handler=getattr(args, "handler", "cat"),
        xray=getattr(args, "xray", None),
        gc_freeze=getattr(args, "gc_freeze", False),
    )
    if spec.runs_lean:
        # The forking parent must not carry this CLI's imports: see servers.lean.
        sys.stdout.flush()
        # -S: no site module either. A virtual environment's site runs its .pth files, and an
        # editable install's finder imports pathlib, re, ipaddress and urllib: 16 modules and
        # 1.2 MB of heap (81 modules, 6.4 MB anonymous RSS with site; 65 and 5.1 MB without)
        # whose page tables every fork copies. The package is found through PYTHONPATH instead:
        # the servers need only the standard library.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        lean = [sys.executable, *LEAN_FLAGS, "-m", "servers.lean", spec.module, *cfg.to_argv()]
        os.execve(sys.executable, lean, {**os.environ, "PYTHONPATH": path})
    module = spec.import_module()  # lazy: only this model's imports
    try:
        code: int = module.run(cfg)
    except OSError as err:  # e.g. the address is in use: one line, no traceback
        log(f"{spec.name}: {err}")
        return 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    sys.stdout.flush()
    return code
