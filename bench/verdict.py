"""A cell's verdict: from what happened (the load's result, the server's stop, the monitor's
samples) to ok or failed, with the reason and the notes beside the figures.

Kept apart from the process plumbing (bench/cell.py runs one machine's cell, bench/cluster.py a
cell across hosts) so that both judge a cell by the same rules: a cell fails when the server
died, hung or would not stop, when an echo came back wrong, when a shared counter that must be
exact disagrees with the bytes the client got back, or when it measured nothing. Overload is a
result, not a failure: timeouts and resets under load are notes beside the figures.
"""

from __future__ import annotations

import signal

from bench.accounting import account
from bench.launch import StopReport
from records import schema


class Reasons:
    """Why a cell failed, the cause first: (kind, words) pairs, where the kind is what readers
    (the runner's scale logic, the scorecard) test, never the words. Empty: the cell is ok."""

    def __init__(self) -> None:
        self.items: list[tuple[schema.FailureKind, str]] = []

    def add(self, kind: schema.FailureKind, text: str) -> None:
        self.items.append((kind, text))

    def first(self, kind: schema.FailureKind, text: str) -> None:
        """A cause that explains the others (the server died, so the load failed)."""
        self.items.insert(0, (kind, text))

    def has(self, kind: schema.FailureKind) -> bool:
        return any(k == kind for k, _ in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def status(self) -> schema.CellStatus:
        return "failed" if self.items else "ok"

    @property
    def reason(self) -> str | None:
        return self.items[0][1] if self.items else None

    @property
    def kind(self) -> schema.FailureKind | None:
        return self.items[0][0] if self.items else None

    @property
    def rest(self) -> list[str]:
        """The other reasons' words: they go to the cell's notes."""
        return [text for _, text in self.items[1:]]


def judge(
    params: schema.CellParams,
    load: schema.LoadResult | None,
    report: StopReport,
    monitor_data: schema.MonitorData | None,
    reasons: Reasons,
    notes: list[str],
    *,
    died_during: int | None,
    primed: int,
    server_cpus: tuple[int, ...] | None,
    client_cpus: tuple[int, ...] | None,
    monitor_hz: float,
    pss_max_age_s: float | None,
) -> schema.CpuAccount | None:
    """Add to `reasons` (why the cell failed; empty: ok) and `notes` what the run's evidence
    says; return the window's CPU account. `primed` is the bytes the primer got back."""
    if died_during is not None:
        reasons.first(
            "server-died",
            f"server exited during the cell ({_exit_text(died_during)})"
            f"{last_line(report.stderr_tail)}",
        )
    elif report.timed_out and load is not None and load.complete:
        # Ending a big tree takes time: a finding about the model, not a reason to lose the
        # window it served. The cell keeps its figures and says how the stop went.
        notes.append(
            f"slow stop: the server had not ended its tree {report.grace_s:g} s after SIGTERM "
            "and was killed (SIGKILL); the measured window is kept"
        )
    elif report.exit_code is None or report.timed_out:
        reasons.add("server-stop", "server did not exit after SIGTERM (killed)")
    elif report.exit_code != 0:
        reasons.add("server-stop", f"server exited with {_exit_text(report.exit_code)} on SIGTERM")
    if report.leftovers:
        notes.append(f"left behind after SIGTERM (then killed): {', '.join(report.leftovers)}")

    if load is not None:
        if load.requests == 0 and not reasons:
            # Zero completions with no error is not a figure: the window measured nothing.
            reasons.add(
                "empty",
                f"no request completed in the {load.elapsed_s:.2f} s measured phase "
                f"({load.connections_opened} connections opened, "
                f"{load.bytes_received_total} bytes echoed in all)",
            )
        mismatches = load.errors.get("mismatch", 0)
        if mismatches:
            reasons.add("echo", f"{mismatches} echoes came back different from what was sent")
        others = {k: v for k, v in load.errors.items() if v and k != "mismatch"}
        if others:
            listed = ", ".join(f"{k}={v}" for k, v in sorted(others.items()))
            notes.append(f"errors under load (overload is a result): {listed}")
        served = served_note(load)
        if served:
            notes.append(served)
        notes += open_loop_notes(load)
        if load.client_port_bound:
            notes.append("the client ran short of ephemeral ports: the figure is the kernel's")
        if died_during is None:
            # Unanswered when a phase ended: the measured phase's exactly, warm-up's at most
            # one message per connection (closed loop).
            abandoned = max(0, load.bytes_sent - load.bytes_received)
            # warm-up's and the fill phase's: at most one message per connection each
            abandoned += 2 * params.connections * params.size
            why, note = counter_check(
                params.shared_counter,
                report.stats,
                load.bytes_received_total + primed,
                abandoned,
            )
            if why:
                reasons.add("counter", why)
            if note:
                notes.append(note)
    if load is not None and params.held_idle and not reasons.has("memory"):
        limit = scale_limit(params, load, monitor_data, report.stderr_tail)
        if limit is not None:
            reasons.first("limit", limit)
    if 0 < monitor_hz < 10:
        notes.append(f"monitor reached only {monitor_hz:.1f} Hz (a large process tree)")
    if pss_max_age_s is not None:
        notes.append(
            f"PSS refreshed round-robin in a large tree: readings up to {pss_max_age_s:.2f} s old"
        )
    cpu = None
    if load is not None:
        window = (load.window_start_ns, load.window_end_ns)
        cpu = account(monitor_data, window, server_cpus, client_cpus, load.client_saturated)
    if cpu is not None and cpu.client_saturated:
        share = (
            f" (client CPUs {cpu.client_busy_share:.0%} busy)"
            if cpu.client_busy_share is not None
            else ""
        )
        notes.append(f"the load generator's CPUs saturated{share}: the figure may be its limit")
    if cpu is not None and cpu.foreign_flag and cpu.foreign_s is not None:
        notes.append(
            f"foreign CPU: {cpu.foreign_s * 1e3:,.0f} ms of the server's CPUs went to other "
            f"processes over the {cpu.window_s:.2f} s window (counters explain "
            f"{(cpu.foreign_limit_s or 0) * 1e3:,.0f} ms): the server's figures ran beside a "
            "neighbour"
        )
    if cpu is not None and cpu.server_capped:
        notes.append(
            f"server CPU capped at the {cpu.server_cpus} CPU(s) it was pinned to "
            f"(its {cpu.server_source} counters said more)"
        )
    return cpu


def served_note(load: schema.LoadResult) -> str | None:
    """Words for a cell whose clients were not all served in the window (never a capacity)."""
    asked = load.config.connections
    if load.starved <= 0 or load.config.mode != "persistent":
        return None
    fill = load.fill
    why = ""
    if fill is not None and fill.ended == "stalled":
        why = (
            f": the server stopped serving new connections after {fill.echoed} "
            f"(no new one served for {fill.stall_s:g} s: the model's limit)"
        )
    elif fill is not None and fill.ended == "deadline":
        why = f": filling took longer than {fill.deadline_s:g} s ({fill.echoed} echoed by then)"
    return f"{load.served} of {asked} connections served in the window{why}"


def open_loop_notes(load: schema.LoadResult) -> list[str]:
    """Whether an open-loop cell kept its schedule (wrk2: the load proves its own schedule)."""
    if load.config.load != "open" or not load.target_rate:
        return []
    out = []
    if load.rate_miss:
        out.append(
            f"open loop missed its rate: {load.requests_per_s:,.0f} of "
            f"{load.target_rate:,.0f} req/s asked"
        )
    if load.due_unsent:
        out.append(f"{load.due_unsent} requests fell due in the window but were never sent")
    late = load.histograms.get("lateness")
    lat = load.histograms.get("latency")
    if late and lat and late.summary.count and late.summary.p99_us > 0.5 * lat.summary.p99_us:
        out.append(
            f"the client itself sent late (send lateness p99 {late.summary.p99_us:,.0f} us vs "
            f"latency p99 {lat.summary.p99_us:,.0f} us): the tail is partly the client's"
        )
    return out


def counter_check(
    mode: str | None, stats: dict[str, int] | None, expected: int, abandoned_max: int = 0
) -> tuple[str | None, str | None]:
    """(failure reason, note) of the shared-counter check (issue 5).

    `expected` is what the client got back (primer and warm-up included). A correct counter
    can exceed it only by bytes the server echoed to connections the client had already given
    up on: a request still unanswered when a phase ended, or, in a pool server with fewer
    workers than connections, a message sent on a connection no worker had reached yet, which a
    worker reads and echoes after the client closed. `abandoned_max` bounds those. Fewer bytes
    than were echoed is a lost update: that is the failure this check exists for.
    """
    if mode is None:
        return None, None
    if stats is None or "bytes" not in stats:
        return f"shared counter {mode}: the server printed no 'STATS bytes=' line", None
    got = stats["bytes"]
    text = (
        f"shared counter {mode}: server counted {got} bytes, "
        f"the load generator got {expected} bytes back (primer and warm-up included)"
    )
    if mode == "naive":
        # The demonstration: each forked child adds to its own copy; the parent's stays 0.
        return None, text
    if got < expected:
        return f"{text}: {expected - got} bytes of updates lost", None
    if got > expected + abandoned_max:
        return f"{text}: {got - expected} bytes over (at most {abandoned_max} abandoned)", None
    if got > expected:
        text += (
            f"; the {got - expected} bytes more were echoed to connections the client had "
            f"abandoned (bound {abandoned_max})"
        )
    return None, text


def scale_limit(
    params: schema.CellParams,
    load: schema.LoadResult,
    monitor: schema.MonitorData | None,
    stderr_tail: list[str],
) -> str | None:
    """A scale cell's verdict: None when the server held every connection and served the active
    ones, else where it stopped and why (the client's errors, the server tree at its largest,
    the server's last word). A limit is a result, recorded as a failed cell, never a crash."""
    idle, active = params.held_idle, params.measured
    if load.idle_alive_at_end >= idle and load.requests > 0:
        return None
    held = load.idle_alive_at_end + (active if load.requests > 0 else 0)
    why = [f"{load.idle_opened} idle opened, {load.idle_alive_at_end} echoed at the end"]
    if load.requests == 0:
        why.append("the active connections completed no request")
    errors = ", ".join(f"{k}={v}" for k, v in sorted(load.errors.items()) if v)
    why.append(f"client errors {errors}" if errors else "no client error")
    if monitor is not None and monitor.samples:
        s = monitor.samples
        why.append(
            f"server tree at most {max(x.processes for x in s)} processes, "
            f"{max(x.threads for x in s)} threads, {max(x.fds for x in s)} descriptors, "
            f"{max(x.pss_bytes for x in s) / (1 << 20):,.0f} MiB PSS"
        )
    if stderr_tail:
        why.append(f"server stderr: {stderr_tail[-1].strip()[:160]}")
    return f"limit reached at {held} of {params.connections} connections: {'; '.join(why)}"


def last_line(lines: list[str]) -> str:
    return f" (stderr: {lines[-1].strip()[:200]})" if lines else ""


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
