"""The validation resize of each task, as an exported model's metadata prescribes it, with OpenCV alone: inference
from an ONNX or ExecuTorch file needs neither albumentations nor the data modules. Every resize shrinks by area
averaging and enlarges bilinearly (bicubic where the metadata says so), as training and validation do (the data modules' albumentations pipelines;
the tests check that both give the same pixels).

All functions take and return RGB uint8 HxWx3 arrays.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np

__all__ = ["center_crop", "letterbox", "letterbox_shape", "resize", "resize_for", "shorter_side_to"]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` at ``height`` x ``width`` (aspect not kept): area averaging when either side shrinks, else
    bilinear."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrink = height < h or width < w
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


_ENLARGE = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def shorter_side_to(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """``image`` scaled (aspect kept) so that its shorter side is ``size``; sides rounded to the nearest pixel;
    enlarged by ``interpolation`` (``"bilinear"`` or ``"bicubic"``), shrunk by area averaging."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1.0 else _ENLARGE[interpolation])


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h < height or w < width:
        raise ValueError(f"cannot crop {height}x{width} from an image of {h}x{w}")
    top, left = (h - height) // 2, (w - width) // 2
    return image[top:top + height, left:left + width]


def letterbox_shape(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an image resized to fit ``size`` (H, W) with its aspect ratio kept."""
    scale = min(size[0] / height, size[1] / width)
    return min(size[0], max(1, round(height * scale))), min(size[1], max(1, round(width * scale)))


def letterbox(image: np.ndarray, size: tuple[int, int], fill: Sequence[int]) -> np.ndarray:
    """``image`` resized to fit ``size`` (aspect kept) and padded bottom / right to ``size`` with ``fill`` (the
    8-bit colour of the normalization mean: zero after normalization)."""
    nh, nw = letterbox_shape(*image.shape[:2], size)
    out = np.empty((size[0], size[1], 3), np.uint8)
    out[...] = tuple(fill)
    out[:nh, :nw] = resize(image, nh, nw)
    return out


def mean_fill(meta: dict[str, Any]) -> tuple[int, ...]:
    """The 8-bit RGB colour of the model's normalization mean."""
    return tuple(int(round(m * 255)) for m in meta["mean"])


def resize_for(meta: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The resize a model's metadata prescribes (its validation resize): RGB uint8 HxWx3 -> RGB uint8 at the
    model's input size (segmentation with ``"short_side"``: the image's own aspect, any size)."""
    h, w = meta["image_size"]
    preprocess = meta["preprocess"]
    kind = preprocess["resize"]
    if kind == "square":  # detection: the whole image, squeezed to the input
        return lambda image: resize(image, h, w)
    if kind == "short_side":  # segmentation, as it validates: any size, the shorter side to eval_size if any
        size = preprocess.get("eval_size")
        return (lambda image: image) if size is None else (lambda image: shorter_side_to(image, int(size)))
    if kind == "longer_side_pad":  # segmentation files with a static input shape
        fill = mean_fill(meta)
        return lambda image: letterbox(image, (h, w), fill)
    if kind == "short_side_center_crop":  # classification, geolocalization
        short = max(h, int(h / float(preprocess["resize_ratio"])))
        interpolation = preprocess.get("interpolation", "bilinear")
        if interpolation not in _ENLARGE:
            raise ValueError(f"unknown interpolation {interpolation!r} in the model's metadata")
        return lambda image: center_crop(shorter_side_to(image, short, interpolation), h, w)
    raise ValueError(f"unknown preprocessing {kind!r} in the model's metadata")
