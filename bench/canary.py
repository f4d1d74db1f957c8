"""The canary: a fixed workload run between cells, so the run measures the machine as well.

The VM behind a run moves: within minutes the same cell can run 1.5x faster or slower, and one
reference run had a ~37 s episode in which every server fell below 0.6x its median at once,
with both CPUs idling and system time per request up 4-7x (the host, not the server). A
server's figure alone cannot tell a slow server from a slow hour. So every few cells the runner
runs the same two small things, pinned where the cells run:

* `spin_us`: a fixed pure-Python loop on the server's CPU (the CPU's speed for an interpreter);
* `pipe_rtt_us`: a 1-byte pipe round trip between a process on the server's CPU and one on the
  client's CPU (the cost of waking the other CPU, which every split-placement echo pays).

Their medians over the run are its speed; a canary far from them marks an episode, the trials
run next to it are re-run at the end of the run (bench/runner.py), and `compare` divides two
runs' canaries to tell a faster machine from a faster hour.

`python -m bench.canary --server-cpu N --client-cpu M` prints one JSON line; the runner starts
it as its own process group like every other process it runs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from records.usage import OneLineParser

SPIN_ITERATIONS = 100_000
SPIN_REPEATS = 7
RTT_ROUNDS = 300


def spin_us() -> float:
    """Median time of a fixed loop, in microseconds."""
    times = []
    for _ in range(SPIN_REPEATS):
        t = time.perf_counter_ns()
        x = 0
        for i in range(SPIN_ITERATIONS):
            x += i
        times.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(times)


def pipe_rtt_us(client_cpu: int | None) -> float:
    """Median 1-byte pipe round trip with a forked child (pinned to `client_cpu`), in us."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echoing child: nothing but read one byte, write it back
        try:
            if client_cpu is not None:
                os.sched_setaffinity(0, {client_cpu})
            os.close(a_w)
            os.close(b_r)
            while os.read(a_r, 1):
                os.write(b_w, b"x")
        finally:
            os._exit(0)
    os.close(a_r)
    os.close(b_w)
    rtts = []
    try:
        for _ in range(RTT_ROUNDS):
            t = time.perf_counter_ns()
            os.write(a_w, b"x")
            os.read(b_r, 1)
            rtts.append((time.perf_counter_ns() - t) / 1000)
    finally:
        os.close(a_w)
        os.close(b_r)
        os.waitpid(pid, 0)
    return statistics.median(rtts[RTT_ROUNDS // 10 :])  # the first rounds wake things up


def measure(server_cpu: int | None, client_cpu: int | None) -> dict[str, float]:
    if server_cpu is not None:
        os.sched_setaffinity(0, {server_cpu})
    return {"spin_us": round(spin_us(), 3), "pipe_rtt_us": round(pipe_rtt_us(client_cpu), 3)}


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m bench.canary", description=__doc__)
    p.add_argument("--server-cpu", type=int, default=None)
    p.add_argument("--client-cpu", type=int, default=None)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.server_cpu, args.client_cpu)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
