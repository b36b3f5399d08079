"""Lightning data module for COCO-format detection (defaults to the embedded shapes dataset)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..coco_format import read_coco
from .coco_detection import CocoDetection, training_categories
from ._datamodule import TrainValDataModule
from ._generated import embedded_root
from .image_io import IMAGE_EXTENSIONS, load_rgb_image, walk_image_files
from .shapes import SHAPES_CATEGORIES, ensure_shapes_dataset, shapes_paths
from .transforms import (AUGMENT_POLICIES, DetectionTransform, detection_eval_transforms, detection_train_transforms,
                         resolve_normalization)

__all__ = ["CocoDetectionDataModule", "ImageFolderDataset", "detection_collate"]


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images into ``[B, 3, S, S]``; keep the targets as a list of dicts."""
    images, targets = zip(*batch)
    return torch.stack(list(images)), list(targets)


class ImageFolderDataset(Dataset):
    """Images under a folder (recursively, sorted, hidden files and folders left out:
    :func:`~mobilevision.data.image_io.walk_image_files`) for prediction; targets carry ``file_name`` (the path
    relative to the folder) and no boxes."""

    def __init__(self, folder: str | os.PathLike, transforms: DetectionTransform | None = None) -> None:
        self.folder = os.fspath(folder)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"image folder not found: {self.folder}")
        self.files = [os.path.relpath(p, self.folder) for p in walk_image_files(self.folder)]
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


class CocoDetectionDataModule(TrainValDataModule):
    """COCO-format detection data.

    Leave all four ``train_*``/``val_*`` paths ``None`` to use the embedded shapes dataset, generated
    under ``shapes_root`` by ``prepare_data()`` on first use.

    Batches are ``(images [B, 3, S, S] float32 normalized, targets)`` where each target is
    ``{"boxes": float32 (N, 4) xyxy in network-input pixels (after the resize to S x S),
    "labels": int64 (N,) contiguous 0..C-1, "image_id": int (the COCO image id),
    "orig_size": (h, w) of the original image}``.  Map predictions back to the original image
    with ``mobilevision.evaluation.scale_boxes(boxes, (S, S), orig_size)`` and to COCO category
    ids with ``label_to_category_id``; ``val_coco`` is the pycocotools ground truth.

    The classes are the TRAINING file's categories (sorted by id), known before ``setup`` (the CLI links
    ``num_classes``, ``label_to_category_id`` and ``category_names`` to the model when it builds them):
    Roboflow's placeholder category is left out, categories without training annotations are named in
    a warning.  The validation file's categories are matched to them by name (its ids may differ; its
    annotations are re-expressed in the training ids, so ``val_coco`` and ``label_to_category_id`` go
    together); a validation category with annotations that is not a training category is an error.
    :meth:`use_categories` sets a model's classes instead (evaluating a checkpoint).

    Args:
        train_images / train_annotations / val_images / val_annotations: COCO image folders and jsons.
        image_size: network input side S.
        batch_size: training and evaluation batch size.
        num_workers: DataLoader workers.
        cache_images: decode the training and validation images once and keep them in memory
            (worth it for small datasets such as shapes: ~110 kB per 192 px image; far too much for COCO).
        augment: training augmentation policy, one of ``"ssd"``, ``"ssdlite"``, ``"flip"``, ``"flips"``, ``"none"``.
        drop_empty_categories: leave categories without training annotations out of the classes; the
            validation annotations of categories that are not classes are then left out (with a
            warning) instead of being an error.
        zoom_out_max: maximum zoom-out factor of the ``"ssd"`` policy.
        predict_images: folder of images for ``predict``; default: the validation set.
        pin_memory: DataLoader ``pin_memory``.
        mean / std: normalization, RGB in [0, 1] (None: ImageNet's).
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
        drop_empty_categories: bool = False,
        zoom_out_max: float = 2.0,
        predict_images: str | None = None,
        pin_memory: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        shapes_root: str | None = None,
        shapes_num_train: int = 2000,
        shapes_num_val: int = 200,
        shapes_image_size: int = 192,
        shapes_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: mobilevision eval finds the data a model was trained on
        self.collate_fn = detection_collate
        self.mean, self.std = resolve_normalization(mean, std)
        paths = (train_images, train_annotations, val_images, val_annotations)
        if any(p is not None for p in paths) and not all(p is not None for p in paths):
            raise UserError(
                "give all of train_images, train_annotations, val_images, val_annotations "
                "(or none of them to use the embedded shapes dataset)"
            )
        if augment not in AUGMENT_POLICIES:
            raise UserError(f"augment must be one of {AUGMENT_POLICIES}, got {augment!r}")
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
        self.drop_empty_categories = bool(drop_empty_categories)
        self.zoom_out_max = float(zoom_out_max)
        self.predict_images = predict_images
        self.pin_memory = bool(pin_memory)
        self.shapes_root = embedded_root("shapes", shapes_root)
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
        self._train_coco: dict | None = None  # the training file, read for the classes, reused by setup("fit")

    # ----------------------------------------------------------------------------- metadata

    def _category_list(self) -> list[dict[str, Any]]:
        if self._categories is None:
            if self.use_shapes:
                self._categories = sorted(({"id": c["id"], "name": c["name"]} for c in SHAPES_CATEGORIES),
                                          key=lambda c: c["id"])
            else:
                self._check_paths(("train_images", "train_annotations"))
                self._train_coco = read_coco(self.train_annotations)
                self._categories = training_categories(self._train_coco, self.drop_empty_categories,
                                                       self.train_annotations)
        return self._categories

    def _check_paths(self, names: Sequence[str]) -> None:
        """One error naming every missing folder / file of ``names`` (and, for the COCO recipes' default paths,
        the page on preparing COCO) before anything is read."""
        missing = [f"{n}={getattr(self, n)}" for n in names if not os.path.exists(getattr(self, n))]
        if not missing:
            return
        hint = ("COCO 2017 goes under datasets/coco/ as described in datasets/coco/README.md of the mobilevision "
                "repository" if any("datasets/coco" in m.replace(os.sep, "/") for m in missing) else
                "give your COCO-format export with --data.init_args.train_images / train_annotations / val_images / "
                "val_annotations")
        raise FileNotFoundError(f"detection data not found (relative to {os.getcwd()}): {', '.join(missing)}; {hint}")

    def use_categories(self, label_to_category_id: list[int], category_names: list[str] | None = None) -> None:
        """Use a model's classes (a checkpoint's ``label_to_category_id`` and ``category_names``) instead of
        the training file's; the validation categories are matched to them by name (by id without names)."""
        names = list(category_names) if category_names else [None] * len(label_to_category_id)
        if len(names) != len(label_to_category_id):
            raise UserError(f"{len(label_to_category_id)} category ids but {len(names)} category names")
        self._categories = [{"id": int(i), "name": n} for i, n in zip(label_to_category_id, names)]
        self.train_dataset = self.val_dataset = self.predict_dataset = None

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
        """pycocotools ``COCO`` of the validation set, in the classes' category ids (``label_to_category_id``):
        the ground truth for COCO evaluation."""
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
        categories = self._category_list()
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = CocoDetection(
                self.train_images,
                self._train_coco if self._train_coco is not None else self.train_annotations,
                detection_train_transforms(self.image_size, self.augment, zoom_out_max=self.zoom_out_max,
                                           mean=self.mean, std=self.std),
                categories=categories,
                skip_other_categories=self.drop_empty_categories,
                cache_images=self.cache_images,
                name=self.train_annotations,
            )
        self._train_coco = None
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            if not self.use_shapes:
                self._check_paths(("val_images", "val_annotations"))
            self.val_dataset = CocoDetection(
                self.val_images,
                self.val_annotations,
                detection_eval_transforms(self.image_size, mean=self.mean, std=self.std),
                categories=categories,
                skip_other_categories=self.drop_empty_categories,
                cache_images=self.cache_images,
                name=self.val_annotations,
            )
            self._categories = self.val_dataset.categories  # (names filled in where use_categories had none)
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_images is not None:
                self.predict_dataset = ImageFolderDataset(
                    self.predict_images, detection_eval_transforms(self.image_size, mean=self.mean, std=self.std))
            else:
                self.predict_dataset = self.val_dataset
