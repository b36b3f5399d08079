"""COCO-format detection dataset with strict, explicit input handling.

``CocoDetection`` reads a COCO json with :func:`mobilevision.coco_format.read_coco` (the reading shared
with evaluation: annotation ids renumbered, ``area`` / ``iscrowd`` defaulted, Roboflow's placeholder
category left out) and returns ``(image, target)`` pairs.

Input problems never produce a silently wrong sample, and every image is checked before training starts:

* ``file_name`` is relative to the image folder; subfolders and Windows separators (``train\\a.jpg``) work,
  a name that leaves the folder (absolute, ``../``) is a ``ValueError`` naming it;
* missing image files: one ``FileNotFoundError`` naming them all;
* image headers that cannot be read: one ``ImageDecodeError`` (an ``OSError``) naming them all; images
  that only fail to decode later (e.g. truncated) raise it naming the file when loaded;
* header size (after EXIF orientation) different from the json's ``width``/``height``: one
  ``ImageSizeMismatchError`` (a ``ValueError``) listing every such image.  COCO annotations refer to the
  *displayed* image, i.e. after applying the EXIF orientation; a swapped width/height usually means the
  json was written from the raw sensor orientation (Label Studio does so for phone photos);
* unknown image or category ids, malformed boxes: ``ValueError`` naming the annotation and the image;
* boxes partly outside their image: clipped and counted; boxes with zero / negative area after
  clipping or non-finite coordinates: dropped and counted; crowd boxes (``iscrowd=1``): left out
  of the training targets and counted.  One summary warning per dataset is logged and the counts
  are in ``dataset.stats``.

The classes (labels) are the file's categories, or a given label set (the training file's, a
checkpoint's), which the file's categories are matched to BY NAME: a validation file may use other ids.
:func:`training_categories` is the label set of a training file.

Grayscale, RGBA, palette, CMYK, 16-bit, ... images are converted to 8-bit RGB (see ``image_io``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO

from ..errors import UserError
from ..coco_format import read_coco
from .image_io import ImageDecodeError, check_files_exist, check_image_headers, load_rgb_image

__all__ = [
    "CocoDetection",
    "ImageDecodeError",
    "ImageSizeMismatchError",
    "load_coco",
    "load_rgb_image",
    "read_coco",
    "training_categories",
]

logger = logging.getLogger(__name__)


class ImageSizeMismatchError(ValueError):
    """The image size disagrees with the annotation file."""


def _quiet_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def load_coco(annotations: str | os.PathLike | Mapping | COCO, name: str | None = None) -> COCO:
    """A pycocotools ``COCO`` of the sanitized file (:func:`~mobilevision.coco_format.read_coco`)."""
    return _quiet_coco(read_coco(annotations, name))


def training_categories(data: Mapping[str, Any], drop_empty: bool = False,
                        name: str = "annotations") -> list[dict[str, Any]]:
    """The label set of a training file read by :func:`read_coco`: ``[{"id", "name"}, ...]`` sorted by id.

    Categories without (non-crowd) annotations are named in a warning -- the model cannot learn them --
    and left out with ``drop_empty``. ``name`` is what messages call the file.
    """
    counts = Counter(a["category_id"] for a in data["annotations"] if not a.get("iscrowd"))
    cats = sorted(data["categories"], key=lambda c: c["id"])
    empty = [c for c in cats if not counts[c["id"]]]
    if empty:
        logger.warning("%s: categories without training annotations: %s; %s", name,
                       ", ".join(f"{c['name']!r} (id {c['id']})" for c in empty),
                       "left out (drop_empty_categories)" if drop_empty else
                       "kept as classes the model cannot learn (drop_empty_categories=True leaves them out)")
    if drop_empty:
        cats = [c for c in cats if counts[c["id"]]]
        if not cats:
            raise UserError(f"{name}: no category has annotations")
    return [{"id": c["id"], "name": c["name"]} for c in cats]


def _image_path(images_dir: str, file_name: Any, where: str) -> str:
    """``images_dir`` joined with a relative ``file_name`` (``/`` or ``\\`` separators) that stays inside it."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise UserError(f"{where} has no file_name")
    rel = file_name.replace("\\", "/")
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or re.match(r"[A-Za-z]:", rel) or norm == ".." or norm.startswith("../"):
        raise UserError(f"{where}: file_name {file_name!r} points outside the image folder {images_dir} "
                         "(file names must be relative to it: no absolute paths, no '..')")
    return os.path.join(images_dir, *norm.split("/"))


def _size_mismatch_message(name: str, bad: list[tuple[str, tuple[int, int], tuple[int, int]]], total: int) -> str:
    lines = [f"{name}: {len(bad)} of {total} images differ in size from the annotation file (width x height, the "
             "image's with its EXIF orientation applied):"]
    swapped = 0
    for path, (fw, fh), (w, h) in bad:
        swap = (fw, fh) == (h, w)
        swapped += swap
        lines.append(f"  {path}: image {fw}x{fh}, annotation file {w}x{h}" + (" (swapped)" if swap else ""))
    if swapped:
        lines.append(
            f"{swapped} of them have width and height swapped: usually the annotation file gives the raw, un-rotated "
            "size of photos with an EXIF orientation tag (Label Studio's COCO export does this with phone photos). "
            "COCO sizes and boxes refer to the displayed image, EXIF orientation applied: if the boxes were drawn on "
            "the displayed image (as annotation tools show it), swap width and height of these images in the "
            "annotation file; if they were drawn on the raw image, remove the EXIF orientation tag from the files."
        )
    return "\n".join(lines)


class CocoDetection(torch.utils.data.Dataset):
    """COCO detection dataset.

    Args:
        images_dir: folder the images' ``file_name`` are relative to.
        annotations: path to the COCO json (or a dataset dict / pycocotools ``COCO``).
        transforms: optional callable ``(image, boxes, labels) -> (image, boxes, labels)`` with
            ``image`` HxWx3 uint8, ``boxes`` (N, 4) float32 xyxy pixels, ``labels`` (N,) int64
            (e.g. :class:`mobilevision.data.transforms.DetectionTransform`).
        categories: the label set, ``[{"id", "name"}, ...]`` in label order (default: the file's
            categories sorted by id).  Pass the training set's (:func:`training_categories`) to give a
            validation set the same labels: its categories are matched by name (by id where the label set
            has no names) and its annotations re-expressed in the label set's ids, so ``coco`` is the
            ground truth in the label set's ids.  A category of the file that has annotations and is not
            in the label set is a ``ValueError``, or, with ``skip_other_categories``, its annotations
            are left out (with a warning).
        cache_images: decode all images once up front and keep them in memory.
        check_files: check up front that every image exists and that its header size (EXIF orientation
            applied) is the json's ``width``/``height`` (default True).
        name: what messages call the annotation file (default: its path).

    Each item is ``(image, target)``: without transforms ``image`` is the HxWx3 uint8 numpy array,
    ``target = {"boxes": float32 (N, 4) xyxy, "labels": int64 (N,), "image_id": int,
    "orig_size": (h, w)}`` with boxes in the coordinates of the returned image.  Labels are
    contiguous ``0..C-1`` in label-set order; ``label_to_category_id[label]`` maps back, and
    ``category_id_in_file`` maps a label-set category id to this file's id.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        annotations: str | os.PathLike | Mapping | COCO,
        transforms: Callable[..., Any] | None = None,
        *,
        categories: Sequence[Mapping[str, Any]] | None = None,
        skip_other_categories: bool = False,
        cache_images: bool = False,
        check_files: bool = True,
        name: str | None = None,
    ) -> None:
        self.images_dir = os.fspath(images_dir)
        self.annotation_file = os.fspath(annotations) if isinstance(annotations, (str, os.PathLike)) else None
        self._name = name or self.annotation_file or "annotations"
        self.transforms = transforms
        data = read_coco(annotations, self._name)
        self.categories, data, self.category_id_in_file = self._label_set(data, categories, skip_other_categories)
        self.coco = _quiet_coco(data)
        self.label_to_category_id: list[int] = [c["id"] for c in self.categories]
        self.category_id_to_label: dict[int, int] = {c: i for i, c in enumerate(self.label_to_category_id)}
        self.category_names: list[str] = [c["name"] for c in self.categories]

        self.ids: list[int] = sorted(self.coco.imgs)
        self._files: list[str] = []
        self._sizes: list[tuple[int, int] | None] = []  # (h, w) from the json
        for img_id in self.ids:
            info = self.coco.imgs[img_id]
            self._files.append(_image_path(self.images_dir, info.get("file_name"), f"{self._name}: image id {img_id}"))
            w, h = info.get("width"), info.get("height")
            self._sizes.append((int(h), int(w)) if w and h else None)
        if check_files:
            self._check_images()
        else:
            missing = [i for i, size in enumerate(self._sizes) if size is None]
            where = f"{self._name} (images under {self.images_dir})"
            for i, (w, h) in zip(missing, check_image_headers([self._files[i] for i in missing], where)):
                self._sizes[i] = (h, w)

        self.stats = {"boxes": 0, "clipped": 0, "dropped_degenerate": 0, "crowd_ignored": 0, "images_without_boxes": 0}
        self._boxes: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._parse_annotations()

        self._cache: list[np.ndarray] | None = None
        if cache_images:
            self.cache_images()

    # ----------------------------------------------------------------------------- setup

    def _label_set(self, data: dict, categories: Sequence[Mapping[str, Any]] | None,
                   skip_other: bool) -> tuple[list[dict[str, Any]], dict, dict[int, int]]:
        """(label set, ``data`` in the label set's category ids, {label-set id: file id})."""
        file_cats = sorted(data["categories"], key=lambda c: c["id"])
        if categories is None:
            return [{"id": c["id"], "name": c["name"]} for c in file_cats], data, {c["id"]: c["id"] for c in file_cats}
        label_set = [{"id": int(c["id"]), "name": None if c.get("name") is None else str(c["name"])}
                     for c in categories]
        key = "name" if all(c["name"] is not None for c in label_set) else "id"  # ids: checkpoints without names
        index = {c[key]: c for c in label_set}
        if not label_set or len(index) != len(label_set) or len({c["id"] for c in label_set}) != len(label_set):
            raise UserError(f"label set with repeated or no categories: {label_set}")
        counts = Counter(a["category_id"] for a in data["annotations"])
        to_set: dict[int, int] = {}  # file id -> label-set id
        others = []
        for c in file_cats:
            if c[key] in index:
                to_set[c["id"]] = index[c[key]]["id"]
                index[c[key]]["name"] = c["name"]  # (only changes a label set without names)
            elif counts[c["id"]]:
                others.append(c)
        if others:
            what = ", ".join(f"{c['name']!r} (id {c['id']}, {counts[c['id']]} annotations)" for c in others)
            if not skip_other:
                known = ", ".join(repr(c[key]) for c in label_set)
                raise UserError(f"{self._name}: categories {what} are not training categories (the classes are "
                                 f"{known}); categories are matched by {key}")
            logger.warning("%s: left out the annotations of %s: not training categories", self._name, what)
        for c in label_set:
            if c["name"] is None:
                c["name"] = str(c["id"])
        anns = [dict(a, category_id=to_set[a["category_id"]])
                for a in data["annotations"] if a["category_id"] in to_set]
        data = {**data, "annotations": anns, "categories": [dict(c) for c in label_set]}
        return label_set, data, {v: k for k, v in to_set.items()}

    def _check_images(self) -> None:
        """Every image exists, has a readable header and the json's size (all problems in one error)."""
        where = f"{self._name} (images under {self.images_dir})"
        check_files_exist(self._files, where)
        sizes = check_image_headers(self._files, where)
        bad = []
        for i, (w, h) in enumerate(sizes):
            if self._sizes[i] is None:  # no width/height in the json: the header's
                self._sizes[i] = (h, w)
            elif self._sizes[i] != (h, w):
                bad.append((self._files[i], (w, h), self._sizes[i][::-1]))
        if bad:
            raise ImageSizeMismatchError(_size_mismatch_message(self._name, bad, len(sizes)))

    def _parse_annotations(self) -> None:
        clipped_ids, dropped_ids = [], []
        for i, img_id in enumerate(self.ids):
            h, w = self._sizes[i]
            boxes, labels = [], []
            for ann in self.coco.imgToAnns.get(img_id, []):
                if ann["iscrowd"]:
                    self.stats["crowd_ignored"] += 1
                    continue
                self.stats["boxes"] += 1
                x, y, bw, bh = ann["bbox"]
                box = np.array([x, y, x + bw, y + bh], dtype=np.float64)
                if not np.isfinite(box).all():
                    self.stats["dropped_degenerate"] += 1
                    dropped_ids.append(ann["id"])
                    continue
                clipped = np.clip(box, 0.0, [w, h, w, h])
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    self.stats["dropped_degenerate"] += 1
                    dropped_ids.append(ann["id"])
                    continue
                if not np.array_equal(clipped, box):
                    self.stats["clipped"] += 1  # kept, clipped to the image
                    clipped_ids.append(ann["id"])
                boxes.append(clipped)
                labels.append(self.category_id_to_label[ann["category_id"]])
            if not boxes:
                self.stats["images_without_boxes"] += 1
            self._boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
            self._labels.append(np.asarray(labels, dtype=np.int64))
        if clipped_ids or dropped_ids:
            logger.warning(
                "%s: clipped %d box(es) extending outside their image (e.g. annotations #%s of the file); dropped %d "
                "box(es) with zero/negative area after clipping or non-finite coordinates (e.g. annotations #%s)",
                self._name,
                len(clipped_ids),
                sorted(clipped_ids)[:5],
                len(dropped_ids),
                sorted(dropped_ids)[:5],
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
