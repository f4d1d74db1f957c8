"""`python -m microbench`: see microbench.cli."""

from microbench.cli import main

raise SystemExit(main())
