"""Reading COCO detection files as annotation tools write them; shared by training data and evaluation.

:func:`read_coco` turns a COCO file written by Roboflow, CVAT, Label Studio, by hand or merged from
several exports into one clean dataset dict that pycocotools and faster-coco-eval score correctly, so the
data module, ``COCOEvaluator`` and ``mobilevision eval`` all see the same ground truth:

* annotation ids are never trusted: they are renumbered 1..N in file order (the COCO API uses them as
  match markers, so an id 0 reads as "unmatched" and a repeated id keeps one annotation of the id, both
  silently lowering AP); ``annotation #k`` in messages is the k-th annotation of the file;
* an image listed twice with the same file name and size (files merged) is one image;
* ``area`` defaults to the box area w * h and ``iscrowd`` to 0 (pycocotools needs both);
* Roboflow's placeholder category (no annotations, its name is the supercategory of the other
  categories) is left out: it is the dataset's name, not a class;
* anything that cannot be scored correctly is a ``ValueError`` naming the file and the entry: an image
  id used by different images, conflicting category entries, annotations of unknown images or
  categories, malformed boxes.

Image ids and category ids are kept: results files refer to them.

This module uses nothing of mobilevision, so ``mobilevision.data`` and ``mobilevision.evaluation`` both
import it without depending on each other.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .errors import UserError, first_few

__all__ = ["read_coco"]

logger = logging.getLogger(__name__)


def _int_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise UserError(f"{where}: id {value!r} is not an integer")
    return int(value)


def _load(source: Any, name: str | None) -> tuple[Mapping, str]:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"annotation file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"annotation file {path} is not valid json: {e}") from e
        return data, name or path
    if isinstance(source, Mapping):
        return source, name or "annotations"
    if isinstance(getattr(source, "dataset", None), Mapping):  # pycocotools / faster-coco-eval COCO
        return source.dataset, name or "annotations"
    raise TypeError(
        "COCO annotations must be a path, a dataset dict or a COCO object (with a 'dataset' dict), "
        f"got {type(source).__name__}"
    )


def read_coco(source: Any, name: str | None = None) -> dict:
    """The sanitized COCO dataset dict of ``source`` (a json path, a dataset dict or a COCO object).

    ``name`` is what messages call the file (default: its path). The input is never modified: the
    result holds new image, annotation and category dicts (other top-level entries are shared). See the
    module docstring for what is renumbered, defaulted, dropped or refused.
    """
    data, name = _load(source, name)
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise UserError(f"{name}: not a COCO detection file (no 'images' list)")
    annotations = data.get("annotations", [])
    categories = data.get("categories")
    if not isinstance(annotations, list):
        raise UserError(f"{name}: 'annotations' is not a list")
    if not isinstance(categories, list) or not categories:
        raise UserError(f"{name}: no categories defined (a non-empty 'categories' list is needed)")

    images: dict[int, dict] = {}
    conflicts = []
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise UserError(f"{name}: image #{i + 1} has no id: {img!r}")
        img = dict(img)
        img["id"] = _int_id(img["id"], f"{name}: image #{i + 1}")
        for key in ("width", "height"):
            v = img.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):  # 0: unknown
                raise UserError(f"{name}: image id {img['id']} ({img.get('file_name')}) has {key} {v!r}")
        other = images.setdefault(img["id"], img)  # the same image listed twice (merged files) is one image
        if any(other.get(k) != img.get(k) for k in ("file_name", "width", "height")):
            conflicts.append(f"{img['id']} ({other.get('file_name')}, {img.get('file_name')})")
    if conflicts:
        raise UserError(f"{name}: image ids used by different images: {first_few(conflicts, 10)}; every image "
                        "needs its own id (merged exports must renumber the images of each part and their "
                        "annotations' image_id)")
    files = {k: img.get("file_name", f"image id {k}") for k, img in images.items()}

    cats: dict[int, dict] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat:
            raise UserError(f"{name}: category #{i + 1} has no id: {cat!r}")
        cat = dict(cat)
        cat["id"] = _int_id(cat["id"], f"{name}: category #{i + 1}")
        cat["name"] = str(cat.get("name", cat["id"]))
        other = cats.setdefault(cat["id"], cat)
        if other["name"] != cat["name"]:
            raise UserError(f"{name}: category id {cat['id']} is both {other['name']!r} and {cat['name']!r}")
    names = Counter(c["name"] for c in cats.values())
    if any(n > 1 for n in names.values()):
        twice = {n: [c["id"] for c in cats.values() if c["name"] == n] for n, k in names.items() if k > 1}
        raise UserError(f"{name}: category names used by several ids: {twice}")

    def where(i: int, ann: Mapping) -> str:
        return f"{name}: annotation id {ann.get('id')} (#{i + 1} in the file, image {files.get(ann.get('image_id'))})"

    anns = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise UserError(f"{name}: annotation #{i + 1} is not an object: {ann!r}")
        image_id, cat_id, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
        if not isinstance(image_id, (int, float)) or isinstance(image_id, bool) or image_id not in files:
            raise UserError(f"{name}: annotation id {ann.get('id')} (#{i + 1} in the file) refers to image_id "
                             f"{image_id!r} which is not in 'images'")
        if not isinstance(cat_id, (int, float)) or isinstance(cat_id, bool) or cat_id not in cats:
            raise UserError(f"{where(i, ann)} has unknown category_id {cat_id!r}; known ids: {sorted(cats)}")
        try:
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise TypeError
            bbox = [float(v) for v in bbox]
        except (TypeError, ValueError):
            raise UserError(f"{where(i, ann)} has a malformed bbox {bbox!r}; expected [x, y, width, height]") from None
        ann = dict(ann, id=i + 1, image_id=int(image_id), category_id=int(cat_id), bbox=bbox)
        if ann.get("area") is None:
            area = bbox[2] * bbox[3]
            ann["area"] = area if math.isfinite(area) else 0.0
        ann["iscrowd"] = int(ann.get("iscrowd") or 0)
        anns.append(ann)

    # Roboflow's placeholder: no annotations, and its name is the supercategory of (other) categories.
    used = {a["category_id"] for a in anns}
    supercategories = Counter(c.get("supercategory") for c in cats.values())
    placeholders = [c for c in cats.values() if c["id"] not in used
                    and supercategories[c["name"]] > (c.get("supercategory") == c["name"])]
    if placeholders:
        logger.info("%s: left out the placeholder category %s (no annotations; the supercategory of the others)",
                    name, ", ".join(f"{c['name']!r} (id {c['id']})" for c in placeholders))
    kept = [c for c in cats.values() if c not in placeholders]
    if not kept:
        raise UserError(f"{name}: no categories defined besides the placeholder {placeholders[0]['name']!r}")
    return {**data, "images": list(images.values()), "annotations": anns, "categories": kept}
