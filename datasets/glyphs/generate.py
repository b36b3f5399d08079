#!/usr/bin/env python
"""Generate the glyphs classification dataset (thin CLI around mobilevision.data.glyphs.ensure_glyphs_dataset).

    python datasets/glyphs/generate.py                      # 10 classes x 100 train / 30 val, 128 px
    python datasets/glyphs/generate.py --train-per-class 300 --force
    python datasets/glyphs/generate.py --preview grid.png   # also write a grid of val images (one row per class)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
from PIL import Image

from mobilevision.data.glyphs import GLYPH_CLASSES, ensure_glyphs_dataset


def write_preview(val_dir: str, out: str, per_class: int = 8) -> None:
    rows = []
    for species in GLYPH_CLASSES:
        names = sorted(os.listdir(os.path.join(val_dir, species)))[:per_class]
        images = [np.asarray(Image.open(os.path.join(val_dir, species, n)).convert("RGB")) for n in names]
        rows.append(np.concatenate(images, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="output folder (default: the embedded dataset's folder, see mobilevision.data.data_home)")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: available CPUs, max 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a complete copy exists")
    parser.add_argument("--preview", default=None, help="write a PNG grid of validation images (rows = classes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    paths = ensure_glyphs_dataset(
        args.root,
        num_train_per_class=args.train_per_class,
        num_val_per_class=args.val_per_class,
        image_size=args.image_size,
        seed=args.seed,
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        force=args.force,
    )
    if args.preview:
        write_preview(paths["val"], args.preview, per_class=min(8, args.val_per_class))
    print(json.dumps({**paths, "classes": list(GLYPH_CLASSES)}, indent=2))
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
