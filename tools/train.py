#!/usr/bin/env python
"""Shim for ``mobilevision train`` (mobilevision/cli/train.py); kept for old scripts."""

import sys

from mobilevision.cli import main

if __name__ == "__main__":
    # sys.argv is left as typed: under DDP, Lightning starts the other ranks with it (this script again)
    raise SystemExit(main(["train", *sys.argv[1:]]))
