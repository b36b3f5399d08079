"""Geotagged photos for geolocalization: CSV / JSONL lists, bad-row handling, PlaNet cells, a data module.

A list file names one photo per row with its location in degrees::

    image_path,latitude,longitude              # CSV (any extra columns are ignored)
    paris/0001.jpg,48.8566,2.3522

    {"image_path": "paris/0001.jpg", "latitude": 48.8566, "longitude": 2.3522}   # JSONL (.jsonl / .ndjson)

``image_path`` is relative to the image root (default: the list file's folder) unless absolute.
Batches are ``(images float32 [B, 3, S, S], cells int64 [B], coords float64 [B, 2])``: ``cells`` is the index
of the partition cell holding the photo (``-1`` outside every cell: photos of dropped cells, or evaluation
photos far from any training photo) and ``coords`` its (latitude, longitude).

Bad rows never pass silently. With ``bad_rows="error"`` (default) the first one raises ``ValueError``
(unparsable or out-of-range coordinates: latitude outside [-90, 90], longitude outside [-180, 180], NaN, an
empty path; the message names the file and line) or ``FileNotFoundError`` (images that do not exist, named);
an undecodable image raises ``ImageDecodeError`` naming it when it is loaded. With ``bad_rows="skip"`` such
rows are left out, counted per reason in ``GeoSamples.skipped`` and reported in one warning per list, and
every image is decoded once up front so that corrupt images are skipped too.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset

from ..errors import UserError
from ..geo.cells import CellPartition, build_partition
from ._datamodule import TrainValDataModule
from ._generated import embedded_root
from .classification import CLASSIFICATION_AUGMENTS, classification_eval_transforms, classification_train_transforms
from .transforms import resolve_crop, resolve_normalization
from .image_io import ImageDecodeError, check_files_exist, check_image_headers, load_rgb_image, missing_files

__all__ = [
    "GEO_DATASETS",
    "GeoImageDataset",
    "GeoSamples",
    "GeolocalizationDataModule",
    "read_geotagged_list",
]

logger = logging.getLogger(__name__)

GEO_DATASETS = ("geoscenes", "files")
BadRows = Literal["error", "skip"]
REQUIRED_COLUMNS = ("image_path", "latitude", "longitude")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass
class GeoSamples:
    """Photos of one list file: paths, ids (``image_path`` as written), coordinates and skipped-row counts."""

    source: str
    files: list[str]
    image_ids: list[str]
    latitude: np.ndarray
    longitude: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, keep: np.ndarray) -> GeoSamples:
        idx = np.flatnonzero(keep)
        return GeoSamples(self.source, [self.files[i] for i in idx], [self.image_ids[i] for i in idx],
                          self.latitude[idx], self.longitude[idx], dict(self.skipped))


def _rows(path: str):
    """``(line number, dict)`` per record of a CSV or JSONL file."""
    if path.lower().endswith(_JSONL_SUFFIXES):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    yield line_no, ValueError(f"invalid JSON: {e}")
                    continue
                yield line_no, record if isinstance(record, dict) else ValueError("a line must be a JSON object")
        return
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise UserError(f"{path}: empty file (expected a header {','.join(REQUIRED_COLUMNS)})")
        missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the header is "
                             f"{','.join(reader.fieldnames)} (expected {','.join(REQUIRED_COLUMNS)})")
        for record in reader:
            yield reader.line_num, record


def _parse(record: dict[str, Any]) -> tuple[str, float, float]:
    missing = [c for c in REQUIRED_COLUMNS if record.get(c) in (None, "")]
    if missing:
        raise UserError(f"no {', '.join(missing)}")
    image_path = str(record["image_path"]).strip()
    values = []
    for name, limit in (("latitude", 90.0), ("longitude", 180.0)):
        raw = record[name]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{name} {raw!r} is not a number") from None
        if not math.isfinite(value) or abs(value) > limit:
            raise UserError(f"{name} {raw} outside [-{limit:g}, {limit:g}]")
        values.append(value)
    return image_path, values[0], values[1]


def _decodes(path: str) -> bool:
    try:
        load_rgb_image(path)
        return True
    except (FileNotFoundError, ImageDecodeError):
        return False


def read_geotagged_list(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                        bad_rows: BadRows = "error") -> GeoSamples:
    """Read a CSV / JSONL list of geotagged photos (see the module docstring for the format and bad rows)."""
    path = os.fspath(path)
    if bad_rows not in ("error", "skip"):
        raise UserError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"geotagged photo list not found: {path}")
    root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    skipped: Counter[str] = Counter()
    examples: list[str] = []
    files, ids, lats, lons = [], [], [], []

    def bad(reason: str, message: str) -> None:
        if bad_rows == "error":
            raise UserError(message)
        skipped[reason] += 1
        if len(examples) < 3:
            examples.append(message)

    for line_no, record in _rows(path):
        if isinstance(record, Exception):
            bad("unparsable", f"{path}:{line_no}: {record}")
            continue
        try:
            image_path, lat, lon = _parse(record)
        except ValueError as e:
            reason = "out_of_range" if "outside" in str(e) else "unparsable"
            bad(reason, f"{path}:{line_no}: {e}")
            continue
        files.append(image_path if os.path.isabs(image_path) else os.path.join(root, image_path))
        ids.append(image_path)
        lats.append(lat)
        lons.append(lon)

    if bad_rows == "error":
        check_files_exist(files, path)
    missing = set(missing_files(files))
    if missing:
        skipped["missing_image"] += len(missing)
        examples.append(f"{path}: {len(missing)} image file(s) not found: {', '.join(sorted(missing)[:5])}")
    keep = np.array([f not in missing for f in files], dtype=bool)
    if bad_rows == "skip":  # decode every image once, so corrupt ones are skipped rather than failing mid-epoch
        candidates = np.flatnonzero(keep)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            ok = np.array(list(pool.map(_decodes, [files[i] for i in candidates])), dtype=bool)
        if not ok.all():
            corrupt = [files[i] for i in candidates[~ok]]
            skipped["corrupt_image"] += len(corrupt)
            examples.append(f"{path}: {len(corrupt)} undecodable image(s): {', '.join(corrupt[:5])}")
            keep = keep.copy()
            keep[candidates[~ok]] = False
    samples = GeoSamples(path, files, ids, np.array(lats, dtype=np.float64), np.array(lons, dtype=np.float64))
    samples = samples.subset(keep)
    samples.skipped = dict(skipped)
    if skipped:
        logger.warning("%s: skipped %d row(s) (%s), e.g. %s", path, sum(skipped.values()),
                       ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())), " | ".join(examples))
    if len(samples) == 0:
        raise UserError(f"{path}: no usable photos" + (f" (skipped {dict(skipped)})" if skipped else ""))
    return samples


class GeoImageDataset(Dataset):
    """``(image, cell, coords)`` per photo: the transformed image, its cell index (``-1`` if none) and
    ``torch.float64`` (latitude, longitude). ``cache_images`` decodes every image once up front."""

    def __init__(self, samples: GeoSamples, cells: np.ndarray, transform: Any = None, *,
                 cache_images: bool = False) -> None:
        if len(cells) != len(samples):
            raise UserError(f"{samples.source}: {len(samples)} photos but {len(cells)} cell labels")
        self.samples = samples
        self.cells = np.asarray(cells, dtype=np.int64)
        self.coords = torch.from_numpy(np.stack([samples.latitude, samples.longitude], 1))
        self.transform = transform
        self._cache: list[np.ndarray] | None = None
        if cache_images:
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                self._cache = list(pool.map(load_rgb_image, samples.files))
        else:  # a file that cannot be read is an error now, naming it, not in a worker mid-epoch
            check_image_headers(samples.files, samples.source)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, torch.Tensor]:
        image = self._cache[index] if self._cache is not None else load_rgb_image(self.samples.files[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.cells[index]), self.coords[index]

    def __repr__(self) -> str:
        inside = int((self.cells >= 0).sum())
        return f"{type(self).__name__}({self.samples.source}: {len(self)} photos, {inside} inside a cell)"


class GeolocalizationDataModule(TrainValDataModule):
    """Geotagged photos and their PlaNet cell partition (defaults to the embedded geoscenes dataset).

    Args:
        dataset: ``"geoscenes"`` (embedded: procedurally generated scenes at real city coordinates, made under
            ``root`` - default the ``geoscenes`` folder of :func:`~mobilevision.data.data_home` - on first use, see :mod:`mobilevision.data.geoscenes`)
            or ``"files"`` (your own lists: ``train_file`` / ``val_file``).
        root: geoscenes folder; for ``"files"``, the default image root.
        train_file, val_file: CSV / JSONL lists (``image_path, latitude, longitude``).
        predict_file: list for ``predict`` (coordinates are required by the format but only used for scoring);
            default: the validation list.
        image_root: folder the lists' ``image_path`` are relative to (default: ``root`` if given, else each
            list's own folder).
        max_per_cell, min_per_cell, min_level, max_level: the partition
            (:func:`~mobilevision.geo.build_partition`), built from the training list's coordinates.
        bad_rows: ``"error"`` or ``"skip"`` (see the module docstring).
        image_size, resize_ratio, interpolation, mean, std, augment, min_crop_scale, hflip: the image pipelines of
            :mod:`mobilevision.data.classification` (random resized crop + optional flip for training).
        cache_images: decode the images once and keep them in memory (small datasets).
        geoscenes_train / geoscenes_val / geoscenes_image_size / geoscenes_seed: the embedded dataset's
            generation parameters.

    ``partition`` / ``num_cells`` are available before ``setup`` (the CLI passes the partition to the model);
    :meth:`use_partition` replaces it with a given one (a checkpoint's), which evaluation data must use.
    """

    def __init__(
        self,
        dataset: str = "geoscenes",
        root: str | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        predict_file: str | None = None,
        image_root: str | None = None,
        max_per_cell: int = 200,
        min_per_cell: int = 20,
        min_level: int = 0,
        max_level: int = 30,
        bad_rows: BadRows = "error",
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
        cache_images: bool = False,
        pin_memory: bool = False,
        geoscenes_train: int = 4000,
        geoscenes_val: int = 800,
        geoscenes_image_size: int = 96,
        geoscenes_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: mobilevision eval finds the data a model was trained on
        if dataset not in GEO_DATASETS:
            raise UserError(f"dataset must be one of {GEO_DATASETS}, got {dataset!r}")
        if augment not in CLASSIFICATION_AUGMENTS:
            raise UserError(f"augment must be one of {CLASSIFICATION_AUGMENTS}, got {augment!r}")
        if bad_rows not in ("error", "skip"):
            raise UserError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")
        if dataset == "files" and (train_file is None or val_file is None):
            raise UserError("dataset 'files' needs train_file= and val_file= (CSV / JSONL lists of "
                             "image_path, latitude, longitude)")
        self.dataset = dataset
        if dataset == "geoscenes":
            self.root = embedded_root("geoscenes", root)
            self.train_file = os.path.join(self.root, "train.csv")
            self.val_file = os.path.join(self.root, "val.csv")
            self.image_root = image_root if image_root is not None else self.root
        else:
            self.root = root
            self.train_file, self.val_file = str(train_file), str(val_file)
            self.image_root = image_root if image_root is not None else root
        self.predict_file = predict_file
        self.partition_kwargs = {"max_per_cell": int(max_per_cell), "min_per_cell": int(min_per_cell),
                                 "min_level": int(min_level), "max_level": int(max_level)}
        self.bad_rows = bad_rows
        self.image_size = int(image_size)
        self.resize_ratio, self.interpolation = resolve_crop(resize_ratio, interpolation)
        self.mean, self.std = resolve_normalization(mean, std)
        self.augment = augment
        self.min_crop_scale = float(min_crop_scale)
        self.hflip = bool(hflip)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.cache_images = bool(cache_images)
        self.pin_memory = bool(pin_memory)
        self.geoscenes_kwargs = {"num_train": int(geoscenes_train), "num_val": int(geoscenes_val),
                                 "image_size": int(geoscenes_image_size), "seed": int(geoscenes_seed)}
        self._partition: CellPartition | None = None
        self._train_samples: GeoSamples | None = None

    # ----------------------------------------------------------------------------- data & cells
    def _ensure_generated(self) -> None:
        if self.dataset == "geoscenes":
            from .geoscenes import ensure_geoscenes_dataset

            ensure_geoscenes_dataset(self.root, **self.geoscenes_kwargs)  # cheap when already there

    def read_list(self, path: str) -> GeoSamples:
        return read_geotagged_list(path, self.image_root, self.bad_rows)

    def _train(self) -> GeoSamples:
        if self._train_samples is None:
            self._ensure_generated()
            self._train_samples = self.read_list(self.train_file)
        return self._train_samples

    @property
    def partition(self) -> CellPartition:
        """The cell partition: built from the training list on first use unless :meth:`use_partition` set one."""
        if self._partition is None:
            train = self._train()
            self._partition, _ = build_partition(train.latitude, train.longitude, **self.partition_kwargs)
            rank_zero_info(f"{self.train_file}: {self._partition.summary()}")
        return self._partition

    @property
    def partition_state(self) -> dict[str, Any]:
        """:meth:`CellPartition.to_state` of :attr:`partition` (what the CLI links to the model)."""
        return self.partition.to_state()

    @property
    def num_cells(self) -> int:
        return len(self.partition)

    def use_partition(self, partition: CellPartition | dict[str, Any]) -> None:
        """Label photos with ``partition`` (e.g. a trained model's) instead of building one."""
        if isinstance(partition, dict):
            partition = CellPartition.from_state(partition)
        self._partition = partition
        self.train_dataset = self.val_dataset = self.predict_dataset = None

    def _dataset(self, samples: GeoSamples, train: bool) -> GeoImageDataset:
        pipeline = {"resize_ratio": self.resize_ratio, "interpolation": self.interpolation, "mean": self.mean,
                    "std": self.std}
        if train:
            transform = classification_train_transforms(self.image_size, self.augment,
                                                        min_crop_scale=self.min_crop_scale, hflip=self.hflip,
                                                        **pipeline)
        else:
            transform = classification_eval_transforms(self.image_size, **pipeline)
        cells = self.partition.assign(samples.latitude, samples.longitude)
        return GeoImageDataset(samples, cells, transform, cache_images=self.cache_images)

    # ----------------------------------------------------------------------------- lifecycle
    def prepare_data(self) -> None:
        self._ensure_generated()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_generated()
        if stage in (None, "fit") and self.train_dataset is None:
            train = self._train()
            cells = self.partition.assign(train.latitude, train.longitude)
            outside = int((cells < 0).sum())
            if outside:
                rank_zero_info(f"{self.train_file}: {outside} of {len(train)} training photos lie in no cell "
                               "(dropped cells) and are not used")
            train = train.subset(cells >= 0)
            self.train_dataset = self._dataset(train, train=True)
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            self.val_dataset = self._dataset(self.read_list(self.val_file), train=False)
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_file is not None:
                self.predict_dataset = self._dataset(self.read_list(self.predict_file), train=False)
            else:
                self.predict_dataset = self.val_dataset
