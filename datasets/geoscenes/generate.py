#!/usr/bin/env python
"""Generate the geoscenes geolocalization dataset (thin CLI around mobilevision.data.geoscenes.ensure_geoscenes_dataset).

    python datasets/geoscenes/generate.py                     # 4000 train / 800 val photos, 96 px, seed 0
    python datasets/geoscenes/generate.py --num-train 20000 --force
    python datasets/geoscenes/generate.py --preview grid.png  # also write a grid of val photos
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mobilevision.data.geoscenes import ensure_geoscenes_dataset


def write_preview(root: Path, out: str, count: int = 32, per_row: int = 8) -> None:
    with open(root / "val.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    images = [np.asarray(Image.open(root / r["image_path"]).convert("RGB")) for r in rows]
    images += [np.zeros_like(images[0])] * (-len(images) % per_row)
    grid = [np.concatenate(images[i:i + per_row], 1) for i in range(0, len(images), per_row)]
    Image.fromarray(np.concatenate(grid, 0)).save(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="output folder (default: the embedded dataset's folder, see mobilevision.data.data_home)")
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-val", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: available CPUs, max 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a complete copy exists")
    parser.add_argument("--preview", default=None, help="write a PNG grid of the first 32 validation photos")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    root = ensure_geoscenes_dataset(args.root, num_train=args.num_train, num_val=args.num_val,
                                    image_size=args.image_size, seed=args.seed, force=args.force,
                                    workers=args.workers)
    if args.preview:
        write_preview(root, args.preview)
    print(f"{root}: train.csv, val.csv, images/ (done in {time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
