"""The one CPU-list syntax of every echobench command: '1', '0,1' or '0-3'."""

from __future__ import annotations

import argparse


def parse_cpus(text: str) -> tuple[int, ...]:
    """'1', '0,1' or '0-3' -> a sorted tuple of CPU numbers (argparse type: a bad list is a
    usage error)."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        msg = f"expected a CPU list like 1 or 0,1 or 0-1, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return tuple(sorted(cpus))
