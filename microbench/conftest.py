"""pytest configuration of the microbenchmark suite (not of the test suite in tests/).

`--microbench-fast` selects few rounds, for the test suite and the quick profile; without it the
suite runs the rounds of `make bench`. Benchmarks ask for the `effort` fixture and pick their
round counts from it, so both budgets live next to each benchmark they govern.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

import pytest

from microbench.children import PARENT_ENV, die_with_parent
from microbench.recording import Effort


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """Make every way of stopping the suite a KeyboardInterrupt, so `finally` blocks end children.

    SIGTERM (how the runner, or the runner's runner, stops it) would otherwise kill pytest on
    the spot, skipping the clean-up that ends and reaps the benchmark's children; SIGINT may
    have been inherited as ignored (a background job). And if the runner itself dies, the
    kernel sends SIGTERM here (PR_SET_PDEATHSIG), so the suite never runs on unattended.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runner_pid = os.environ.get(PARENT_ENV)
    if runner_pid and runner_pid.isdigit():
        die_with_parent(int(runner_pid), signal.SIGTERM)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--microbench-fast",
        action="store_true",
        help="few rounds and no 1 GB parent: seconds, not a minute",
    )


@pytest.fixture(scope="session")
def effort(request: pytest.FixtureRequest) -> Effort:
    return Effort(fast=bool(request.config.getoption("--microbench-fast")))
