"""Pictures of results: detections and segmentation masks drawn on images (torchvision.utils does the drawing) and
predicted photo locations on a world map (matplotlib)."""

from __future__ import annotations

import inspect
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageColor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from ..masks import voc_colormap

__all__ = ["draw_boxes", "draw_detections", "overlay_mask", "save_image_grid", "save_location_map"]

#: Class names drawn transparent on overlays (the background, VOC's first class).
BACKGROUND_NAMES = ("background", "_background_", "bg", "__background__")

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
            "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw_detections(
    images: Sequence[np.ndarray | torch.Tensor],
    detections: Sequence[dict],
    class_names: Sequence[str],
    path: str | os.PathLike,
    score_thresh: float = 0.3,
    ground_truth: Sequence[dict] | None = None,
    nrow: int = 4,
) -> Path:
    """Save a grid PNG of ``images`` (HxWx3 uint8) with predicted boxes and, optionally, ground-truth boxes in white.
    Predictions are drawn as :func:`draw_boxes` draws them (class colours, label and score on a filled box sized to
    the image), the same as ``mobilevision predict``. Boxes are xyxy in each image's pixels; ``labels`` index
    ``class_names``."""
    tiles = []
    for k, (image, det) in enumerate(zip(images, detections)):
        img = np.asarray(image)
        if ground_truth is not None and len(ground_truth[k]["boxes"]):
            img = draw_bounding_boxes(torch.as_tensor(img).permute(2, 0, 1).contiguous(),
                                      torch.as_tensor(ground_truth[k]["boxes"]).float(), colors="white",
                                      width=1).permute(1, 2, 0).numpy()
        keep = det["scores"] >= score_thresh
        boxes, labels, scores = det["boxes"][keep].float().cpu(), det["labels"][keep].cpu(), det["scores"][keep].cpu()
        img = draw_boxes(img, boxes.numpy(), labels.tolist(),
                         [f"{class_names[int(c)]} {s:.2f}" for c, s in zip(labels, scores)])
        tiles.append(img)
    return save_image_grid(tiles, path, nrow)


_FILL_LABELS = "fill_labels" in inspect.signature(draw_bounding_boxes).parameters


def _text_color(color: str) -> str:
    """Black or white, whichever reads better on ``color`` (ITU-R BT.601 luma)."""
    r, g, b = ImageColor.getrgb(color)[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


@lru_cache(maxsize=1)
def _font_path() -> str | None:
    """A TrueType font that scales with the image (matplotlib's DejaVu Sans), or None (PIL's default)."""
    try:
        from matplotlib import font_manager

        return font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except Exception:  # noqa: BLE001 - no matplotlib font: PIL's small default font still works
        return None


def draw_boxes(image: np.ndarray, boxes, labels: Sequence[int], texts: Sequence[str],
               width: int | None = None) -> np.ndarray:
    """``image`` (RGB uint8 HxWx3) with xyxy ``boxes`` (its pixels) drawn in the colour of their class ``labels``,
    each captioned by its ``texts`` entry on a filled box of that colour in black or white text, whichever contrasts
    (readable on any background). Line width and font size follow the image size. Returns a new array."""
    if not len(boxes):
        return np.array(image, copy=True)
    h, w = image.shape[:2]
    width = width or max(1, round(max(h, w) / 320))
    colors = [_PALETTE[int(c) % len(_PALETTE)] for c in labels]
    font = _font_path()
    size = max(10, round(max(h, w) / 50))
    # filled labels (their background: the box colour) need torchvision >= 0.23; before, text in the box colour
    filled = {"fill_labels": True, "label_colors": [_text_color(c) for c in colors]} if _FILL_LABELS else {}
    out = draw_bounding_boxes(
        torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), torch.as_tensor(np.asarray(boxes)).float(),
        labels=list(texts), colors=colors, width=width, font=font, font_size=size if font else None, **filled)
    return out.permute(1, 2, 0).numpy()


def save_image_grid(images: Sequence[np.ndarray], path: str | os.PathLike, nrow: int = 4) -> Path:
    """Save RGB uint8 HxWx3 ``images`` as one PNG grid (each tile padded to the largest size, white gaps)."""
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    tiles = []
    for image in images:
        tile = torch.full((3, h, w), 255, dtype=torch.uint8)
        tile[:, : image.shape[0], : image.shape[1]] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        tiles.append(tile)
    grid = make_grid(tiles, nrow=nrow, padding=4, pad_value=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def overlay_mask(image: np.ndarray, mask: np.ndarray, class_names: Sequence[str] | None = None,
                 alpha: float = 0.5, legend: bool = True) -> np.ndarray:
    """``image`` (RGB uint8 HxWx3) with the label map ``mask`` [H, W] blended in VOC's class colours (classes named
    like the background, and 255, left clear), and a legend of the classes present. Returns a new array."""
    h, w = image.shape[:2]
    mask = np.asarray(mask)
    names = list(class_names or [])
    labels = [int(v) for v in np.unique(mask) if v != 255
              and not (int(v) < len(names) and names[int(v)].lower() in BACKGROUND_NAMES)]
    if not labels:
        return np.array(image, copy=True)
    cmap = voc_colormap(max(256, max(labels) + 1))
    colors = [tuple(int(c) for c in cmap[v]) for v in labels]
    masks = torch.from_numpy(np.stack([mask == v for v in labels]))
    out = draw_segmentation_masks(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), masks, alpha,
                                  colors).permute(1, 2, 0).numpy()
    if not legend:
        return out
    from PIL import ImageDraw, ImageFont

    size = max(10, round(max(h, w) / 40))
    font = ImageFont.truetype(_font_path(), size) if _font_path() else ImageFont.load_default()
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    y = 2
    for v, color in zip(labels, colors):
        text = names[v] if v < len(names) else str(v)
        x1, y1, x2, y2 = draw.textbbox((2, y), text, font=font)
        draw.rectangle((x1 - 2, y1 - 1, x2 + 2, y2 + 1), fill=color)
        draw.text((2, y), text, fill=_text_color("#%02x%02x%02x" % color), font=font)
        y = y2 + 3
    return np.asarray(pil)


def save_location_map(latitude, longitude, path: str | os.PathLike, prob=None, title: str | None = None) -> Path:
    """Save a PNG world map (the style of :func:`~mobilevision.evaluation.geolocalization.save_error_map`:
    equirectangular, graticule every 30 degrees, the shipped cities as faint continents) of predicted locations,
    coloured by ``prob`` (the best cell's probability) when given. Creates parent folders."""
    from .geolocalization import save_figure, world_map_axes

    lat, lon = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (latitude, longitude))
    if lat.shape != lon.shape or not len(lat):
        raise ValueError(f"need as many latitudes as longitudes, at least one; got {len(lat)} and {len(lon)}")
    fig, ax = world_map_axes()
    size = 8 if len(lat) > 300 else 24
    if prob is None:
        ax.scatter(lon, lat, s=size, marker="x", c="#1f4e9c", linewidths=0.8, zorder=3)
    else:
        points = ax.scatter(lon, lat, s=size, c=np.asarray(prob, dtype=np.float64).reshape(-1), cmap="viridis",
                            vmin=0.0, vmax=1.0, edgecolors="#202020", linewidths=0.4, zorder=3)
        fig.colorbar(points, ax=ax, fraction=0.025, pad=0.01, label="probability of the predicted cell")
    ax.set_title(title or f"predicted locations of {len(lat)} image{'s' if len(lat) != 1 else ''}")
    return save_figure(fig, path)
