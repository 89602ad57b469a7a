"""`python -m research`: the research diagnostics' CLI."""

from research.cli import main

raise SystemExit(main())
