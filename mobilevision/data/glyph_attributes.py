"""Deterministic generator of "glyph attributes", the embedded multi-label attributes dataset.

The glyph creature of :mod:`mobilevision.data.glyphs`, but every image draws its markings independently instead
of one species' set, and is labelled with six binary attributes of that one image:

================  ==========================================  ===============
attribute         what is drawn                               P(present)
================  ==========================================  ===============
``spots``         three spots on the body                     0.25
``stripes``       two or three stripes on the body            0.25 (spots and stripes exclude each other)
``forked_tail``   a forked tail                               0.25
``curled_tail``   a curled tail                               0.25 (one tail: forked, curled or straight)
``red_eye``       a red iris instead of a dark one            0.35
``crest``         three spikes on the head                    0.35
================  ==========================================  ===============

Backgrounds, pose, size, colour and noise are those of glyphs. Every image is rendered from its own random stream
seeded by ``(seed, split, index)``: the dataset is bit-identical however many processes render it. Layout (the
CSV layout that :class:`~mobilevision.data.AttributesDataModule` reads for any user's data)::

    <root>/train.csv, <root>/val.csv          file,spots,stripes,forked_tail,curled_tail,red_eye,crest
    <root>/images/train/00000.jpg ...         (``file`` is relative to <root>)
    <root>/images/val/00000.jpg ...
    <root>/glyph_attributes_manifest.json
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserError
from . import shapes as _shapes
from ._generated import build_generated_dataset, embedded_root, folder_holds, manifest_matches, render_all
from .glyphs import render_glyph_image

__all__ = ["GLYPH_ATTRIBUTES", "ensure_glyph_attributes_dataset", "sample_glyph_attributes"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST_NAME = "glyph_attributes_manifest.json"
_GENERATOR_TAG = "mobilevision.data.glyph_attributes"
_SPLIT_IDS = {"train": 0, "val": 1}

GLYPH_ATTRIBUTES: tuple[str, ...] = ("spots", "stripes", "forked_tail", "curled_tail", "red_eye", "crest")


def sample_glyph_attributes(rng: np.random.Generator) -> tuple[tuple[str, str, str, bool], tuple[int, ...]]:
    """Draw one image's traits ``(markings, tail, eye, crest)`` and its labels (one 0 / 1 per
    :data:`GLYPH_ATTRIBUTES`)."""
    m = rng.random()
    markings = "none" if m < 0.5 else "spots" if m < 0.75 else ("stripes2" if rng.random() < 0.5 else "stripes3")
    t = rng.random()
    tail = "straight" if t < 0.5 else "forked" if t < 0.75 else "curled"
    eye = "red" if rng.random() < 0.35 else "dark"
    crest = bool(rng.random() < 0.35)
    labels = (markings == "spots", markings.startswith("stripes"), tail == "forked", tail == "curled", eye == "red",
              crest)
    return (markings, tail, eye, crest), tuple(int(v) for v in labels)


def _file(split: str, index: int) -> str:
    return f"images/{split}/{index:05d}.jpg"


def _render(args: tuple[str, str, int, int, int, int]) -> tuple[int, ...]:
    out_dir, split, seed, index, image_size, quality = args
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])
    traits, labels = sample_glyph_attributes(rng)
    image = render_glyph_image(rng, None, image_size, traits=traits)
    Image.fromarray(image).save(os.path.join(out_dir, _file(split, index)), quality=quality, subsampling=0)
    return labels


def _params(num_train: int, num_val: int, image_size: int, seed: int, jpeg_quality: int) -> dict[str, Any]:
    return {"generator": _GENERATOR_TAG, "version": GENERATOR_VERSION, "background_version": _shapes.GENERATOR_VERSION,
            "attributes": list(GLYPH_ATTRIBUTES), "num_train": int(num_train), "num_val": int(num_val),
            "image_size": int(image_size), "seed": int(seed), "jpeg_quality": int(jpeg_quality)}


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    if not manifest_matches(root / MANIFEST_NAME, params):
        return False
    return all((root / f"{split}.csv").is_file() and
               folder_holds(root / "images" / split, (Path(_file(split, i)).name for i in range(n)))
               for split, n in (("train", params["num_train"]), ("val", params["num_val"])))


def ensure_glyph_attributes_dataset(root: str | Path | None = None, num_train: int = 4000, num_val: int = 1000,
                                    image_size: int = 96, seed: int = 0, *, jpeg_quality: int = 90,
                                    workers: int | None = None, force: bool = False) -> dict[str, str]:
    """Create the dataset under ``root`` (default: ``glyph_attributes`` in the data home) unless a complete copy
    with the same parameters exists; atomically, as every embedded dataset. Returns the ``root``, ``train`` and
    ``val`` (CSV) paths."""
    root = Path(embedded_root("glyph_attributes", root))
    if num_train < 1 or num_val < 1:
        raise UserError(f"need at least one image per split, got num_train={num_train}, num_val={num_val}")
    params = _params(num_train, num_val, image_size, seed, jpeg_quality)

    def render(tmp: Path) -> None:
        logger.info("generating glyph attributes dataset (%d train / %d val, %dpx) in %s", num_train, num_val,
                    image_size, root)
        for split, n in (("train", num_train), ("val", num_val)):
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            jobs = [(str(tmp), split, int(seed), i, int(image_size), int(jpeg_quality)) for i in range(n)]
            labels = render_all(_render, jobs, workers)
            with open(tmp / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file", *GLYPH_ATTRIBUTES])
                writer.writerows([_file(split, i), *row] for i, row in enumerate(labels))

    build_generated_dataset(root, params, MANIFEST_NAME, _is_complete, render, "glyph attributes", force)
    return {"root": str(root), "train": str(root / "train.csv"), "val": str(root / "val.csv")}
