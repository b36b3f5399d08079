"""Deterministic generator of "shapes", a small COCO-format detection dataset.

Every image is rendered from its own random stream (seeded by ``(seed, split, index)``), so the
dataset is bit-identical for the same parameters regardless of how many processes render it.

Images are ``image_size`` x ``image_size`` RGB JPEGs with a textured background (linear gradient,
low-frequency blotches, optional stripes and thin clutter lines, Gaussian noise) and 0-6 filled
shapes from five classes.  Each shape keeps at least ``MIN_VISIBLE_FRACTION`` of its pixels
visible when a later shape is drawn over it, and the annotation is computed from the *visible*
mask: ``bbox`` is the tight pixel box ``[x, y, w, h]`` of the visible pixels (a pixel ``(col, row)``
covers ``[col, col + 1) x [row, row + 1)``) and ``area`` the number of visible pixels.

Category ids are deliberately non-contiguous (1, 3, 7, 11, 20) to exercise id <-> label mapping.

Next to every JPEG, an index mask (``train_masks/000001.png``, ...) holds the same visible masks for semantic
segmentation: a palette PNG (VOC colormap) whose value is 0 for the background and ``1..5`` for the
``SHAPES_CATEGORIES`` in their listed order (``SHAPES_SEGMENTATION_CLASSES``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError
from ._generated import build_generated_dataset, embedded_root, folder_holds, manifest_matches, render_all
from ..masks import save_index_mask

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES_CATEGORIES",
    "SHAPES_SEGMENTATION_CLASSES",
    "ShapeObject",
    "ensure_shapes_dataset",
    "generate_shapes_split",
    "render_shapes_image",
    "shapes_paths",
]

logger = logging.getLogger(__name__)

#: Bump when the rendering or the files written change; a stored dataset with another version is regenerated.
GENERATOR_VERSION = 2  # 2: index masks next to the images (the images are unchanged)
MANIFEST_NAME = "shapes_manifest.json"
_GENERATOR_TAG = "mobilevision.data.shapes"

#: COCO categories (non-contiguous ids on purpose).
SHAPES_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 11, "name": "star", "supercategory": "shape"},
    {"id": 20, "name": "cross", "supercategory": "shape"},
)
_NAME_TO_ID = {c["name"]: c["id"] for c in SHAPES_CATEGORIES}
#: Semantic segmentation classes: mask value 0 is the background, 1..5 the categories in their listed order.
SHAPES_SEGMENTATION_CLASSES = ("background", "circle", "square", "triangle", "star", "cross")
_ID_TO_MASK_VALUE = {c["id"]: i + 1 for i, c in enumerate(SHAPES_CATEGORIES)}

#: Shape extent (nominal diameter) ranges in pixels at the reference size 192 (scaled with the
#: image size): small U[16, 36] (25%), medium log-U[36, 100] (55%), large U[100, 170] (20%).
#: With COCO's area ranges this gives roughly 1/3 small, 1/2 medium and 1/8 large objects.
_REF_SIZE = 192
_EXTENT_MIX = ((0.25, 16.0, 36.0, False), (0.55, 36.0, 100.0, True), (0.20, 100.0, 170.0, False))
#: Probability of an image without objects; otherwise 1..MAX_OBJECTS objects.
EMPTY_IMAGE_PROB = 0.04
MAX_OBJECTS = 6
#: Each object keeps at least this fraction of its own pixels visible.
MIN_VISIBLE_FRACTION = 0.7
#: Minimum RGB distance between an object's colour and what lies under it.
_MIN_COLOR_DISTANCE = 110.0
_SPLIT_IDS = {"train": 0, "val": 1}


@dataclass
class ShapeObject:
    """One rendered object: COCO category id, visible mask, tight xywh box, visible area."""

    category_id: int
    mask: np.ndarray  # HxW bool, visible pixels
    bbox: tuple[int, int, int, int]  # x, y, w, h (tight box of the visible pixels)
    area: int

    @property
    def name(self) -> str:
        return next(c["name"] for c in SHAPES_CATEGORIES if c["id"] == self.category_id)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _shape_polygon(name: str, extent: float, aspect: float, angle: float) -> np.ndarray | None:
    """Polygon (K, 2) centred at 0 for ``name``; None for the circle (drawn as an ellipse)."""
    r = extent / 2.0
    if name == "circle":
        return None
    if name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * (r / math.sqrt(2) * 1.25)
    elif name == "triangle":
        t = np.deg2rad([90.0, 210.0, 330.0])
        pts = np.stack([np.cos(t), -np.sin(t)], 1) * r
        pts[:, 1] += r * 0.25  # centre the bounding box vertically
    elif name == "star":
        t = np.deg2rad(90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([np.cos(t) * radii, -np.sin(t) * radii], 1)
        pts[:, 1] += r * 0.1
    elif name == "cross":
        a, b = r, r * 0.36
        pts = np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
             [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]],
            dtype=np.float64,
        )
    else:  # pragma: no cover - guarded by SHAPES_CATEGORIES
        raise UserError(f"unknown shape {name!r}")
    pts = pts * np.array([1.0, aspect])
    return _rot(pts, angle)


def _half_extent(poly: np.ndarray | None, extent: float, aspect: float) -> tuple[float, float]:
    """Half width / half height of the shape around its centre."""
    if poly is None:
        return extent / 2.0, extent / 2.0 * aspect
    return float(np.abs(poly[:, 0]).max()), float(np.abs(poly[:, 1]).max())


def _shape_mask(
    size: int, poly: np.ndarray | None, cx: float, cy: float, extent: float, aspect: float
) -> np.ndarray:
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if poly is None:
        rx, ry = extent / 2.0, extent / 2.0 * aspect
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    else:
        draw.polygon([(float(x + cx), float(y + cy)) for x, y in poly], fill=1)
    return np.asarray(canvas, dtype=bool)


def _sample_angle(rng: np.random.Generator, name: str) -> float:
    if name == "square":
        return float(rng.uniform(-30, 30)) * math.pi / 180
    if name == "cross":
        return float(rng.uniform(-20, 20)) * math.pi / 180
    if name in ("triangle", "star"):
        return float(rng.uniform(0, 360)) * math.pi / 180
    return 0.0


def _sample_extent(rng: np.random.Generator, scale: float) -> float:
    u, acc = rng.random(), 0.0
    for p, lo, hi, log in _EXTENT_MIX:
        acc += p
        if u < acc or p == _EXTENT_MIX[-1][0]:
            break
    if log:
        return math.exp(rng.uniform(math.log(lo), math.log(hi))) * scale
    return rng.uniform(lo, hi) * scale


@functools.lru_cache(maxsize=4)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _background(rng: np.random.Generator, size: int, flat: bool) -> np.ndarray:
    if flat:
        return np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (size, size, 3)).copy()
    yy, xx = _unit_grid(size)
    # Linear gradient between two colours at a random angle.
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c1[None, None, :] + (c2 - c1)[None, None, :] * t[..., None]
    # Low-frequency blotches: a coarse random grid upsampled bilinearly.
    grid = rng.uniform(-1, 1, (5, 5, 3)).astype(np.float32)
    amp = rng.uniform(0, 35)
    blot = Image.fromarray(((grid + 1) * 127.5).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    img = img + (np.asarray(blot, np.float32) / 127.5 - 1.0) * amp
    # Stripes (soft or hard).
    if rng.random() < 0.35:
        period = rng.uniform(6, 30) / _REF_SIZE
        phi = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(phi) + yy * math.sin(phi)) / period)
        if rng.random() < 0.5:
            wave = np.sign(wave)
        img = img + wave[..., None] * rng.uniform(8, 35) * rng.choice([-1.0, 1.0], 3)
    return img.astype(np.float32)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A few thin random lines (distractors, drawn under the objects)."""
    size = img.shape[0]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(1, 5))):
        p = rng.uniform(0, size, 4)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([(p[0], p[1]), (p[2], p[3])], fill=color, width=int(rng.integers(1, 3)))
    return np.asarray(pil, np.float32)


def render_shapes_image(
    rng: np.random.Generator | int,
    image_size: int = 192,
    *,
    num_objects: int | None = None,
    flat_background: bool = False,
    noise: bool = True,
    categories: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[ShapeObject]]:
    """Render one image and its objects.

    Args:
        rng: a numpy Generator or an int seed.
        image_size: output side in pixels.
        num_objects: force the number of objects to *attempt* (placement may still fail for
            crowded images); default: 0 with prob. ``EMPTY_IMAGE_PROB``, else uniform 1..6.
        flat_background: a single flat colour instead of the textured background (debug/tests).
        noise: add Gaussian pixel noise and per-object shading (off: exact flat colours).
        categories: restrict to these shape names.

    Returns:
        ``(image HxWx3 uint8, objects)``; ``objects[i].mask`` is the visible mask and
        ``bbox``/``area`` are computed from it.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    size = int(image_size)
    scale = size / _REF_SIZE
    names = list(categories) if categories is not None else [c["name"] for c in SHAPES_CATEGORIES]

    img = _background(rng, size, flat_background)
    if not flat_background and rng.random() < 0.3:
        img = _clutter(rng, img)

    if num_objects is None:
        num_objects = 0 if rng.random() < EMPTY_IMAGE_PROB else int(rng.integers(1, MAX_OBJECTS + 1))

    full_masks: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    colors: list[np.ndarray] = []
    cats: list[int] = []
    # Sample all objects first and place the big ones first: small objects then fill the gaps
    # (re-sampling sizes on failed placements would bias the dataset towards small objects).
    specs = [(names[int(rng.integers(len(names)))], _sample_extent(rng, scale)) for _ in range(num_objects)]
    specs.sort(key=lambda s: -s[1])
    for name, extent in specs:
        placed = False
        for _attempt in range(16):
            aspect = float(rng.uniform(0.85, 1.15))
            angle = _sample_angle(rng, name)
            poly = _shape_polygon(name, extent, aspect, angle)
            hx, hy = _half_extent(poly, extent, aspect)
            hx, hy = hx + 1.0, hy + 1.0  # stay fully inside the image
            if 2 * hx >= size or 2 * hy >= size:
                extent *= 0.92  # too big for the image at this angle: shrink a little
                continue
            cx, cy = rng.uniform(hx, size - hx), rng.uniform(hy, size - hy)
            mask = _shape_mask(size, poly, cx, cy, extent, aspect)
            npix = int(mask.sum())
            if npix < 12:
                continue
            # Keep every earlier object mostly visible.
            if any(
                int((v & ~mask).sum()) < MIN_VISIBLE_FRACTION * int(f.sum()) for v, f in zip(visible, full_masks)
            ):
                continue
            # Pick a colour that stands out from the background and the objects underneath.
            under = img[mask].mean(0)
            overlapped = [c for v, c in zip(visible, colors) if (v & mask).any()]
            for _c in range(16):
                color = rng.uniform(0, 255, 3)
                if np.linalg.norm(color - under) >= _MIN_COLOR_DISTANCE and all(
                    np.linalg.norm(color - c) >= _MIN_COLOR_DISTANCE for c in overlapped
                ):
                    break
            else:
                continue
            placed = True
            break
        if not placed:
            continue
        ys, xs = np.nonzero(mask)
        fill = np.broadcast_to(color.astype(np.float32), (len(ys), 3))
        if noise:
            # Mild shading across the object so it is not a perfectly flat patch.
            g = rng.uniform(-1, 1, 2)
            shade = ((xs - cx) * g[0] + (ys - cy) * g[1]) / max(extent, 1.0) * rng.uniform(0, 30)
            fill = fill + shade.astype(np.float32)[:, None]
        img[ys, xs] = fill
        for v in visible:
            v &= ~mask
        full_masks.append(mask)
        visible.append(mask.copy())
        colors.append(color)
        cats.append(_NAME_TO_ID[name])

    if noise:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    objects = []
    for cat, v in zip(cats, visible):
        rows, cols = np.flatnonzero(v.any(1)), np.flatnonzero(v.any(0))
        x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
        objects.append(ShapeObject(cat, v, (x0, y0, x1 - x0 + 1, y1 - y0 + 1), int(v.sum())))
    return image, objects


# --------------------------------------------------------------------------------------------
# Dataset files
# --------------------------------------------------------------------------------------------


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])


def _index_mask(objects: Sequence[ShapeObject], size: int) -> np.ndarray:
    """The objects' (disjoint) visible masks as one uint8 label map: 0 background, 1..5 the categories."""
    index = np.zeros((size, size), dtype=np.uint8)
    for o in objects:
        index[o.mask] = _ID_TO_MASK_VALUE[o.category_id]
    return index


def _render_to_file(args: tuple[str, str | None, str, int, int, int, int]) -> list[dict[str, Any]]:
    out_dir, mask_dir, split, seed, index, image_size, quality = args
    image, objects = render_shapes_image(_image_rng(seed, split, index), image_size)
    Image.fromarray(image).save(os.path.join(out_dir, _file_name(index)), quality=quality, subsampling=0)
    if mask_dir is not None:
        save_index_mask(_index_mask(objects, image.shape[0]), os.path.join(mask_dir, _mask_name(index)))
    return [{"category_id": o.category_id, "bbox": list(o.bbox), "area": o.area} for o in objects]


def _file_name(index: int) -> str:
    return f"{index + 1:06d}.jpg"


def _mask_name(index: int) -> str:
    return f"{index + 1:06d}.png"


def generate_shapes_split(
    out_dir: str | Path,
    annotation_file: str | Path,
    split: str,
    num_images: int,
    image_size: int = 192,
    seed: int = 0,
    *,
    jpeg_quality: int = 90,
    workers: int | None = None,
    mask_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Render ``num_images`` images of ``split`` into ``out_dir`` and write the COCO json; with ``mask_dir``, also
    the index masks (``000001.png``, ...: 0 background, 1..5 ``SHAPES_CATEGORIES`` in order, VOC palette)."""
    if split not in _SPLIT_IDS:
        raise UserError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if mask_dir is not None:
        Path(mask_dir).mkdir(parents=True, exist_ok=True)
    masks = None if mask_dir is None else str(mask_dir)
    jobs = [(str(out_dir), masks, split, int(seed), i, int(image_size), int(jpeg_quality)) for i in range(num_images)]
    results = render_all(_render_to_file, jobs, workers)

    images, annotations = [], []
    for i, objs in enumerate(results):
        image_id = i + 1
        images.append({"id": image_id, "file_name": _file_name(i), "width": image_size, "height": image_size})
        for o in objs:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **o})
    coco = {
        "info": {
            "description": f"mobilevision shapes ({split})",
            "version": str(GENERATOR_VERSION),
            "generator": _GENERATOR_TAG,
            "seed": int(seed),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in SHAPES_CATEGORIES],
    }
    with open(annotation_file, "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    return coco


def shapes_paths(root: str | Path | None = None) -> dict[str, str]:
    """Paths of the shapes dataset under ``root`` (whether or not it exists yet)."""
    root = Path(embedded_root("shapes", root))
    return {
        "root": str(root),
        "train_images": str(root / "train"),
        "train_annotations": str(root / "instances_train.json"),
        "train_masks": str(root / "train_masks"),
        "val_images": str(root / "val"),
        "val_annotations": str(root / "instances_val.json"),
        "val_masks": str(root / "val_masks"),
        "manifest": str(root / MANIFEST_NAME),
    }


def _params(num_train: int, num_val: int, image_size: int, seed: int, jpeg_quality: int) -> dict[str, Any]:
    return {
        "generator": _GENERATOR_TAG,
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    paths = shapes_paths(root)
    if not manifest_matches(Path(paths["manifest"]), params):
        return False
    return all(os.path.isfile(paths[f"{split}_annotations"])
               and folder_holds(paths[f"{split}_images"], (_file_name(i) for i in range(n)))
               and folder_holds(paths[f"{split}_masks"], (_mask_name(i) for i in range(n)))
               for split, n in (("train", params["num_train"]), ("val", params["num_val"])))


def ensure_shapes_dataset(
    root: str | Path | None = None,
    num_train: int = 2000,
    num_val: int = 200,
    image_size: int = 192,
    seed: int = 0,
    *,
    jpeg_quality: int = 90,
    workers: int | None = None,
    force: bool = False,
) -> dict[str, str]:
    """Create the shapes dataset under ``root`` unless a complete copy with the same parameters exists.

    The dataset is rendered into a temporary sibling folder and moved into place at the end, so
    an interrupted run never leaves a half-written dataset that looks complete.  An existing
    ``root`` is only replaced if it is empty or was written by this generator (it holds
    ``shapes_manifest.json``); any other non-empty folder raises ``FileExistsError``.

    Returns:
        dict with ``root``, ``train_images``, ``train_annotations``, ``train_masks``, ``val_images``,
        ``val_annotations``, ``val_masks`` and ``manifest`` paths (strings).
    """
    root = Path(embedded_root("shapes", root))
    params = _params(num_train, num_val, image_size, seed, jpeg_quality)

    def render(tmp: Path) -> None:
        logger.info("generating shapes dataset (%d train / %d val, %dpx) in %s", num_train, num_val, image_size, root)
        tmp_paths = shapes_paths(tmp)
        for split, n in (("train", num_train), ("val", num_val)):
            generate_shapes_split(tmp_paths[f"{split}_images"], tmp_paths[f"{split}_annotations"], split, n,
                                  image_size, seed, jpeg_quality=jpeg_quality, workers=workers,
                                  mask_dir=tmp_paths[f"{split}_masks"])

    build_generated_dataset(root, params, MANIFEST_NAME, _is_complete, render, "shapes", force)
    return shapes_paths(root)
