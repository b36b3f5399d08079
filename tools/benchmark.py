#!/usr/bin/env python
"""Shim for ``mobilevision benchmark`` (mobilevision/cli/benchmark/); kept for old scripts."""

import sys

from mobilevision.cli import main

if __name__ == "__main__":
    sys.argv.insert(1, "benchmark")
    raise SystemExit(main())
