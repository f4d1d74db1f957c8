"""Shared fixtures: start a registered echo server as a real process, always stop it.

`start_server(name, *args, **kw)` wraps bench.launch.ServerProcess.start (kw: cpus, nofile,
env, ...) and returns the running server (.host .port .pid .pgid .stop()). Every server a test
started is stopped at teardown, even when the test failed; a test that wants the StopReport
calls .stop() itself (stop is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.launch import ServerProcess
from records.registry import SERVERS


def server_param(name: str, *values: Any, id: str | None = None) -> Any:
    """A pytest parameter for a registered server, skipped with one line when it cannot run
    here (a C server that `make native` could not build: no compiler)."""
    why = SERVERS[name].available()
    marks = [pytest.mark.skip(reason=why)] if why else []
    return pytest.param(name, *values, id=id or name, marks=marks)


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def start(name: str, *args: str, **kw: Any) -> ServerProcess:
        server = ServerProcess.start(name, list(args), **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
