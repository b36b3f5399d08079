#!/usr/bin/env python
"""Shim for ``mobilevision train`` (mobilevision/cli/train.py); kept for old scripts."""

import sys

from mobilevision.cli import main

if __name__ == "__main__":
    sys.argv.insert(1, "train")
    raise SystemExit(main())
