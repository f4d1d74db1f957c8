"""`python -m bench`: run a profile (`make bench`), list profiles, show what a profile would run.

Subcommands are dispatched to small `cmd_*` functions; usage errors print one line on stderr and
exit 2, as every echobench CLI does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench import profile as profiles
from bench.progress import fmt_duration
from bench.runner import RunOptions, UsageError, run
from records.cpulist import parse_cpus  # one CPU-list syntax for every command
from records.usage import OneLineParser, usage_error


def _rounds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cluster_address(text: str) -> str:
    """A Dask scheduler address: tcp://HOST:PORT (or tls://)."""
    scheme, _, rest = text.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected tcp://HOST:PORT, got {text!r}")
    return text


def cmd_run(args: argparse.Namespace) -> int:
    opts = RunOptions(
        profile=args.profile,
        resume=args.resume,
        out=args.out,
        server_cpus=args.server_cpus,
        client_cpus=args.client_cpus,
        unpinned=args.unpinned,
        report=not args.no_report,
        microbench=not args.no_microbench,
        mixed_commits=args.mixed_commits,
        canary=not args.no_canary,
        rerun=not args.no_rerun,
        cluster=args.cluster,
    )
    if args.resume is not None and not (args.resume / "manifest.json").is_file():
        raise UsageError(f"--resume: {args.resume} has no manifest.json (not a run directory)")
    return run(opts)


def cmd_list_profiles(args: argparse.Namespace) -> int:
    for name in profiles.available():
        prof = profiles.read(name)
        print(
            f"{name:10} {len(prof.cells):4} cells  ~{fmt_duration(prof.budget_s())}  "
            f"{prof.description}"
        )
    return 0


def cmd_show_profile(args: argparse.Namespace) -> int:
    prof = profiles.read(args.profile, unpinned=args.unpinned)
    print(f"# {prof.name}: {len(prof.cells)} cells, ~{fmt_duration(prof.budget_s())}")
    for spec in prof.cells:
        extra = f"  ({' '.join(spec.server_args)})" if spec.server_args else ""
        print(f"{spec.cell_id}{extra}")
    return 0


def cmd_twins(args: argparse.Namespace) -> int:
    from bench import twin_bench  # noqa: PLC0415 - only this command needs it

    known = twin_bench.python_servers()
    names = args.servers or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"twins: {unknown} have no twin (known: {', '.join(known)})")
    return twin_bench.run(names, args.rounds, args.warmup, args.duration, not args.no_syscalls)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m bench", description="Run echobench profiles (the runner behind make bench)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a profile into results/<UTC time>-<host>/")
    p.add_argument("--profile", default="standard", help="profile name or .toml path")
    p.add_argument("--resume", type=Path, help="run only the cells missing from RUN_DIR")
    p.add_argument("--out", type=Path, default=Path("results"), help="where run dirs go")
    p.add_argument("--server-cpus", type=parse_cpus, help="CPUs for the servers (default: 0)")
    p.add_argument("--client-cpus", type=parse_cpus, help="CPUs for the load generator")
    p.add_argument("--unpinned", action="store_true", help="pin nothing (noisy: flagged)")
    p.add_argument("--no-report", action="store_true", help="skip python -m analysis report")
    p.add_argument("--no-microbench", action="store_true", help="skip the microbenchmarks")
    p.add_argument(
        "--mixed-commits",
        action="store_true",
        help="let --resume continue a run measured by another commit (or a dirty tree)",
    )
    p.add_argument("--no-canary", action="store_true", help="skip the machine-speed canary")
    p.add_argument(
        "--no-rerun", action="store_true", help="keep trials the canary or their siblings flag"
    )
    p.add_argument(
        "--cluster",
        type=cluster_address,
        default=None,
        metavar="tcp://HOST:PORT",
        help="a Dask scheduler: servers on its 'server' workers, load from its 'client' "
        "workers (docs/scale-out.md); default: this machine only",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "twins", help="every Python server against its minimal twin (make bench-servers)"
    )
    p.add_argument("servers", nargs="*", help="registered Python servers (default: all)")
    p.add_argument("--rounds", type=_rounds, default=5, help="alternated pairs (default 5)")
    p.add_argument("--duration", type=float, default=1.5, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds of load before each")
    p.add_argument("--no-syscalls", action="store_true", help="skip the strace count")
    p.set_defaults(func=cmd_twins)

    p = sub.add_parser("list-profiles", help="the built-in profiles and their size")
    p.set_defaults(func=cmd_list_profiles)

    p = sub.add_parser("show-profile", help="the cells a profile would run, in order")
    p.add_argument("profile", help="profile name or .toml path")
    p.add_argument("--unpinned", action="store_true")
    p.set_defaults(func=cmd_show_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (UsageError, profiles.ProfileError) as exc:
        return usage_error("bench", str(exc))
    return code
