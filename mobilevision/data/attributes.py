"""Multi-label attribute data: the CelebA layout, a CSV of 0 / 1 / unknown columns, the embedded glyph attributes.

Batches are ``(images float32 [B, 3, S, S], labels float32 [B, A])`` with labels 1 (present), 0 (absent) and
:data:`UNKNOWN` (-1: not annotated; left out of the loss and the metrics). The image pipelines are those of
classification (:mod:`mobilevision.data.classification`).

Layouts (``dataset``):

* ``"glyph_attributes"`` (embedded, generated on first use; :mod:`mobilevision.data.glyph_attributes`);
* ``"csv"``: ``train_csv`` / ``val_csv`` with a ``file`` column (a path relative to ``image_root``, default the
  CSV's folder) and one column per attribute holding ``1``, ``0`` or nothing (unknown); ``1.0`` / ``0.0`` (as
  pandas writes columns with gaps) are read too. The validation file must have the training file's attributes
  (in any order);
* ``"celeba"``: CelebA as published under ``root``: ``list_attr_celeba.txt`` (image count, the 40 attribute names,
  then ``000001.jpg -1 1 ...`` with -1 / 1), ``list_eval_partition.txt`` (``000001.jpg 0``: 0 train, 1 val,
  2 test) and the images in ``img_align_celeba/``; ``celeba_val_partition`` 2 evaluates on the test split.

Bad input is an error naming the file and line before training: a value that is not one of those above, a row
with too few or too many columns, a file listed twice, an attribute column named twice, a missing image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError, first_few
from ..files import csv_rows
from ._datamodule import TrainValDataModule
from ._generated import embedded_root
from .classification import CLASSIFICATION_AUGMENTS, classification_eval_transforms, classification_train_transforms
from .glyph_attributes import GLYPH_ATTRIBUTES, ensure_glyph_attributes_dataset
from .image_io import check_files_exist, check_image_headers, load_rgb_image, walk_image_files
from .transforms import resolve_crop, resolve_normalization

__all__ = ["ATTRIBUTE_DATASETS", "UNKNOWN", "AttributeSamples", "AttributesDataModule", "AttributesDataset",
           "read_attribute_csv", "read_celeba"]

logger = logging.getLogger(__name__)

ATTRIBUTE_DATASETS = ("glyph_attributes", "csv", "celeba")
UNKNOWN = -1
_CSV_VALUES = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "": UNKNOWN}
_CELEBA_VALUES = {"1": 1, "-1": 0, "0": UNKNOWN}
_FILE_COLUMNS = ("file", "filename", "image", "image_path")


@dataclass
class AttributeSamples:
    """Image files, their labels ``int8 [N, A]`` (1 / 0 / :data:`UNKNOWN`) and the attribute names."""

    files: list[str]
    labels: np.ndarray
    names: list[str]
    source: str


def read_attribute_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                       names: Sequence[str] | None = None) -> AttributeSamples:
    """Read a ``file`` + attribute columns CSV (see the module docstring). ``names``: the attributes to read, in
    this order (a validation file read with the training file's names); by default the file's own columns."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"attribute CSV not found: {path}")
    root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    header, rows, bad = csv_rows(path)
    if not header:
        raise UserError(f"{path}: empty file (expected a header: file,<attribute>,...)")
    file_col = next((i for i, h in enumerate(header) if h.lower() in _FILE_COLUMNS), None)
    if file_col is None:
        raise UserError(f"{path}: no file column in the header {header[:8]} (expected one of {', '.join(_FILE_COLUMNS)})")
    columns = [h for i, h in enumerate(header) if i != file_col]
    if not columns:
        raise UserError(f"{path}: no attribute columns next to {header[file_col]!r}")
    repeated = sorted({h for h in columns if columns.count(h) > 1})
    if repeated:
        raise UserError(f"{path}: attribute column(s) named twice: {', '.join(repeated)}")
    names = list(columns) if names is None else list(names)
    missing = [n for n in names if n not in header]
    if missing:
        raise UserError(f"{path}: no column for the attribute(s) {first_few(missing)} (its columns: "
                        f"{first_few(columns)})")
    index = [header.index(n) for n in names]
    files, labels, seen = [], [], {}
    for line, row in rows:
        name = row[file_col].strip()
        if not name:
            bad.append(f"line {line}: no file name")
            continue
        if name in seen:
            bad.append(f"line {line}: {name} is listed again (first on line {seen[name]})")
            continue
        seen[name] = line
        values = []
        for i in index:
            v = _CSV_VALUES.get(row[i].strip())
            if v is None:
                bad.append(f"line {line}, column {header[i]!r}: {row[i]!r} is not 1, 0 or empty (unknown)")
                break
            values.append(v)
        else:
            files.append(os.path.join(root, name))
            labels.append(values)
    if bad:
        raise UserError(f"{path}: {len(bad)} bad row(s): {first_few(bad, 5, sep='; ')}")
    if not files:
        raise UserError(f"{path}: no rows")
    return AttributeSamples(files, np.asarray(labels, np.int8).reshape(len(files), len(names)), names, path)


def read_celeba(root: str | os.PathLike, partition: int) -> AttributeSamples:
    """The CelebA images of ``partition`` (0 train, 1 val, 2 test) under ``root`` with their 40 attributes
    (-1 -> 0, 1 -> 1)."""
    root = os.fspath(root)
    attr_file = os.path.join(root, "list_attr_celeba.txt")
    part_file = os.path.join(root, "list_eval_partition.txt")
    for f in (attr_file, part_file):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"CelebA file not found: {f} (expected list_attr_celeba.txt, "
                                    "list_eval_partition.txt and img_align_celeba/ under the root)")
    with open(attr_file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise UserError(f"{attr_file}: line 1 must be the image count, line 2 the attribute names")
    count, names = int(lines[0]), lines[1].split()
    body = [ln for ln in lines[2:] if ln.strip()]
    if len(body) != count:
        raise UserError(f"{attr_file}: line 1 says {count} images, the file lists {len(body)}")
    parts: dict[str, int] = {}
    with open(part_file, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise UserError(f"{part_file}, line {line}: expected '<image> 0|1|2', got {text.strip()!r}")
            parts[fields[0]] = int(fields[1])
    files, labels, bad = [], [], []
    for line, text in enumerate(body, start=3):
        fields = text.split()
        if len(fields) != len(names) + 1:
            bad.append(f"line {line}: {len(fields) - 1} values for {len(names)} attributes")
            continue
        values = [_CELEBA_VALUES.get(v) for v in fields[1:]]
        if None in values:
            j = values.index(None)
            bad.append(f"line {line}, attribute {names[j]!r}: {fields[1 + j]!r} is not -1 or 1")
            continue
        if fields[0] not in parts:
            bad.append(f"line {line}: {fields[0]} has no partition in {os.path.basename(part_file)}")
            continue
        if parts[fields[0]] == partition:
            files.append(os.path.join(root, "img_align_celeba", fields[0]))
            labels.append(values)
    if bad:
        raise UserError(f"{attr_file}: {len(bad)} bad row(s): {first_few(bad, 5, sep='; ')}")
    if not files:
        raise UserError(f"{part_file}: no image in partition {partition}")
    return AttributeSamples(files, np.asarray(labels, np.int8), names, attr_file)


class AttributesDataset(Dataset):
    """``(image, labels)`` from :class:`AttributeSamples`; labels float32 ``[A]`` with -1 for unknown."""

    def __init__(self, samples: AttributeSamples, transform: Any = None, *, cache_images: bool = False) -> None:
        self.samples, self.transform = samples, transform
        self.files, self.names = samples.files, samples.names
        self.labels = torch.as_tensor(samples.labels.astype(np.float32))
        check_files_exist(self.files, samples.source)
        self._cache: list[np.ndarray] | None = None
        if cache_images:
            self._cache = [load_rgb_image(f) for f in self.files]
        else:  # a file that cannot be read is an error now, naming it, not mid-epoch
            check_image_headers(self.files, samples.source)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = self._cache[index] if self._cache is not None else load_rgb_image(self.files[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class AttributesDataModule(TrainValDataModule):
    """Multi-label attribute data (defaults to the embedded glyph attributes).

    Args:
        dataset: ``"glyph_attributes"``, ``"csv"`` or ``"celeba"`` (see the module docstring).
        root: dataset root (CelebA; the embedded data's folder, default in the data home).
        train_csv / val_csv / image_root: the CSV layout (``image_root`` default: each CSV's folder).
        celeba_val_partition: CelebA split evaluated (1 val, 2 test).
        image_size, resize_ratio, interpolation, mean, std, augment, min_crop_scale, hflip: the image pipelines of
            :mod:`mobilevision.data.classification` (None: the standard ones).
        batch_size / num_workers / pin_memory: DataLoader settings.
        cache_images: decode the images once and keep them in memory (small datasets).
        predict_images: folder of images for ``predict`` (labels unknown); default: the validation set.
        glyph_attributes_train / glyph_attributes_val / glyph_attributes_image_size / glyph_attributes_seed: the
            embedded dataset's generation parameters.

    ``num_attributes`` and ``attribute_names`` are read before ``setup`` (the CLI passes them to the model).
    """

    def __init__(
        self,
        dataset: str = "glyph_attributes",
        root: str | None = None,
        train_csv: str | None = None,
        val_csv: str | None = None,
        image_root: str | None = None,
        celeba_val_partition: int = 1,
        image_size: int = 96,
        resize_ratio: float | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: str = "standard",
        min_crop_scale: float = 0.5,
        hflip: bool = True,
        batch_size: int = 64,
        num_workers: int = 2,
        pin_memory: bool = False,
        cache_images: bool = False,
        predict_images: str | None = None,
        glyph_attributes_train: int = 4000,
        glyph_attributes_val: int = 1000,
        glyph_attributes_image_size: int = 96,
        glyph_attributes_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: mobilevision eval finds the data a model was trained on
        if dataset not in ATTRIBUTE_DATASETS:
            raise UserError(f"dataset must be one of {ATTRIBUTE_DATASETS}, got {dataset!r}")
        if augment not in CLASSIFICATION_AUGMENTS:
            raise UserError(f"augment must be one of {CLASSIFICATION_AUGMENTS}, got {augment!r}")
        if dataset == "csv" and (train_csv is None or val_csv is None):
            raise UserError("dataset 'csv' needs train_csv= and val_csv= (file,<attribute>,... with 1 / 0 / empty)")
        if dataset == "celeba" and root is None:
            raise UserError("dataset 'celeba' needs root= (the folder holding list_attr_celeba.txt)")
        if celeba_val_partition not in (1, 2):
            raise UserError(f"celeba_val_partition must be 1 (val) or 2 (test), got {celeba_val_partition}")
        self.dataset = dataset
        self.root = embedded_root("glyph_attributes", root) if dataset == "glyph_attributes" else root
        if dataset == "glyph_attributes":
            self.train_csv, self.val_csv = (os.path.join(self.root, f"{s}.csv") for s in ("train", "val"))
            self.image_root = self.root
        else:
            self.train_csv, self.val_csv, self.image_root = train_csv, val_csv, image_root
        self.celeba_val_partition = int(celeba_val_partition)
        self.image_size = int(image_size)
        if self.image_size < 8:
            raise UserError(f"image_size must be >= 8, got {image_size}")
        self.resize_ratio, self.interpolation = resolve_crop(resize_ratio, interpolation)
        self.mean, self.std = resolve_normalization(mean, std)
        self.augment, self.min_crop_scale, self.hflip = augment, float(min_crop_scale), bool(hflip)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), bool(pin_memory)
        self.cache_images, self.predict_images = bool(cache_images), predict_images
        self.generation = {"num_train": int(glyph_attributes_train), "num_val": int(glyph_attributes_val),
                           "image_size": int(glyph_attributes_image_size), "seed": int(glyph_attributes_seed)}
        self._names: list[str] | None = None
        self._train_csv_samples: AttributeSamples | None = None  # read once: for the names, then for training
        if dataset == "glyph_attributes":
            ensure_glyph_attributes_dataset(self.root, **self.generation)

    # -- what the model needs before setup ------------------------------------------------------------
    @property
    def attribute_names(self) -> list[str]:
        if self._names is None:
            if self.dataset == "glyph_attributes":
                self._names = list(GLYPH_ATTRIBUTES)
            elif self.dataset == "celeba":
                attr_file = os.path.join(self.root, "list_attr_celeba.txt")
                if not os.path.isfile(attr_file):
                    raise FileNotFoundError(f"CelebA file not found: {attr_file}")
                with open(attr_file, encoding="utf-8") as f:
                    f.readline()
                    self._names = f.readline().split()
            else:
                self._train_csv_samples = read_attribute_csv(self.train_csv, self.image_root)
                self._names = self._train_csv_samples.names
        return self._names

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)

    def _samples(self, split: str) -> AttributeSamples:
        if self.dataset == "celeba":
            return read_celeba(self.root, 0 if split == "train" else self.celeba_val_partition)
        names = self.attribute_names
        if split == "train" and self._train_csv_samples is not None:
            return self._train_csv_samples
        return read_attribute_csv(self.train_csv if split == "train" else self.val_csv, self.image_root, names)

    @property
    def _pipeline(self) -> dict[str, Any]:
        return {"resize_ratio": self.resize_ratio, "interpolation": self.interpolation, "mean": self.mean,
                "std": self.std}

    def prepare_data(self) -> None:
        if self.dataset == "glyph_attributes":
            ensure_glyph_attributes_dataset(self.root, **self.generation)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        if stage in (None, "fit") and self.train_dataset is None:
            transform = classification_train_transforms(self.image_size, self.augment,
                                                        min_crop_scale=self.min_crop_scale, hflip=self.hflip,
                                                        **self._pipeline)
            self.train_dataset = AttributesDataset(self._samples("train"), transform, cache_images=self.cache_images)
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            transform = classification_eval_transforms(self.image_size, **self._pipeline)
            self.val_dataset = AttributesDataset(self._samples("val"), transform, cache_images=self.cache_images)
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_images is not None:
                files = walk_image_files(self.predict_images)
                if not files:
                    raise FileNotFoundError(f"no images under {self.predict_images}")
                unknown = np.full((len(files), self.num_attributes), UNKNOWN, np.int8)
                samples = AttributeSamples(files, unknown, self.attribute_names, self.predict_images)
                transform = classification_eval_transforms(self.image_size, **self._pipeline)
                self.predict_dataset = AttributesDataset(samples, transform)
            else:
                self.predict_dataset = self.val_dataset
