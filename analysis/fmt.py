"""How the report writes numbers, in one place.

Every number in report.md and report.html goes through these functions, so the tests can
recompute a figure from the raw histograms, format it here, and find exactly that string in
the report (no number in the report is typed by hand).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

NOT_MEASURED = "not measured in this run"


def _present(x: float | None) -> TypeGuard[float]:
    """A figure: not None, nor the NaN pandas puts where a cell had no value."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def num(x: float | None) -> str:
    """A measured value with as many digits as loopback benchmarks can honestly claim."""
    if not _present(x):
        return "n/a"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def param(x: object) -> str:
    """A parameter value as a person would write it: 10, not 10.00; 0.5 stays 0.5."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    if isinstance(x, float) and math.isnan(x):
        return ""
    return f"{x:g}" if isinstance(x, float) else str(x)


def spread(median: float | None, lo: float | None, hi: float | None, n: int) -> str:
    """Median with its interval; one trial shows no range (nothing to show)."""
    if not _present(median):
        return "n/a"
    if n <= 1 or lo is None or hi is None:
        return num(median)
    return f"{num(median)} [{num(lo)}-{num(hi)}]"


def ratio(x: float | None) -> str:
    if not _present(x) or math.isinf(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}x"
    if abs(x) >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def signed(x: float | None) -> str:
    """A difference with its sign: +1.23, -0.50, +0.00."""
    if not _present(x):
        return "n/a"
    return ("+" if x >= 0 else "-") + num(abs(x))


def pct(x: float | None) -> str:
    if not _present(x):
        return "n/a"
    return f"{100 * x:.1f}%"


def mib(x: float | None) -> str:
    if not _present(x):
        return "n/a"
    return f"{num(x / 2**20)} MiB"


def kib(x: float | None) -> str:
    if not _present(x):
        return "n/a"
    return f"{num(x / 2**10)} KiB"


PARAM_NAMES = ("mode", "load", "connections", "size", "rate_fraction", "rate", "shared_counter")


def params_text(row: Mapping[str, Any]) -> str:
    """A cell's parameters in one line, e.g. `mode=persistent load=closed connections=10`."""
    bits = []
    for k in PARAM_NAMES:
        v = row.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        bits.append(f"{k}={param(v)}")
    return " ".join(bits)


def us_spread(median: float | None, lo: float | None, hi: float | None, n: int) -> str:
    """A duration given in microseconds, with its unit: in ns below 1 us (0.30 ns, not 0.00)."""
    if _present(median) and abs(median) < 1:
        scale = [None if v is None else v * 1000 for v in (lo, hi)]
        return f"{spread(median * 1000, scale[0], scale[1], n)} ns"
    return f"{spread(median, lo, hi, n)} us"
