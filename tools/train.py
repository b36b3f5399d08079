#!/usr/bin/env python
"""Train / validate / test / predict: ``tools/train.py --task ssdlite --backbone mobilenet_v2``."""

from mobilevision.cli import main

if __name__ == "__main__":
    main()
