"""Image decoding shared by the detection and classification datasets.

``load_rgb_image`` never returns a silently wrong image: a missing file raises
``FileNotFoundError`` and an undecodable one ``ImageDecodeError``, both naming the file.
Grayscale, RGBA, palette, CMYK, ... images are converted to RGB (alpha is discarded) and the EXIF
orientation is applied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "check_files_exist", "is_image_file", "missing_files", "load_rgb_image"]

#: File extensions treated as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_EXIF_ORIENTATION = 0x0112
# Orientations 5-8 swap width and height.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


class ImageDecodeError(OSError):
    """An image file exists but cannot be decoded."""


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with an image extension (``IMAGE_EXTENSIONS``)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def load_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to an HxWx3 uint8 RGB array with the EXIF orientation applied.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded (the message names the file).
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # avoids PIL's palette-transparency warning
            if img.mode != "RGB":
                img = img.convert("RGB")
            else:
                img.load()
            arr = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - convert("RGB") guarantees this
        raise ImageDecodeError(f"cannot decode image {path}: unexpected array shape {arr.shape}")
    return arr


def missing_files(files: Sequence[str]) -> list[str]:
    """The paths of ``files`` that do not exist (one directory listing per folder)."""
    listing: dict[str, set[str]] = {}
    missing = []
    for path in files:
        folder, name = os.path.split(path)
        if folder not in listing:
            try:
                listing[folder] = {e.name for e in os.scandir(folder or ".")}
            except OSError:
                listing[folder] = set()
        if name not in listing[folder] and not os.path.isfile(path):
            missing.append(path)
    return missing


def check_files_exist(files: Sequence[str], what: str) -> None:
    """Raise ``FileNotFoundError`` naming the missing files (one directory listing per folder)."""
    missing = missing_files(files)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{what}: {len(missing)} of {len(files)} image files not found: {shown}")
