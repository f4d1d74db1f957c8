"""What machine a run ran on, and whether it was quiet: recorded in every run's manifest.

Figures from a 2-core VM mean little without the machine beside them (pyperf's
`_collect_metadata` does the same for its benchmarks): CPU model and count, frequency governor,
kernel, Python and package versions, the suite's git commit and whether the tree was dirty, and
the kernel's networking limits that shape a connection benchmark (somaxconn caps the listen
backlog; the ephemeral port range and tcp_tw_reuse cap connections per second from one source
address, as measured on these VMs). Also the open-files limit, raised from soft to hard here
because 1000 connections need more than the usual 1024 descriptors, and children (servers, load
generator) inherit the raised limit.

Every reader tolerates a missing file: a value that cannot be read is recorded as None.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from records import gitinfo

PACKAGES = ("echobench", "uvloop", "psutil", "hdrhistogram", "pandas", "matplotlib", "pytest")
REPO = Path(__file__).resolve().parent.parent


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or None


def governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict[str, Any]:
    return dict(gitinfo.git_state())


def raise_nofile() -> dict[str, Any]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; report before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    info: dict[str, Any] = {"soft_before": soft, "hard": hard, "soft": soft}
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            info["soft"] = hard
        except (ValueError, OSError) as exc:
            info["error"] = f"could not raise RLIMIT_NOFILE: {exc}"
    return info


# Kernel limits that cap a scale cell, recorded as read: the runner never rewrites a sysctl of a
# shared machine. somaxconn caps the listen backlog, pid_max and threads-max the processes and
# threads a fork or thread server can have, the port range the connections from one address.
SYSCTLS = {
    "net.core.somaxconn": "/proc/sys/net/core/somaxconn",
    "kernel.pid_max": "/proc/sys/kernel/pid_max",
    "kernel.threads-max": "/proc/sys/kernel/threads-max",
    "net.ipv4.ip_local_port_range": "/proc/sys/net/ipv4/ip_local_port_range",
}
FD_MARGIN = 256  # descriptors a server needs besides its connections (stdio, listener, pipes)


def raise_limits(max_connections: int) -> dict[str, Any]:
    """Raise what may be raised (soft RLIMIT_NOFILE and RLIMIT_NPROC to their hard limits, for
    this process and so for every server and load generator it starts), read the kernel limits,
    and list in `not_raised` each one that stays below what `max_connections` needs."""
    info: dict[str, Any] = {"nofile": raise_nofile(), "nproc": _raise(resource.RLIMIT_NPROC)}
    sysctl = {name: _read(path) for name, path in SYSCTLS.items()}
    info["sysctl"] = sysctl
    short: list[str] = []
    nofile = info["nofile"]["soft"]
    need_fds = max_connections + FD_MARGIN
    if nofile != resource.RLIM_INFINITY and nofile < need_fds:
        short.append(
            f"RLIMIT_NOFILE {nofile} < {need_fds} needed for {max_connections} connections "
            "in one process (hard limit; raising it needs root's limits.conf)"
        )
    nproc = info["nproc"]["soft"]
    if nproc != resource.RLIM_INFINITY and nproc < max_connections + FD_MARGIN:
        short.append(f"RLIMIT_NPROC {nproc} < {max_connections} processes for a fork server")
    for name in ("kernel.pid_max", "kernel.threads-max"):
        value = _int(sysctl[name])
        if value is not None and value < max_connections + FD_MARGIN:
            short.append(
                f"{name} {value} < {max_connections} processes/threads (not changed: a sysctl)"
            )
    somax = _int(sysctl["net.core.somaxconn"])
    if somax is not None and somax < 1024:
        short.append(f"net.core.somaxconn {somax}: bursts of connects may be refused or retried")
    info["not_raised"] = short
    return info


def _raise(which: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(which)
    info: dict[str, Any] = {"soft_before": soft, "hard": hard, "soft": soft}
    if soft != hard:
        try:
            resource.setrlimit(which, (hard, hard))
            info["soft"] = hard
        except (ValueError, OSError) as exc:
            info["error"] = f"could not raise: {exc}"
    return info


def collect(
    server_cpus: tuple[int, ...] | None, client_cpus: tuple[int, ...] | None, placement: str
) -> dict[str, Any]:
    freq = psutil.cpu_freq()
    return {
        "cpu_model": cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpus_usable": sorted(os.sched_getaffinity(0)),
        "cpu_freq_mhz": round(freq.current, 1) if freq else None,
        "governor": governor(),
        "memory_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "packages": package_versions(),
        "git": git_state(),
        "somaxconn": _int(_read("/proc/sys/net/core/somaxconn")),
        "ip_local_port_range": _read("/proc/sys/net/ipv4/ip_local_port_range"),
        "tcp_tw_reuse": _int(_read("/proc/sys/net/ipv4/tcp_tw_reuse")),
        "tcp_max_syn_backlog": _int(_read("/proc/sys/net/ipv4/tcp_max_syn_backlog")),
        "pid_max": _int(_read("/proc/sys/kernel/pid_max")),
        "threads_max": _int(_read("/proc/sys/kernel/threads-max")),
        "cpu_split": {
            "server_cpus": list(server_cpus) if server_cpus is not None else None,
            "client_cpus": list(client_cpus) if client_cpus is not None else None,
        },
        "placement": placement,
        "hostname": socket.gethostname(),
    }


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def busy_warnings(window_s: float = 0.5, hog_percent: float = 50.0) -> list[str]:
    """Why the machine may not be quiet: load average and processes eating a CPU right now."""
    warnings: list[str] = []
    cores = psutil.cpu_count(logical=True) or 1
    load1, load5, _ = psutil.getloadavg()
    if load1 > 0.5 * cores:
        warnings.append(
            f"load average {load1:.2f} (1 min), {load5:.2f} (5 min) on {cores} CPUs: "
            "the machine is busy, figures will be noisy"
        )
    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "name"]):
        try:
            p.cpu_percent(None)  # first call primes the counter
            procs.append(p)
        except psutil.Error:
            continue
    time.sleep(window_s)  # the measuring window of cpu_percent: what is busy *now*
    hogs = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
            if p.pid != me and pct >= hog_percent:
                cmd = " ".join(p.cmdline()[:4]) or p.info["name"]
                hogs.append((pct, p.pid, cmd[:80]))
        except psutil.Error:
            continue
    for pct, pid, cmd in sorted(hogs, reverse=True)[:5]:
        warnings.append(f"pid {pid} uses {pct:.0f}% of a CPU: {cmd}")
    return warnings


def new_run_dir(out: Path) -> Path:
    """results/<UTC timestamp>-<hostname>/, made here (a second run in the same second: -2)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    base = out / f"{stamp}-{host}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")
