"""Lightning data module for COCO-format detection (defaults to the embedded shapes dataset)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .coco import CocoDetection
from ._datamodule import SplitDataModule
from .image_io import IMAGE_EXTENSIONS, load_rgb_image
from .shapes import SHAPES_CATEGORIES, ensure_shapes_dataset, shapes_paths
from .transforms import AUGMENT_POLICIES, DetectionTransform, eval_transforms, train_transforms

__all__ = ["CocoDetectionDataModule", "ImageFolderDataset", "detection_collate"]


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images into ``[B, 3, S, S]``; keep the targets as a list of dicts."""
    images, targets = zip(*batch)
    return torch.stack(list(images)), list(targets)


class ImageFolderDataset(Dataset):
    """Images of a folder (sorted by name) for prediction; targets carry ``file_name`` and no boxes."""

    def __init__(self, folder: str | os.PathLike, transforms: DetectionTransform | None = None) -> None:
        self.folder = os.fspath(folder)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"image folder not found: {self.folder}")
        self.files = sorted(
            e.name for e in os.scandir(self.folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.folder}")
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        path = os.path.join(self.folder, self.files[index])
        image = load_rgb_image(path)
        boxes, labels = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        orig_size = tuple(image.shape[:2])
        if self.transforms is not None:
            image, boxes, labels = self.transforms(image, boxes, labels)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": index,
            "orig_size": orig_size,
            "file_name": self.files[index],
        }
        return image, target


def _read_categories(annotation_file: str) -> list[dict[str, Any]]:
    with open(annotation_file) as f:
        cats = json.load(f).get("categories", [])
    if not cats:
        raise ValueError(f"{annotation_file}: no categories defined")
    return sorted(cats, key=lambda c: int(c["id"]))


class CocoDetectionDataModule(SplitDataModule):
    """COCO-format detection data.

    Leave all four ``train_*``/``val_*`` paths ``None`` to use the embedded shapes dataset, generated
    under ``shapes_root`` by ``prepare_data()`` on first use.

    Batches are ``(images [B, 3, S, S] float32 normalized, targets)`` where each target is
    ``{"boxes": float32 (N, 4) xyxy in network-input pixels (after the resize to S x S),
    "labels": int64 (N,) contiguous 0..C-1, "image_id": int (the COCO image id),
    "orig_size": (h, w) of the original image}``.  Map predictions back to the original image
    with ``mobilevision.evaluation.scale_boxes(boxes, (S, S), orig_size)`` and to COCO category
    ids with ``label_to_category_id``; ``val_coco`` is the pycocotools ground truth.

    Args:
        train_images / train_annotations / val_images / val_annotations: COCO image folders and jsons.
        image_size: network input side S.
        batch_size: training and evaluation batch size.
        num_workers: DataLoader workers.
        cache_images: decode the training and validation images once and keep them in memory
            (worth it for small datasets such as shapes: ~110 kB per 192 px image; far too much for COCO).
        augment: training augmentation policy, one of ``"ssd"``, ``"ssdlite"``, ``"flip"``, ``"none"``.
        zoom_out_max: maximum zoom-out factor of the ``"ssd"`` policy.
        predict_images: folder of images for ``predict``; default: the validation set.
        pin_memory: DataLoader ``pin_memory``.
        shapes_root / shapes_num_train / shapes_num_val / shapes_image_size / shapes_seed: the
            embedded dataset's location and generation parameters.
    """

    def __init__(
        self,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        image_size: int = 320,
        batch_size: int = 32,
        num_workers: int = 2,
        cache_images: bool = False,
        augment: str = "ssd",
        zoom_out_max: float = 2.0,
        predict_images: str | None = None,
        pin_memory: bool = False,
        shapes_root: str = "datasets/shapes/data",
        shapes_num_train: int = 2000,
        shapes_num_val: int = 200,
        shapes_image_size: int = 192,
        shapes_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: tools/eval.py finds the data a model was trained on
        self.collate_fn = detection_collate
        paths = (train_images, train_annotations, val_images, val_annotations)
        if any(p is not None for p in paths) and not all(p is not None for p in paths):
            raise ValueError(
                "give all of train_images, train_annotations, val_images, val_annotations "
                "(or none of them to use the embedded shapes dataset)"
            )
        if augment not in AUGMENT_POLICIES:
            raise ValueError(f"augment must be one of {AUGMENT_POLICIES}, got {augment!r}")
        self.use_shapes = train_images is None
        if self.use_shapes:
            p = shapes_paths(shapes_root)
            train_images, train_annotations = p["train_images"], p["train_annotations"]
            val_images, val_annotations = p["val_images"], p["val_annotations"]
        self.train_images = str(train_images)
        self.train_annotations = str(train_annotations)
        self.val_images = str(val_images)
        self.val_annotations = str(val_annotations)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.cache_images = bool(cache_images)
        self.augment = augment
        self.zoom_out_max = float(zoom_out_max)
        self.predict_images = predict_images
        self.pin_memory = bool(pin_memory)
        self.shapes_root = str(shapes_root)
        self.shapes_kwargs = {
            "num_train": int(shapes_num_train),
            "num_val": int(shapes_num_val),
            "image_size": int(shapes_image_size),
            "seed": int(shapes_seed),
        }
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None
        self.predict_dataset: Dataset | None = None
        self._categories: list[dict[str, Any]] | None = None

    # ----------------------------------------------------------------------------- metadata

    def _category_list(self) -> list[dict[str, Any]]:
        if self._categories is None:
            if self.train_dataset is not None:
                ds = self.train_dataset
                self._categories = [
                    {"id": c, "name": n} for c, n in zip(ds.label_to_category_id, ds.category_names)
                ]
            elif self.use_shapes:
                self._categories = sorted((dict(c) for c in SHAPES_CATEGORIES), key=lambda c: c["id"])
            else:
                # Before setup (e.g. to build the model): read the categories of the (smaller) val json.
                self._categories = _read_categories(self.val_annotations)
        return self._categories

    @property
    def num_classes(self) -> int:
        """Number of object classes (without background)."""
        return len(self._category_list())

    @property
    def label_to_category_id(self) -> list[int]:
        return [int(c["id"]) for c in self._category_list()]

    @property
    def category_names(self) -> list[str]:
        return [str(c["name"]) for c in self._category_list()]

    @property
    def val_coco(self):  # -> pycocotools.coco.COCO
        """pycocotools ``COCO`` of the validation set (ground truth for COCO evaluation)."""
        if self.val_dataset is None:
            self.setup("validate")
        return self.val_dataset.coco

    # ----------------------------------------------------------------------------- lifecycle

    def prepare_data(self) -> None:
        if self.use_shapes:
            ensure_shapes_dataset(self.shapes_root, **self.shapes_kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self.use_shapes:
            # Idempotent and cheap when present; covers setup() without prepare_data().
            ensure_shapes_dataset(self.shapes_root, **self.shapes_kwargs)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = CocoDetection(
                self.train_images,
                self.train_annotations,
                train_transforms(self.image_size, self.augment, zoom_out_max=self.zoom_out_max),
                cache_images=self.cache_images,
            )
            self._categories = None
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            # Same label mapping as training (a val json may list fewer categories).
            category_ids = self.train_dataset.label_to_category_id if self.train_dataset is not None else None
            self.val_dataset = CocoDetection(
                self.val_images,
                self.val_annotations,
                eval_transforms(self.image_size),
                category_ids=category_ids,
                cache_images=self.cache_images,
            )
        if self.train_dataset is not None and self.val_dataset is not None:
            t, v = self.train_dataset, self.val_dataset
            if t.label_to_category_id != v.label_to_category_id:
                raise ValueError(
                    f"train and val category ids differ: {t.label_to_category_id} vs {v.label_to_category_id}"
                )
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_images is not None:
                self.predict_dataset = ImageFolderDataset(self.predict_images, eval_transforms(self.image_size))
            else:
                self.predict_dataset = self.val_dataset
