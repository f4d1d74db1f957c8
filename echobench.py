"""`echobench`: one command for the whole suite (issue 22).

    echobench run [--profile standard ...]      the suite (make bench)
    echobench report RUN | compare A B | check-report RUN
    echobench servers NAME ...                   start one echo server
    echobench loadgen --target HOST:PORT ...     the load generator
    echobench micro run --out DIR                the microbenchmarks
    echobench twins | selfbench                  the two harnesses (make bench-servers, -loadgen)

Each subcommand is its package's own command line (`python -m bench`, `analysis`, `servers`,
`loadgen`, `microbench` keep working): this module only dispatches, importing the one package a
command needs (a server must not pay for pandas). A bad command is one line and status 2, the
same usage-error path as every other echobench command line (records.usage).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from records.usage import OneLineParser

# subcommand -> (module with main(argv), arguments put before the user's, what it does)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "run": ("bench.cli", ("run",), "run a profile's cells and write the report (make bench)"),
    "report": ("analysis.cli", ("report",), "write a run's report"),
    "compare": ("analysis.cli", ("compare",), "two runs' common cells side by side"),
    "check-report": ("analysis.cli", ("check-report",), "open a report in headless Chromium"),
    "servers": ("servers.cli", (), "start one echo server (see `echobench servers --help`)"),
    "loadgen": ("loadgen.cli", (), "the load generator"),
    "micro": ("microbench.cli", (), "the microbenchmarks"),
    "twins": ("bench.cli", ("twins",), "each Python server against its minimal twin"),
    "selfbench": ("bench.selfbench", (), "the load generator against a C client"),
}


def parser() -> OneLineParser:
    listing = "\n".join(f"  {name:<13} {what}" for name, (_, _, what) in COMMANDS.items())
    p = OneLineParser(
        prog="echobench",
        description="What does a process per connection cost? (CS:APP 12.1)",
        epilog=f"commands:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="see below")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    module, before, _ = COMMANDS[ns.command]
    entry = importlib.import_module(module).main
    return int(entry([*before, *ns.args]))


if __name__ == "__main__":
    raise SystemExit(main())
