"""Command line of the microbenchmarks.

python -m microbench run --out DIR [--fast]   measure, writing DIR/microbench*.json
python -m microbench show DIR                 print a run's figures, Python beside C
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from microbench.suite import run_all
from records.micro import MicrobenchError, MicroResult, read_microbench
from records.usage import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m microbench",
        description="Process-control and IPC microbenchmarks (CS:APP 12.1.2), Python and C.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite and the C floor into a directory")
    run.add_argument("--out", type=Path, required=True, help="directory for the JSON files")
    run.add_argument(
        "--fast", action="store_true", help="few rounds, no 1 GB parent (tests, quick profile)"
    )
    run.set_defaults(func=cmd_run)
    show = sub.add_parser("show", help="print the figures of a run directory as a table")
    show.add_argument("run_dir", type=Path)
    show.set_defaults(func=cmd_show)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        print(f"microbench: --out {out} exists and is not a directory", file=sys.stderr)
        return 2
    try:
        return run_all(out, fast=args.fast)
    except KeyboardInterrupt:
        print("microbench: interrupted; children ended", file=sys.stderr)
        return 130


def cmd_show(args: argparse.Namespace) -> int:
    try:
        results = read_microbench(args.run_dir)
    except MicrobenchError as exc:
        print(f"microbench: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    return 0


def format_table(results: list[MicroResult]) -> str:
    """Python figure beside the C floor of the same operation and placement, per operation."""
    c_by_name = {r.name: r for r in results if r.language == "c"}
    header = f"{'group':15} {'name':36} {'python median (min-max) us':>34} {'C median us':>12}"
    lines = [header, "-" * len(header)]
    for r in (r for r in results if r.language == "python"):
        spread = f"{r.median_us:,.2f} ({r.min_us:,.2f}-{r.max_us:,.2f})"
        c = c_by_name.pop(r.name, None)
        c_text = f"{c.median_us:,.2f}" if c else ""
        lines.append(f"{r.group:15} {r.name:36} {spread:>34} {c_text:>12}")
    for c in c_by_name.values():  # C figures without a Python counterpart
        lines.append(f"{c.group:15} {c.name:36} {'':>34} {c.median_us:>12,.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
