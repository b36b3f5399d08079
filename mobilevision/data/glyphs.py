"""Deterministic generator of "glyphs", a small fine-grained image classification dataset.

Every image shows one "glyph creature" - an elliptical body, a round head with an eye, four legs
and a tail - drawn at a random position, size (55-78% of the image), rotation (+-35 degrees),
facing (left / right) and colour on a textured background (the shapes dataset's gradient +
blotches + stripes, thin clutter lines, a few distractor dots) with Gaussian pixel noise.

All ten species share the body plan; they differ only in small markings, combined from four traits:

==================  =========  ========  ======  =====
species             markings   tail      eye     crest
==================  =========  ========  ======  =====
plain               -          straight  dark    -
redeye              -          straight  red     -
forktail            -          forked    dark    -
curltail            -          curled    dark    -
crested             -          straight  dark    yes
twostripe           2 stripes  straight  dark    -
threestripe         3 stripes  straight  dark    -
spotted             3 spots    straight  dark    -
redeye_twostripe    2 stripes  straight  red     -
spotted_forktail    3 spots    forked    dark    -
==================  =========  ========  ======  =====

so several pairs differ in a single detail (``plain``/``redeye``, ``twostripe``/``threestripe``,
``twostripe``/``redeye_twostripe``, ``spotted``/``spotted_forktail``, ...).  At the default 128 px a
stripe is 3-5 px wide, a spot 4-6 px across, the iris 4-6 px: small, but visible at 96-128 px
network input.  Traits are left/right symmetric, so horizontal flips are label-preserving.

Every image is rendered from its own random stream seeded by ``(seed, split, class, index)``, so
the dataset is bit-identical for the same parameters however many processes render it.  Layout
(image-folder style, ``GLYPH_CLASSES`` is already in sorted order so folder order = label order)::

    <root>/train/<species>/0000.jpg ...
    <root>/val/<species>/0000.jpg ...
    <root>/glyphs_manifest.json
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError
from . import shapes as _shapes
from ._generated import build_generated_dataset, embedded_root, folder_holds, manifest_matches, render_all

__all__ = [
    "GLYPH_CLASSES",
    "GLYPH_TRAITS",
    "GLYPHS_GENERATOR_VERSION",
    "ensure_glyphs_dataset",
    "glyphs_paths",
    "render_glyph_image",
]

logger = logging.getLogger(__name__)

#: Bump when the rendering changes; a stored dataset with another version is regenerated.
GLYPHS_GENERATOR_VERSION = 1
MANIFEST_NAME = "glyphs_manifest.json"
_GENERATOR_TAG = "mobilevision.data.glyphs"
_SPLIT_IDS = {"train": 0, "val": 1}

#: species -> (markings, tail, eye, crest)
GLYPH_TRAITS: dict[str, tuple[str, str, str, bool]] = {
    "crested": ("none", "straight", "dark", True),
    "curltail": ("none", "curled", "dark", False),
    "forktail": ("none", "forked", "dark", False),
    "plain": ("none", "straight", "dark", False),
    "redeye": ("none", "straight", "red", False),
    "redeye_twostripe": ("stripes2", "straight", "red", False),
    "spotted": ("spots", "straight", "dark", False),
    "spotted_forktail": ("spots", "forked", "dark", False),
    "threestripe": ("stripes3", "straight", "dark", False),
    "twostripe": ("stripes2", "straight", "dark", False),
}
#: Class names in label order (sorted, like the folder names).
GLYPH_CLASSES: tuple[str, ...] = tuple(sorted(GLYPH_TRAITS))

_SS = 3  # supersampling factor of the figure layer (anti-aliasing)
_MIN_COLOR_DISTANCE = 100.0
_IRIS = {"dark": (25, 22, 20), "red": (225, 25, 20)}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _ellipse(cx: float, cy: float, a: float, b: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1)


def _band(x0: float, x1: float, a: float, b: float, shrink: float = 0.9) -> np.ndarray:
    """Vertical band ``x0 <= x <= x1`` clipped to the ellipse (a, b) centred at 0 (slightly inset)."""
    xs = np.linspace(x0, x1, 6)
    ys = b * shrink * np.sqrt(np.clip(1.0 - (xs / a) ** 2, 0.0, None))
    return np.concatenate([np.stack([xs, -ys], 1), np.stack([xs[::-1], ys[::-1]], 1)])


def _creature_parts(rng: np.random.Generator,
                    traits: tuple[str, str, str, bool]) -> list[tuple[str, str, np.ndarray, float]]:
    """Primitives in body-length units, facing +x, body centre at 0, y down, for ``traits`` =
    ``(markings, tail, eye, crest)`` (see :data:`GLYPH_TRAITS`).

    Returns ``(kind, colour role, points, width)`` with kind ``"poly"`` (filled polygon) or
    ``"line"`` (polyline of the given width), drawn in order.
    """
    markings, tail, eye, crest = traits
    a = 0.27 * rng.uniform(0.95, 1.05)  # body half length
    b = rng.uniform(0.13, 0.155)  # body half height
    hr = 0.11 * rng.uniform(0.93, 1.07)  # head radius
    hx, hy = a + 0.03, -0.05
    parts: list[tuple[str, str, np.ndarray, float]] = []

    # Tail from the back of the body.
    tw = 0.035
    base = np.array([[-a + 0.02, 0.0]])
    if tail == "straight":
        pts = np.array([[-a + 0.02, 0.0], [-a - 0.22, -0.07]])
    elif tail == "forked":
        stem = np.array([[-a + 0.02, 0.0], [-a - 0.12, -0.035]])
        parts.append(("line", "limb", np.array([stem[1], [-a - 0.23, -0.12]]), tw * 0.85))
        parts.append(("line", "limb", np.array([stem[1], [-a - 0.23, 0.04]]), tw * 0.85))
        pts = stem
    else:  # curled: out to the back, then a 3/4 loop upwards
        r = 0.075
        c = np.array([-a - 0.12, -r])
        t = np.deg2rad(np.linspace(90, 90 + 290, 24))  # start below the centre, sweep via the back
        loop = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1)
        pts = np.concatenate([base, loop])
    parts.append(("line", "limb", pts, tw))

    # Legs.
    for lx in (-0.17, -0.07, 0.06, 0.16):
        top = b * math.sqrt(max(0.0, 1 - (lx / a) ** 2)) * 0.8
        parts.append(("line", "limb", np.array([[lx, top], [lx + rng.uniform(-0.03, 0.03), b + 0.1]]), 0.03))

    # Crest: three spikes on top of the head (drawn before the head so only the spikes show).
    if crest:
        for ang in (-55.0, -90.0, -125.0):
            t = math.radians(ang)
            d = np.array([math.cos(t), math.sin(t)])
            n = np.array([-d[1], d[0]])
            root = np.array([hx, hy]) + d * hr * 0.7
            tip = np.array([hx, hy]) + d * (hr + 0.085)
            parts.append(("poly", "limb", np.stack([root + n * 0.03, tip, root - n * 0.03]), 0.0))

    parts.append(("poly", "body", _ellipse(0.0, 0.0, a, b), 0.0))
    parts.append(("poly", "body", _ellipse(hx, hy, hr, hr), 0.0))

    # Body markings.
    if markings.startswith("stripes"):
        k = int(markings[-1])
        w = 0.05
        centres = np.linspace(-0.13, 0.13, k) if k > 1 else np.array([0.0])
        if k == 2:
            centres = np.array([-0.08, 0.08])
        for xc in centres:
            parts.append(("poly", "mark", _band(xc - w / 2, xc + w / 2, a, b), 0.0))
    elif markings == "spots":
        for sx in (-0.13, 0.0, 0.13):
            parts.append(("poly", "mark", _ellipse(sx, -0.02, 0.033, 0.033, 20), 0.0))

    # Eye: white sclera + coloured iris (red or dark).
    ex, ey = hx + 0.035, hy - 0.03
    parts.append(("poly", "sclera", _ellipse(ex, ey, 0.045, 0.045, 24), 0.0))
    parts.append(("poly", "iris:" + eye, _ellipse(ex + 0.008, ey, 0.03, 0.03, 20), 0.0))
    return parts


def _transform(pts: np.ndarray, length: float, angle: float, flip: bool, cx: float, cy: float) -> np.ndarray:
    p = pts * length
    if flip:
        p = p * np.array([-1.0, 1.0])
    c, s = math.cos(angle), math.sin(angle)
    x = p[:, 0] * c - p[:, 1] * s + cx
    y = p[:, 0] * s + p[:, 1] * c + cy
    return np.stack([x, y], 1)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def render_glyph_image(
    rng: np.random.Generator | int,
    species: str | None,
    image_size: int = 128,
    *,
    noise: bool = True,
    flat_background: bool = False,
    traits: tuple[str, str, str, bool] | None = None,
) -> np.ndarray:
    """Render one ``image_size`` x ``image_size`` RGB uint8 image of ``species``.

    Args:
        rng: a numpy Generator or an int seed.
        species: one of ``GLYPH_CLASSES``; None with ``traits``.
        noise: add Gaussian pixel noise, clutter and distractor dots (off: debug / tests).
        flat_background: a single flat background colour.
        traits: ``(markings, tail, eye, crest)`` of any combination instead of a species' (the attributes
            dataset): markings ``none`` / ``stripes2`` / ``stripes3`` / ``spots``, tail ``straight`` / ``forked``
            / ``curled``, eye ``dark`` / ``red``, crest a bool.
    """
    if traits is None:
        if species not in GLYPH_TRAITS:
            raise UserError(f"unknown glyph species {species!r}; choose one of {GLYPH_CLASSES}")
        traits = GLYPH_TRAITS[species]
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    size = int(image_size)
    img = _shapes._background(rng, size, flat_background)
    if noise and not flat_background and rng.random() < 0.3:
        img = _shapes._clutter(rng, img)

    parts = _creature_parts(rng, traits)
    all_pts = np.concatenate([p[2] for p in parts])
    length = rng.uniform(0.55, 0.78) * size
    angle = math.radians(rng.uniform(-35.0, 35.0))
    flip = bool(rng.random() < 0.5)
    margin = 0.07 * size
    for _ in range(8):  # shrink until the rotated figure fits inside the margins
        ext = _transform(all_pts, length, angle, flip, 0.0, 0.0)
        lo, hi = ext.min(0), ext.max(0)
        span = hi - lo
        if (span <= size - 2 * margin).all():
            break
        length *= 0.92
    cx = rng.uniform(margin - lo[0], size - margin - hi[0])
    cy = rng.uniform(margin - lo[1], size - margin - hi[1])

    # Distractor dots on the background (under the figure): spots on the body are what counts.
    if noise and not flat_background:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(0, 4))):
            r = rng.uniform(0.02, 0.04) * length
            x, y = rng.uniform(0, size, 2)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = np.asarray(pil, np.float32)

    # Colours: a body colour that stands out from the background under the figure.
    x0, y0 = (int(max(0, v)) for v in lo + (cx, cy))
    x1, y1 = (int(min(size, v + 1)) for v in hi + (cx, cy))
    under = img[y0:y1, x0:x1].reshape(-1, 3).mean(0)
    for _ in range(16):
        body = _hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.45, 0.95))
        if np.linalg.norm(body - under) >= _MIN_COLOR_DISTANCE:
            break
    colours = {
        "body": body,
        "limb": body * rng.uniform(0.6, 0.8),
        "mark": body * rng.uniform(0.2, 0.35),
        "sclera": np.array([245.0, 245.0, 240.0]),
        "iris:dark": np.array(_IRIS["dark"], np.float64),
        "iris:red": np.array(_IRIS["red"], np.float64),
    }

    # Figure layer at _SS x resolution, then box-downsampled (anti-aliased edges).
    big = size * _SS
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for kind, role, pts, width in parts:
        p = _transform(pts, length * _SS, angle, flip, cx * _SS, cy * _SS)
        col = tuple(int(v) for v in np.clip(np.rint(colours[role]), 0, 255)) + (255,)
        xy = [(float(x), float(y)) for x, y in p]
        if kind == "poly":
            draw.polygon(xy, fill=col)
        else:
            w = max(1, int(round(width * length * _SS)))
            draw.line(xy, fill=col, width=w, joint="curve")
            r = w / 2  # round caps
            for x, y in (xy[0], xy[-1]):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=col)
    small = np.asarray(layer.resize((size, size), Image.Resampling.BOX), np.float32)
    alpha = small[..., 3:4] / 255.0
    # BOX resize of RGBA in Pillow works on premultiplied colours, so unpremultiplied RGB is right here.
    img = img * (1.0 - alpha) + small[..., :3] * alpha

    if noise:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Dataset files
# --------------------------------------------------------------------------------------------


def _file_name(index: int) -> str:
    return f"{index:04d}.jpg"


def _image_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_IDS[split], int(class_index), int(index)])


def _render_to_file(args: tuple[str, str, int, int, int, int, int]) -> None:
    out_dir, split, seed, class_index, index, image_size, quality = args
    species = GLYPH_CLASSES[class_index]
    image = render_glyph_image(_image_rng(seed, split, class_index, index), species, image_size)
    Image.fromarray(image).save(
        os.path.join(out_dir, split, species, _file_name(index)), quality=quality, subsampling=0
    )


def glyphs_paths(root: str | Path | None = None) -> dict[str, str]:
    """Paths of the glyphs dataset under ``root`` (whether or not it exists yet)."""
    root = Path(embedded_root("glyphs", root))
    return {
        "root": str(root),
        "train": str(root / "train"),
        "val": str(root / "val"),
        "manifest": str(root / MANIFEST_NAME),
    }


def _params(num_train: int, num_val: int, image_size: int, seed: int, jpeg_quality: int) -> dict[str, Any]:
    return {
        "generator": _GENERATOR_TAG,
        "version": GLYPHS_GENERATOR_VERSION,
        "background_version": _shapes.GENERATOR_VERSION,  # the background comes from shapes.py
        "classes": list(GLYPH_CLASSES),
        "num_train_per_class": int(num_train),
        "num_val_per_class": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    if not manifest_matches(root / MANIFEST_NAME, params):
        return False
    return all(folder_holds(root / split / species, (_file_name(i) for i in range(n)))
               for split, n in (("train", params["num_train_per_class"]), ("val", params["num_val_per_class"]))
               for species in GLYPH_CLASSES)


def ensure_glyphs_dataset(
    root: str | Path | None = None,
    num_train_per_class: int = 400,
    num_val_per_class: int = 100,
    image_size: int = 128,
    seed: int = 0,
    *,
    jpeg_quality: int = 90,
    workers: int | None = None,
    force: bool = False,
) -> dict[str, str]:
    """Create the glyphs dataset under ``root`` unless a complete copy with the same parameters exists.

    Renders into a temporary sibling folder and moves it into place at the end (an interrupted run
    never leaves a dataset that looks complete).  An existing ``root`` is only replaced if it is
    empty or holds this generator's ``glyphs_manifest.json``; any other non-empty folder raises
    ``FileExistsError``.

    Returns:
        dict with ``root``, ``train``, ``val`` and ``manifest`` paths (strings).
    """
    root = Path(embedded_root("glyphs", root))
    if num_train_per_class < 1 or num_val_per_class < 1:
        raise UserError(
            f"need at least one image per class and split, got num_train_per_class={num_train_per_class}, "
            f"num_val_per_class={num_val_per_class}"
        )
    params = _params(num_train_per_class, num_val_per_class, image_size, seed, jpeg_quality)

    def render(tmp: Path) -> None:
        logger.info(
            "generating glyphs dataset (%d classes x %d train / %d val, %dpx) in %s",
            len(GLYPH_CLASSES), num_train_per_class, num_val_per_class, image_size, root,
        )
        jobs = []
        for split, n in (("train", num_train_per_class), ("val", num_val_per_class)):
            for c, species in enumerate(GLYPH_CLASSES):
                (tmp / split / species).mkdir(parents=True, exist_ok=True)
                jobs += [(str(tmp), split, int(seed), c, i, int(image_size), int(jpeg_quality)) for i in range(n)]
        render_all(_render_to_file, jobs, workers)

    build_generated_dataset(root, params, MANIFEST_NAME, _is_complete, render, "glyphs", force)
    return glyphs_paths(root)
