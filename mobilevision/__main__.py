"""``python -m mobilevision``: the ``mobilevision`` command."""

from .cli import main

raise SystemExit(main())
