"""COCO-format detection dataset with strict, explicit input handling.

``CocoDetection`` indexes a COCO json with pycocotools and returns ``(image, target)`` pairs.

Input problems never produce a silently wrong sample:

* missing image files: ``FileNotFoundError`` naming them, raised when the dataset is built
  (all files are checked up front, not mid-epoch);
* undecodable / corrupt images: ``ImageDecodeError`` (an ``OSError``) naming the file, raised when
  the image is loaded;
* decoded size (after EXIF orientation) different from the json's ``width``/``height``:
  ``ImageSizeMismatchError`` (a ``ValueError``) naming the file.  COCO annotations refer to the
  *displayed* image, i.e. after applying the EXIF orientation, so the json must hold the
  transposed size; a swapped width/height usually means the json was written from the raw
  sensor orientation, and the boxes cannot be trusted either;
* unknown category id, malformed bbox or annotation pointing at a missing image: ``ValueError``
  naming the annotation id and the image file;
* boxes partly outside their image: clipped and counted; boxes with zero / negative area after
  clipping or non-finite coordinates: dropped and counted; crowd boxes (``iscrowd=1``): left out
  of the training targets and counted.  One summary warning per dataset is logged and the counts
  are in ``dataset.stats``.

Grayscale, RGBA, palette, CMYK, ... images are converted to RGB (alpha is discarded).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from .image_io import _EXIF_ORIENTATION, _TRANSPOSING_ORIENTATIONS, ImageDecodeError, check_files_exist, load_rgb_image

__all__ = [
    "CocoDetection",
    "ImageDecodeError",
    "ImageSizeMismatchError",
    "load_coco",
    "load_rgb_image",
]

logger = logging.getLogger(__name__)

class ImageSizeMismatchError(ValueError):
    """The decoded image size disagrees with the annotation file."""


def load_coco(annotations: str | os.PathLike | dict | COCO) -> COCO:
    """A pycocotools ``COCO`` from a path, a parsed dict or an existing object (quietly)."""
    if isinstance(annotations, COCO):
        return annotations
    coco = COCO()
    if isinstance(annotations, dict):
        dataset = annotations
    else:
        path = os.fspath(annotations)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"annotation file not found: {path}")
        try:
            with open(path) as f:
                dataset = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"annotation file {path} is not valid json: {e}") from e
    if not isinstance(dataset, dict) or "images" not in dataset:
        what = "annotations" if isinstance(annotations, dict) else os.fspath(annotations)
        raise ValueError(f"{what}: not a COCO detection file (no 'images' list)")
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _header_size(path: str) -> tuple[int, int]:
    """(width, height) of the displayed image from the header only (EXIF orientation applied)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING_ORIENTATIONS:
                w, h = h, w
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"cannot read image header of {path}: {type(e).__name__}: {e}") from e
    return w, h


class CocoDetection(torch.utils.data.Dataset):
    """COCO detection dataset.

    Args:
        images_dir: folder the images' ``file_name`` are relative to.
        annotations: path to the COCO json (or a parsed dict / pycocotools ``COCO``).
        transforms: optional callable ``(image, boxes, labels) -> (image, boxes, labels)`` with
            ``image`` HxWx3 uint8, ``boxes`` (N, 4) float32 xyxy pixels, ``labels`` (N,) int64
            (e.g. :class:`mobilevision.data.transforms.DetectionTransform`).
        category_ids: category ids defining the label order (default: all categories of the file,
            sorted by id).  Pass the training set's ids to give a validation set the same mapping.
        cache_images: decode all images once up front and keep them in memory.
        check_files: check up front that every image file exists (default True).

    Each item is ``(image, target)``: without transforms ``image`` is the HxWx3 uint8 numpy array,
    ``target = {"boxes": float32 (N, 4) xyxy, "labels": int64 (N,), "image_id": int,
    "orig_size": (h, w)}`` with boxes in the coordinates of the returned image.  Labels are
    contiguous ``0..C-1`` in ascending category-id order; ``label_to_category_id[label]`` maps back.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        annotations: str | os.PathLike | dict | COCO,
        transforms: Callable[..., Any] | None = None,
        *,
        category_ids: Sequence[int] | None = None,
        cache_images: bool = False,
        check_files: bool = True,
    ) -> None:
        self.images_dir = os.fspath(images_dir)
        self.annotation_file = os.fspath(annotations) if isinstance(annotations, (str, os.PathLike)) else None
        self.coco = load_coco(annotations)
        self.transforms = transforms
        self._name = os.path.basename(self.annotation_file) if self.annotation_file else "annotations"

        cats = {int(c["id"]): c for c in self.coco.dataset.get("categories", [])}
        if category_ids is None:
            category_ids = sorted(cats)
        else:
            category_ids = [int(c) for c in category_ids]
            missing = sorted(set(category_ids) - set(cats))
            if missing and cats:
                raise ValueError(f"{self._name}: category ids {missing} are not in the file's categories")
        if not category_ids:
            raise ValueError(f"{self._name}: no categories defined")
        if len(set(category_ids)) != len(category_ids):
            raise ValueError(f"{self._name}: duplicate category ids {category_ids}")
        self.label_to_category_id: list[int] = list(category_ids)
        self.category_id_to_label: dict[int, int] = {c: i for i, c in enumerate(category_ids)}
        self.category_names: list[str] = [str(cats.get(c, {}).get("name", c)) for c in category_ids]

        self.ids: list[int] = sorted(int(i) for i in self.coco.imgs)
        self._files: list[str] = []
        self._sizes: list[tuple[int, int] | None] = []  # (h, w) from the json
        for img_id in self.ids:
            info = self.coco.imgs[img_id]
            if "file_name" not in info:
                raise ValueError(f"{self._name}: image id {img_id} has no file_name")
            self._files.append(os.path.join(self.images_dir, info["file_name"]))
            w, h = info.get("width"), info.get("height")
            self._sizes.append((int(h), int(w)) if w and h else None)

        if check_files:
            check_files_exist(self._files, f"{self._name} (images under {self.images_dir})")
        for i, size in enumerate(self._sizes):
            if size is None:  # no width/height in the json: read the header once
                w, h = _header_size(self._files[i])
                self._sizes[i] = (h, w)

        self.stats = {"boxes": 0, "clipped": 0, "dropped_degenerate": 0, "crowd_ignored": 0, "images_without_boxes": 0}
        self._boxes: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._parse_annotations()

        self._cache: list[np.ndarray] | None = None
        if cache_images:
            self.cache_images()

    # ----------------------------------------------------------------------------- setup

    def _parse_annotations(self) -> None:
        index = {img_id: i for i, img_id in enumerate(self.ids)}
        unknown_images = [a for a in self.coco.anns.values() if int(a.get("image_id", -1)) not in index]
        if unknown_images:
            a = unknown_images[0]
            raise ValueError(
                f"{self._name}: annotation id {a.get('id')} refers to image_id {a.get('image_id')} "
                f"which is not in 'images' ({len(unknown_images)} such annotations)"
            )
        clipped_ids, dropped_ids = [], []
        for i, img_id in enumerate(self.ids):
            h, w = self._sizes[i]
            boxes, labels = [], []
            for ann in self.coco.imgToAnns.get(img_id, []):
                cat = ann.get("category_id")
                if cat not in self.category_id_to_label:
                    raise ValueError(
                        f"{self._name}: annotation id {ann.get('id')} (image {self._files[i]}) has unknown "
                        f"category_id {cat!r}; known ids: {self.label_to_category_id}"
                    )
                bbox = ann.get("bbox")
                if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                    raise ValueError(
                        f"{self._name}: annotation id {ann.get('id')} (image {self._files[i]}) has a malformed "
                        f"bbox {bbox!r}; expected [x, y, width, height]"
                    )
                if ann.get("iscrowd", 0):
                    self.stats["crowd_ignored"] += 1
                    continue
                self.stats["boxes"] += 1
                x, y, bw, bh = (float(v) for v in bbox)
                box = np.array([x, y, x + bw, y + bh], dtype=np.float64)
                if not np.isfinite(box).all():
                    self.stats["dropped_degenerate"] += 1
                    dropped_ids.append(ann.get("id"))
                    continue
                clipped = np.clip(box, 0.0, [w, h, w, h])
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    self.stats["dropped_degenerate"] += 1
                    dropped_ids.append(ann.get("id"))
                    continue
                if not np.array_equal(clipped, box):
                    self.stats["clipped"] += 1  # kept, clipped to the image
                    clipped_ids.append(ann.get("id"))
                boxes.append(clipped)
                labels.append(self.category_id_to_label[cat])
            if not boxes:
                self.stats["images_without_boxes"] += 1
            self._boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
            self._labels.append(np.asarray(labels, dtype=np.int64))
        if clipped_ids or dropped_ids:
            logger.warning(
                "%s: clipped %d box(es) extending outside their image (e.g. annotation ids %s); dropped %d box(es) "
                "with zero/negative area after clipping or non-finite coordinates (e.g. annotation ids %s)",
                self._name,
                len(clipped_ids),
                clipped_ids[:5],
                len(dropped_ids),
                dropped_ids[:5],
            )

    def cache_images(self, num_threads: int | None = None) -> None:
        """Decode every image now and keep it in memory (validates all images as a side effect)."""
        if self._cache is not None:
            return
        num_threads = num_threads or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            self._cache = list(pool.map(self._decode, range(len(self.ids))))

    # ----------------------------------------------------------------------------- access

    @property
    def num_classes(self) -> int:
        return len(self.label_to_category_id)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> str:
        return self._files[index]

    def _decode(self, index: int) -> np.ndarray:
        path = self._files[index]
        image = load_rgb_image(path)
        h, w = self._sizes[index]
        if image.shape[:2] != (h, w):
            hint = ""
            if image.shape[:2] == (w, h):
                hint = (
                    " (width and height are swapped: the annotation file probably describes the raw, un-rotated "
                    "image while the file has an EXIF orientation tag; annotations must refer to the displayed image)"
                )
            raise ImageSizeMismatchError(
                f"image {path}: decoded size (after EXIF orientation) is {image.shape[1]}x{image.shape[0]} (w x h) "
                f"but {self._name} says {w}x{h}{hint}"
            )
        return image

    def load_image(self, index: int) -> np.ndarray:
        """HxWx3 uint8 RGB image ``index`` (from the cache when enabled)."""
        if self._cache is not None:
            return self._cache[index]
        return self._decode(index)

    def get_annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4) float32 xyxy in original pixels, labels (N,) int64), crowd boxes excluded."""
        return self._boxes[index].copy(), self._labels[index].copy()

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image = self.load_image(index)
        boxes, labels = self.get_annotations(index)
        orig_size = tuple(image.shape[:2])
        if self.transforms is not None:
            image, boxes, labels = self.transforms(image, boxes, labels)
        else:
            boxes, labels = torch.from_numpy(boxes), torch.from_numpy(labels)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": self.ids[index],
            "orig_size": orig_size,
        }
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._name}: {len(self)} images, {self.num_classes} classes, "
            f"{sum(len(b) for b in self._boxes)} boxes, stats={self.stats})"
        )
