"""`python -m compression`: the offline compression CLI."""

from compression.cli import main

raise SystemExit(main())
