#!/usr/bin/env python
"""Evaluation entry point; the logic lives in ``mobilevision/eval_cli.py``.

    python tools/eval.py coco --annotations GT.json --results DT.json [--json-out stats.json]
"""

from mobilevision.eval_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
