"""Which code this is: the commit of the checkout and whether its tracked files differ from it.

Stamped on every cell (the code that measured it) and on every report (the code that rendered
it), so a number can always be traced to the code that produced it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, str | bool | None]:
    """{"commit": sha or None, "dirty": tracked files outside results/ changed (None: not a
    git checkout)}."""
    commit = _git("rev-parse", "HEAD")
    # results/ is data the code writes (a report re-rendered in place), not code.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    return {"commit": commit, "dirty": None if status is None else bool(status)}
