"""Command line of the analysis: `python -m analysis report|compare|check-report`.

report RUN_DIR            write report.md, report.html, charts/ and cells.csv into RUN_DIR
compare RUN_A RUN_B ...   print every common cell as ratios to RUN_A (also --output FILE)
check-report RUN_DIR      screenshot report.html in headless Chromium; fail if an image broke

Bad input gets one line on stderr and exit status 2; a report that cannot be checked, 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.check import CheckError, check_report
from analysis.compare import compare, ratio_chart
from analysis.report import write_report
from analysis.results import RunError, read_run
from records.schema import SchemaError
from records.usage import OneLineParser


def cmd_report(args: argparse.Namespace) -> int:
    md = write_report(args.run_dir)
    print(f"report: {md} and {md.with_suffix('.html')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    runs = [read_run(p) for p in args.runs]
    text = compare(runs)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.chart:
        print(f"chart: {ratio_chart(runs[0], runs[1], args.chart)}")
    return 0


def cmd_check_report(args: argparse.Namespace) -> int:
    if not Path(args.run_dir).is_dir():
        print(f"check-report: {args.run_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        result = check_report(Path(args.run_dir))
    except CheckError as exc:
        print(f"check-report: {exc}", file=sys.stderr)
        return 1
    missing = ", ".join(result.missing_sections) or "none"
    print(
        f"check-report: {result.images_loaded}/{result.images_total} images loaded; "
        f"{result.errors} console/page errors; missing sections: {missing}; "
        f"screenshot {result.screenshot}"
    )
    for problem in result.shape:
        print(f"check-report: {problem}")
    return 0 if result.ok else 1


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m analysis", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="write the report of a run into its directory")
    r.add_argument("run_dir", type=Path)
    r.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="compare runs cell by cell, as ratios to the first")
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    c.add_argument("--output", "-o", type=Path, help="also write the comparison here")
    c.add_argument("--chart", type=Path, help="draw B/A per common cell (first two runs) here")
    c.set_defaults(func=cmd_compare)
    k = sub.add_parser("check-report", help="open report.html in headless Chromium")
    k.add_argument("run_dir", type=Path)
    k.set_defaults(func=cmd_check_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "compare" and len(args.runs) < 2:
        print("compare: needs at least two run directories", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (RunError, SchemaError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
