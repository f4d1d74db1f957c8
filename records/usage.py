"""The one usage-error path of every echobench command line (servers, loadgen, bench, microbench,
analysis): a bad option or argument is one line on stderr, `<prog>: usage error: <what> (see
--help)`, and exit status 2, never argparse's usage block. Scripts and people both read the first
line; `--help` is there for the rest.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

USAGE_EXIT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, with every usage error on one line (subcommand parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"{self.prog}: usage error: {message} (see --help)\n")


def usage_error(prog: str, message: str) -> int:
    """A usage error found after parsing (a file that is not a run, ...): the same one line."""
    print(f"{prog}: usage error: {message} (see --help)", file=sys.stderr)
    return USAGE_EXIT
