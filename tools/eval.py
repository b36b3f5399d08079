#!/usr/bin/env python
"""Shim for ``mobilevision eval`` (mobilevision/cli/eval.py); kept for old scripts."""

import sys

from mobilevision.cli import main

if __name__ == "__main__":
    sys.argv.insert(1, "eval")
    raise SystemExit(main())
