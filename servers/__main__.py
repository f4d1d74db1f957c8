"""`python -m servers NAME ...`: see servers.cli."""

from servers.cli import main

raise SystemExit(main())
