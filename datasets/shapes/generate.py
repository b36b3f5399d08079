#!/usr/bin/env python
"""Generate the shapes detection dataset (thin CLI around mobilevision.data.shapes.ensure_shapes_dataset).

    python datasets/shapes/generate.py                      # 2000 train / 200 val, 192 px
    python datasets/shapes/generate.py --num-train 200 --force
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from mobilevision.data.shapes import ensure_shapes_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="output folder (default: the embedded dataset's folder, see mobilevision.data.data_home)")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: available CPUs, max 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a complete copy exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    paths = ensure_shapes_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        force=args.force,
    )
    print(json.dumps(paths, indent=2))
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
