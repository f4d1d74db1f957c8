"""`python -m servers.lean MODULE FIELDS...`: run a forking server in an interpreter that holds
only its model.

Why a second interpreter: `python -m servers process` parses its command line with argparse and
reads the registry (dataclasses, enum, typing), and argparse alone pulls in shutil and with it
bz2, lzma and zlib. The process server forks once per connection, and every module loaded in
the parent is mappings that each fork copies and each child's exit tears down (CS:APP 12.1.2:
"process control is slow" depends on what the parent holds). So the CLI checks the options and
then execs this entry point, which imports the server's module and servers.common, and nothing
else the model does not use. Measured by `make bench-servers` against a minimal twin.

FIELDS is ServerConfig.to_argv(): a private format between servers.cli and this module, never
typed by hand. exec keeps the pid, the process group, the CPU affinity and the limits the
launcher set, so nothing else changes for whoever started the server.
"""

from __future__ import annotations

import importlib
import sys

from servers.common import ServerConfig, log


def main(argv: list[str]) -> int:
    module, *fields = argv
    cfg = ServerConfig.from_argv(fields)
    try:
        code: int = importlib.import_module(module).run(cfg)
    except OSError as err:  # e.g. the address is in use: one line, no traceback
        log(f"{cfg.name}: {err}")
        return 1
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
