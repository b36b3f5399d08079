"""Image decoding shared by the detection and classification datasets.

``load_rgb_image`` never returns a silently wrong image: a missing file raises
``FileNotFoundError`` and an undecodable one ``ImageDecodeError``, both naming the file.
Grayscale, RGBA, palette, CMYK, ... images are converted to RGB (alpha is discarded) and the EXIF
orientation is applied. Images of more than 8 bits are scaled to 8 bits, never saturated: 16-bit ones
keep their high byte (``>> 8``, what Pillow itself does with 16-bit RGB PNGs, so 16-bit grayscale and RGB
agree), float ones must lie in [0, 1] (``* 255``); any other float or 32-bit integer image is refused
with an ``ImageDecodeError`` naming the file.

``read_image_size`` gives the displayed size (EXIF orientation applied) from the file header alone; a PNG's
``eXIf`` chunk counts wherever it lies (found by skipping over the chunks, not by decoding), so the header and the
decoded image always agree. :func:`check_image_headers` reads every header of a file list up front (threads), so
that a file that cannot be read is an error naming it before training starts, not in a worker mid-epoch.

Phone formats: HEIC / HEIF (iPhone) through pillow-heif, AVIF and WebP through Pillow itself. pillow-heif applies
the EXIF orientation while decoding (and reports orientation 1), Pillow's AVIF / JPEG / PNG / WebP readers leave it
to :func:`load_rgb_image`; both give the displayed image.

Pillow refuses images of more than ``Image.MAX_IMAGE_PIXELS`` (about 179 megapixels) as decompression bombs; set
``MOBILEVISION_MAX_IMAGE_PIXELS`` (a number, or ``none`` for no limit) to read larger ones.

:func:`walk_image_files` is the one folder walker of the project: recursive, sorted, hidden files and folders
(``.git``, macOS ``._x.jpg``) left out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from ..errors import ImageDecodeError, UserError, first_few
from ..files import is_hidden, walk_files

pillow_heif.register_heif_opener()  # .heic / .heif; Pillow reads .avif itself


def _max_image_pixels() -> int | None:
    value = os.environ.get("MOBILEVISION_MAX_IMAGE_PIXELS")
    if value is None:
        return Image.MAX_IMAGE_PIXELS
    if value.strip().lower() in ("none", "0", ""):
        return None
    try:
        return int(float(value))
    except ValueError:
        raise UserError(f"MOBILEVISION_MAX_IMAGE_PIXELS must be a number of pixels or 'none', got {value!r}") from None


Image.MAX_IMAGE_PIXELS = _max_image_pixels()

__all__ = ["IMAGE_EXTENSIONS", "TRANSPOSING_ORIENTATIONS", "ImageDecodeError", "check_files_exist",
           "check_image_headers", "is_hidden", "is_image_file", "load_rgb_image", "missing_files", "read_image_header",
           "read_image_size", "walk_files", "walk_image_files"]

#: File extensions treated as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif")

_EXIF_ORIENTATION = 0x0112
#: EXIF orientations 5-8 swap width and height.
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with an image extension (``IMAGE_EXTENSIONS``)."""
    return not is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def walk_image_files(folder: str | os.PathLike, skipped: list[str] | None = None) -> list[str]:
    """The image files under ``folder`` (:func:`walk_files` with :func:`is_image_file`)."""
    return list(walk_files(folder, is_image_file, skipped))


def _high_depth_to_uint8(img: Image.Image, path: str) -> np.ndarray | None:
    """HxW uint8 of a 16-bit / 32-bit integer / float single-channel image; None for other modes."""
    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return None
    arr = np.asarray(img)
    if img.mode == "F":
        if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
            raise ImageDecodeError(f"cannot decode image {path}: float image with values outside [0, 1] "
                                   f"({np.nanmin(arr):g} .. {np.nanmax(arr):g}); convert it to 8 bits")
        return np.rint(arr * 255.0).astype(np.uint8)
    # "I;16*": 16 bits. Pillow also opens 16-bit PGM (and 16-bit PNG in old versions) as 32-bit "I".
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
        raise ImageDecodeError(f"cannot decode image {path}: 32-bit integer image with values outside 16 bits "
                               f"({arr.min()} .. {arr.max()}); convert it to 8 bits")
    return (arr.astype(np.uint32) >> 8).astype(np.uint8)


def load_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to an HxWx3 uint8 RGB array with the EXIF orientation applied.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded, or is a float / 32-bit image that has no faithful
            8-bit version (the message names the file).
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
            gray = _high_depth_to_uint8(img, path)
            if gray is not None:
                return np.repeat(gray[:, :, None], 3, axis=2)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # avoids PIL's palette-transparency warning
            if img.mode != "RGB":
                img = img.convert("RGB")
            else:
                img.load()
            arr = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - convert("RGB") guarantees this
        raise ImageDecodeError(f"cannot decode image {path}: unexpected array shape {arr.shape}")
    return arr


def _png_exif_orientation(path: str) -> int | None:
    """The orientation of a PNG's ``eXIf`` chunk wherever it lies (Pillow's decoder finds one after the image
    data too), read by skipping from chunk to chunk without decompressing; None when the file has none."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                exif = Image.Exif()
                exif.load(f.read(length))
                return int(exif.get(_EXIF_ORIENTATION, 1) or 1)
            if kind == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)  # data + CRC


def read_image_header(path: str | os.PathLike) -> tuple[tuple[int, int], int]:
    """((width, height) as stored, EXIF orientation (1 when none)) from the file header only (for a PNG, the
    chunk list as well: an ``eXIf`` chunk after the image data counts, as it does when decoding).

    Raises ``FileNotFoundError`` / ``ImageDecodeError`` naming the file.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            # Image.getexif, not the PNG override, which decodes the whole file to look for a late eXIf chunk.
            orientation = int(Image.Image.getexif(img).get(_EXIF_ORIENTATION, 1) or 1)
            if img.format == "PNG" and "exif" not in img.info:
                orientation = _png_exif_orientation(path) or orientation
            return img.size, orientation
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot read the image header of {path}: {type(e).__name__}: {e}") from e


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the displayed image (EXIF orientation applied), from the file header only.

    Raises ``FileNotFoundError`` / ``ImageDecodeError`` naming the file.
    """
    (w, h), orientation = read_image_header(path)
    return (h, w) if orientation in TRANSPOSING_ORIENTATIONS else (w, h)


def check_image_headers(files: Sequence[str], what: str) -> list[tuple[int, int]]:
    """Displayed sizes (width, height) of ``files``, read by threads from their headers; raises one
    ``ImageDecodeError`` naming every file whose header cannot be read (``what`` says where they come from), and
    ``FileNotFoundError`` for missing files. A file whose header reads but whose data is damaged is still an
    ``ImageDecodeError`` naming it when it is decoded."""

    def size(path: str) -> tuple[int, int] | str:
        try:
            return read_image_size(path)
        except FileNotFoundError:
            return f"{path}: file not found"
        except OSError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(files)))) as pool:
        sizes = list(pool.map(size, files))
    bad = [s for s in sizes if isinstance(s, str)]
    if bad:
        shown = first_few(bad, 20, sep="\n  ")
        raise ImageDecodeError(f"{what}: {len(bad)} of {len(files)} images cannot be read:\n  {shown}")
    return sizes  # type: ignore[return-value]


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
        shown = first_few(missing)
        raise FileNotFoundError(f"{what}: {len(missing)} of {len(files)} image files not found: {shown}")
