"""fork + _exit + waitpid from a small parent: run as `python -I -S small_parent.py ...`.

CS:APP 12.1.2 says process control is expensive. How expensive depends on the parent: fork
copies the parent's page tables and every page the child then writes costs a copy-on-write
fault, so a parent that has imported a lot (the pytest process) or touched a big heap forks
more slowly than a bare interpreter. This script is that bare interpreter: it is started with
`-I -S` (no site, no user paths), imports only builtin modules, optionally touches a heap of a
given size, then times batches of fork + `_exit` + waitpid with `perf_counter_ns` and prints
its figures as one JSON object on stdout.

It must stay self-contained (stdlib only, nothing from echobench): `-I -S` removes the
project from `sys.path` on purpose.
"""

import argparse
import json
import os
import resource
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def touch_heap(mb: int) -> bytearray:
    """A heap of `mb` MiB whose every page has been written, so it is resident and private."""
    heap = bytearray(mb * 1024 * 1024)  # calloc'd pages are mapped lazily: write each one
    for off in range(0, len(heap), PAGE):
        heap[off] = 1
    return heap


def fork_batch(batch: int) -> int:
    """Nanoseconds for `batch` fork + _exit + waitpid, back to back."""
    start = time.perf_counter_ns()
    for _ in range(batch):
        pid = os.fork()
        if pid == 0:
            os._exit(0)  # the child does nothing: the figure is creation + teardown + reap
        os.waitpid(pid, 0)
    return time.perf_counter_ns() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heap-mb", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.heap_mb < 0 or args.rounds < 1 or args.batch < 1 or args.warmup < 0:
        print("small_parent: sizes and counts must be positive", file=sys.stderr)
        return 2
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    heap = touch_heap(args.heap_mb)
    for _ in range(args.warmup):
        fork_batch(args.batch)
    per_op_ns = [fork_batch(args.batch) / args.batch for _ in range(args.rounds)]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "heap_mb": args.heap_mb,
        "heap_bytes": len(heap),
        "batch": args.batch,
        "rounds": args.rounds,
        "per_op_ns": per_op_ns,
        "maxrss_kb": usage.ru_maxrss,
        "modules_loaded": len(sys.modules),
        "cpu": args.cpu,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
