"""Microbenchmarks of process control and IPC: CS:APP 12.1.2's "processes are slow" in numbers.

`python -m microbench run --out DIR [--fast]` runs the pytest-benchmark suite in this package
(`bench_*.py`) and the C reference programs in `c/`, writing `DIR/microbench.json` and
`DIR/microbench_c.json`; `records.micro.read_microbench(DIR)` is the one way to read them.
"""
