"""pytest configuration of the microbenchmark suite (not of the test suite in tests/).

`--microbench-fast` selects few rounds, for the test suite and the quick profile; without it the
suite runs the rounds of `make bench`. Benchmarks ask for the `effort` fixture and pick their
round counts from it, so both budgets live next to each benchmark they govern.
"""

from __future__ import annotations

import pytest

from microbench.recording import Effort


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--microbench-fast",
        action="store_true",
        help="few rounds and no 1 GB parent: seconds, not a minute",
    )


@pytest.fixture(scope="session")
def effort(request: pytest.FixtureRequest) -> Effort:
    return Effort(fast=bool(request.config.getoption("--microbench-fast")))
