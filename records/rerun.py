"""The re-run policy's thresholds (issue 20): applied by the runner, explained by the report.

A trial is re-run at the end of its run, once, when evidence says the machine, not the server,
set its figure: the canary next to it found the machine slower than EPISODE_SPEED times its
median speed over the run (whatever the trial's own speed), another process used the server's
CPU in its window (foreign CPU, bench/accounting.py), or the trial lies outside
[OUTLIER_SHARE, 1 / OUTLIER_SHARE] times its point's median: a fast outlier is treated like a
slow one, so re-runs cannot only ever raise minima. At most RERUN_MAX_SHARE of the run's cells
are re-run, the worst first: foreign CPU (measured on the server's own CPU) before the others.
Every attempt stays on disk; the figure is the last attempt's.
Kept on the record layer's floor so that the runner and the report read one definition.
"""

from __future__ import annotations

EPISODE_SPEED = 0.70
OUTLIER_SHARE = 0.60
RERUN_MAX_SHARE = 0.10
