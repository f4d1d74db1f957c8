"""The C servers (servers/c/, built by `make native`): the CLI checks their options like any
server's, then this module execs the program with them. exec keeps the pid, the process group,
the CPU affinity and the limits the launcher set, so a C server is started, watched and stopped
exactly as the Python ones are (bench.launch).
"""

from __future__ import annotations

import os

from records.registry import get
from servers.common import ServerConfig, log


def run(cfg: ServerConfig) -> int:
    spec = get(cfg.name)
    path = spec.native_path()
    why = spec.available()
    if path is None or why is not None:
        log(why or f"{cfg.name} is not a C server")
        return 1
    argv = [str(path), cfg.host, str(cfg.port), str(cfg.backlog)]
    if cfg.xray:
        argv.append(cfg.xray)
    os.execv(path, argv)
