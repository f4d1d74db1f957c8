"""Command line of the microbenchmarks: `python -m microbench run --out DIR [--fast]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from microbench.runner import run_all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
