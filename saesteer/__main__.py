"""`python -m saesteer ...` is the `saesteer` command."""

from saesteer.cli import main

raise SystemExit(main())
