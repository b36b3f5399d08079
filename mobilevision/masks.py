"""Label masks on disk: index PNGs (palette PNGs with PASCAL VOC's colours, read back as their indices; 16-bit
grayscale above 255 labels), the value that marks unlabelled pixels, and the file types a mask folder holds. Read by the
segmentation data sets, written by ``predict`` and the generators, scored by the model-free evaluation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

__all__ = ["IGNORE_INDEX", "MASK_EXTENSIONS", "read_index_mask", "save_index_mask", "voc_colormap"]

IGNORE_INDEX = 255
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")


def read_index_mask(path: str | os.PathLike) -> np.ndarray:
    """A label mask as int64 [H, W]: a palette PNG's indices (VOC), or the values of a grayscale 8- / 16-bit image.
    An RGB(A) image is an error (colours are not class indices), naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
                raise UserError(f"{path}: a {mode} image is not an index mask (expected a palette or grayscale "
                                 "PNG whose pixel values are class indices)")
            return np.asarray(img).astype(np.int64)
    except (OSError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise UserError(f"cannot read mask {path}: {e}") from e


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's label colours [n, 3] uint8 (the bit-interleaving of the VOC devkit's ``labelcolormap.m``:
    0 black, 1 (128, 0, 0), 2 (0, 128, 0), ..., 255 (224, 224, 192) for "void")."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def save_index_mask(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write a label map as a palette PNG with VOC's colours: viewers show colours, :func:`read_index_mask` (and VOC tools) read the indices. Labels above 255 go to a
    16-bit grayscale PNG instead."""
    mask = np.asarray(mask)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    if mask.size and (mask.max() > 255 or mask.min() < 0):
        Image.fromarray(mask.astype(np.uint16)).save(path)
        return
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_colormap().ravel().tolist())
    img.save(path)
