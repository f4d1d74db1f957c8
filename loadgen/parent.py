"""Never outlive the process that started us: the kernel's parent-death signal (Linux).

A load generator left running after its parent died would go on loading a server nobody
measures. Workers ask for SIGKILL when the coordinator dies; a coordinator started by a cluster
shard (`--parent-pid`) asks for SIGTERM, which it handles by ending the run and still writing
what it measured.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: signal.Signals) -> bool:
    """Have the kernel send `sig` when our parent dies. False if `parent_pid` is already gone
    (checked after the request, so no death can slip between the two). Where prctl does not
    exist (not Linux), True: the parent's own clean-up still ends us."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        return True
    return os.getppid() == parent_pid
