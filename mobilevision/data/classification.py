"""Image classification data: albumentations pipelines, image-folder / benchmark datasets, a data module.

Batches are ``(images float32 [B, 3, S, S] normalized with mean / std (default ImageNet's), labels int64 [B])``.

Pipelines (``S`` = ``image_size``, the resolution multiplier: any size works):

* train ``"standard"``: ``RandomResizedCrop(S, scale=(min_crop_scale, 1))`` + horizontal flip;
* train ``"randaugment"``: the same + two ops drawn from a RandAugment-like pool (affine
  rotate / shear / translate, brightness / contrast / saturation, sharpen, posterize, solarize,
  equalize, autocontrast);
* train ``"none"`` and eval: ``SmallestMaxSize(int(S / resize_ratio))`` + ``CenterCrop(S)`` (the
  usual 0.875 "resize 256, crop 224" protocol); images are enlarged by ``interpolation`` (bilinear or bicubic) and
  shrunk by area averaging. The train command sets mean / std / resize_ratio / interpolation to those of the
  backbone's ImageNet weights when the model starts from them (:meth:`mobilevision.backbones.BackboneCfg.data_config`).

Input handling (never a silent label shift or a silently wrong sample):

* image folders ``<split>/<class>/**/<image>``: classes are the sorted sub-folder names of the
  *training* folder; validation folders are labelled with the training class -> index mapping,
  and a validation class missing from training raises ``ValueError`` naming it; a class folder
  without images raises ``ValueError`` naming it; hidden files and folders (``.DS_Store``, ``._*``
  resource forks) are left out; other non-image files (``.txt``, files outside class folders) are
  skipped, counted in ``dataset.stats["skipped_non_image"]`` and reported in one warning per folder;
* missing image files raise ``FileNotFoundError`` and images whose header cannot be read
  ``ImageDecodeError``, naming them, when the dataset is built; data damaged past the header raises
  ``ImageDecodeError`` naming the file when it is decoded;
* grayscale, RGBA, palette, CMYK images are converted to RGB.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import UserError, first_few
from .finegrained import (
    BENCHMARK_DATASETS,
    BENCHMARK_NUM_CLASSES,
    SplitSamples,
    benchmark_class_names,
    load_benchmark_split,
)
from .glyphs import GLYPH_CLASSES, ensure_glyphs_dataset
from ._datamodule import TrainValDataModule
from ._generated import embedded_root
from .image_io import IMAGE_EXTENSIONS, check_image_headers, load_rgb_image, walk_image_files
import cv2

from .transforms import (AREA_FOR_DOWNSCALE, IMAGENET_MEAN, IMAGENET_STD, SeededTransform, mean_fill, normalize_ops,
                         resolve_crop, resolve_normalization)

_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}

import albumentations as A  # noqa: E402  (imported after .transforms, which disables the update check)

__all__ = [
    "CLASSIFICATION_AUGMENTS",
    "CLASSIFICATION_DATASETS",
    "ClassificationDataModule",
    "ClassificationDataset",
    "ClassificationTransform",
    "classification_eval_transforms",
    "classification_train_transforms",
    "randaugment_ops",
    "scan_image_folder",
]

logger = logging.getLogger(__name__)

CLASSIFICATION_DATASETS = ("glyphs", "folder", *BENCHMARK_DATASETS)
CLASSIFICATION_AUGMENTS = ("none", "standard", "randaugment")


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------


class ClassificationTransform(SeededTransform):
    """Picklable ``A.Compose`` called as ``transform(image)`` on an HxWx3 uint8 RGB array.

    Seeded from torch's global generator on every call (see :class:`SeededTransform`): workers
    differ, epochs differ, ``seed_everything`` makes runs reproducible.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], *, deterministic: bool = False) -> None:
        super().__init__(A.Compose(list(transforms)), deterministic=deterministic)

    def __call__(self, image: np.ndarray) -> Any:
        self._reseed()
        return self.compose(image=image)["image"]


def randaugment_ops(num_ops: int = 2, fill: Sequence[float] = mean_fill(IMAGENET_MEAN)) -> A.SomeOf:
    """RandAugment-like policy: ``num_ops`` distinct ops drawn uniformly from a pool of 14, each
    at a random magnitude up to about RandAugment's M=9-10 (Cubuk et al. 2020)."""
    fill = tuple(fill)
    pool = [
        A.Affine(rotate=(-30, 30), fill=fill, p=1.0),
        A.Affine(shear={"x": (-17, 17), "y": (0, 0)}, fill=fill, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-17, 17)}, fill=fill, p=1.0),
        A.Affine(translate_percent={"x": (-0.15, 0.15), "y": (0, 0)}, fill=fill, p=1.0),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.15, 0.15)}, fill=fill, p=1.0),
        A.ColorJitter(brightness=(0.5, 1.5), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=1.0),
        A.ColorJitter(brightness=(1, 1), contrast=(0.5, 1.5), saturation=(1, 1), hue=(0, 0), p=1.0),
        A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.1, 1.9), hue=(0, 0), p=1.0),
        A.Sharpen(alpha=(0.2, 0.6), lightness=(0.9, 1.1), p=1.0),
        A.Posterize(num_bits=(4, 7), p=1.0),
        A.Solarize(threshold_range=(0.6, 1.0), p=1.0),
        A.Equalize(p=1.0),
        A.AutoContrast(p=1.0),
        A.NoOp(p=1.0),
    ]
    return A.SomeOf(pool, n=num_ops, replace=False, p=1.0)


def _check_size(image_size: int) -> int:
    image_size = int(image_size)
    if image_size < 8:
        raise UserError(f"image_size must be >= 8, got {image_size}")
    return image_size


def classification_eval_transforms(
    image_size: int,
    resize_ratio: float = 0.875,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    to_tensor: bool = True,
) -> ClassificationTransform:
    """Resize the short side to ``int(image_size / resize_ratio)``, center-crop ``image_size``, normalize.

    ``to_tensor=False`` stops after the crop (uint8 HxWx3 output), for inspection and tests.
    """
    image_size = _check_size(image_size)
    resize_ratio, interpolation = resolve_crop(resize_ratio, interpolation)
    resize = max(image_size, int(image_size / resize_ratio))
    ops = [A.SmallestMaxSize(max_size=resize, interpolation=_CV2_INTERPOLATION[interpolation],
                             area_for_downscale=AREA_FOR_DOWNSCALE), A.CenterCrop(image_size, image_size)]
    return ClassificationTransform(ops + normalize_ops(mean, std, to_tensor), deterministic=True)


def classification_train_transforms(
    image_size: int,
    augment: str = "standard",
    *,
    min_crop_scale: float = 0.25,
    resize_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    to_tensor: bool = True,
    hflip: bool = True,
) -> ClassificationTransform:
    """Training pipeline; ``augment`` in ``CLASSIFICATION_AUGMENTS`` (see the module docstring).

    ``"none"`` is the evaluation pipeline (``resize_ratio`` is only used there). ``hflip=False`` drops the
    horizontal flip (for images whose left and right differ in meaning).
    """
    if augment not in CLASSIFICATION_AUGMENTS:
        raise UserError(f"augment must be one of {CLASSIFICATION_AUGMENTS}, got {augment!r}")
    if augment == "none":
        return classification_eval_transforms(image_size, resize_ratio, mean=mean, std=std,
                                              interpolation=interpolation, to_tensor=to_tensor)
    image_size = _check_size(image_size)
    if not 0.0 < min_crop_scale <= 1.0:
        raise UserError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}")
    ops: list[A.BasicTransform] = [
        A.RandomResizedCrop(size=(image_size, image_size), scale=(float(min_crop_scale), 1.0),
                            interpolation=_CV2_INTERPOLATION[resolve_crop(None, interpolation)[1]],
                            area_for_downscale=AREA_FOR_DOWNSCALE),
        A.HorizontalFlip(p=0.5 if hflip else 0.0),
    ]
    if augment == "randaugment":
        ops.append(randaugment_ops(fill=mean_fill(mean)))
    return ClassificationTransform(ops + normalize_ops(mean, std, to_tensor))


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------


def _class_folders(folder: str) -> list[str]:
    """Sorted non-hidden sub-folder names of ``folder`` (the class names, in label order)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder} (expected {folder}/<class>/<image files>)")
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan_image_folder(folder: str | os.PathLike, class_names: Sequence[str] | None = None) -> SplitSamples:
    """Image files and labels of an image-folder split ``folder/<class>/**/<image>``.

    Args:
        folder: the split folder.
        class_names: the label order (pass the training classes when scanning a validation
            folder); default: the sorted class folder names of ``folder``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no class folders; a class folder without images (named); a class folder that
            is not in ``class_names`` (named).
    """
    folder = os.fspath(folder)
    present = _class_folders(folder)
    if not present:
        raise UserError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image files>)")
    if class_names is None:
        class_names = present
    class_names = list(class_names)
    index = {c: i for i, c in enumerate(class_names)}
    unknown = [c for c in present if c not in index]
    if unknown:
        shown = first_few(unknown, 10, show=repr)
        raise UserError(
            f"{folder}: class folder(s) {shown} are not among the {len(class_names)} training classes; "
            "labels must follow the training class -> index mapping, so every class needs training images"
        )
    skipped = sorted(e.path for e in os.scandir(folder) if not e.is_dir())  # files outside class folders
    files: list[str] = []
    labels: list[int] = []
    for c in present:
        class_dir = os.path.join(folder, c)
        n_before = len(files)
        found = walk_image_files(class_dir, skipped)
        files += found
        labels += [index[c]] * len(found)
        if len(files) == n_before:
            raise UserError(f"class folder {class_dir} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    if skipped:
        logger.warning("%s: skipped %d non-image file(s) (e.g. %s)", folder, len(skipped), ", ".join(skipped[:3]))
    missing = sorted(set(class_names) - set(present))
    if missing:
        logger.info(
            "%s: %d of %d classes have no images here (e.g. %s)", folder, len(missing), len(class_names), missing[:3]
        )
    return SplitSamples(class_names, np.asarray(labels, dtype=np.int64), files=files, name=folder, skipped=skipped)


def _list_images(folder: str) -> SplitSamples:
    """All images under ``folder`` (recursively, sorted) with label -1, for prediction."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    skipped: list[str] = []
    files = walk_image_files(folder, skipped)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    if skipped:
        logger.warning("%s: skipped %d non-image file(s) (e.g. %s)", folder, len(skipped), ", ".join(skipped[:3]))
    return SplitSamples([], np.full(len(files), -1, dtype=np.int64), files=files, name=folder, skipped=skipped)


class ClassificationDataset(Dataset):
    """``(image, label)`` pairs from a :class:`SplitSamples` (image files or an in-memory array).

    Without a transform ``image`` is the HxWx3 uint8 RGB array; ``label`` is an int (``-1`` for
    unlabelled prediction images).  ``cache_images`` decodes every file once up front (threads)
    and keeps it in memory - worth it for small datasets such as glyphs (~50 kB per 128 px image).
    """

    def __init__(self, samples: SplitSamples, transform: Any = None, *, cache_images: bool = False) -> None:
        if (samples.files is None) == (samples.images is None):
            raise UserError("SplitSamples needs exactly one of files / images")
        n = len(samples.files) if samples.files is not None else len(samples.images)
        if n != len(samples.labels):
            raise UserError(f"{samples.name}: {n} images but {len(samples.labels)} labels")
        if n == 0:
            raise UserError(f"{samples.name}: no images")
        self.samples = samples
        self.files = samples.files
        self.labels = np.asarray(samples.labels, dtype=np.int64)
        self.class_names = list(samples.class_names)
        self.transform = transform
        self.stats = {"images": n, "skipped_non_image": len(samples.skipped)}
        self._cache: list[np.ndarray] | None = None
        if cache_images:
            self.cache_images()
        elif self.files is not None:  # a file that cannot be read is an error now, naming it, not mid-epoch
            check_image_headers(self.files, samples.name)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        transform: Any = None,
        *,
        cache_images: bool = False,
    ) -> ClassificationDataset:
        return cls(scan_image_folder(folder, class_names), transform, cache_images=cache_images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def cache_images(self, num_threads: int | None = None) -> None:
        """Decode every image now and keep it in memory (validates all images as a side effect)."""
        if self._cache is not None or self.files is None:
            return
        num_threads = num_threads or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            self._cache = list(pool.map(load_rgb_image, self.files))

    def load_image(self, index: int) -> np.ndarray:
        """HxWx3 uint8 RGB image ``index``."""
        if self.samples.images is not None:
            return self.samples.images[index]
        if self._cache is not None:
            return self._cache[index]
        return load_rgb_image(self.files[index])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.samples.name}: {len(self)} images, {self.num_classes} classes, "
            f"stats={self.stats})"
        )


# --------------------------------------------------------------------------------------------
# data module
# --------------------------------------------------------------------------------------------


class ClassificationDataModule(TrainValDataModule):
    """Image classification data (defaults to the embedded glyphs dataset).

    Args:
        dataset: ``"glyphs"`` (embedded, generated under ``root`` - default the ``glyphs`` folder of :func:`~mobilevision.data.data_home` -
            by ``prepare_data()`` on first use), ``"folder"`` (``root/train/<class>/*`` and
            ``root/val/<class>/*``) or a benchmark in its published layout under ``root``:
            ``"stanford_dogs"``, ``"cub200"``, ``"flowers102"``, ``"fgvc_aircraft"``,
            ``"stanford_cars"``, ``"oxford_pets"``, ``"food101"``, ``"cifar10"``, ``"cifar100"``
            (see :mod:`mobilevision.data.finegrained`; nothing is downloaded).
        root: dataset root.
        image_size: network input side S (the resolution multiplier; any size works).
        resize_ratio: evaluation resize: short side to ``int(S / resize_ratio)``, then center crop S (None: 0.875).
        interpolation: how images are enlarged, ``"bilinear"`` or ``"bicubic"`` (None: bilinear).
        mean / std: normalization, RGB in [0, 1] (None: ImageNet's).
        batch_size: training and evaluation batch size.
        num_workers: DataLoader workers.
        augment: ``"standard"`` (random resized crop + flip), ``"randaugment"`` (+ two
            RandAugment-like ops) or ``"none"`` (the evaluation pipeline).
        min_crop_scale: smallest area fraction of the random resized crop (0.08 is the ImageNet
            recipe; 0.25 keeps more of the object for small images / fine-grained details).
        cache_images: decode the training and validation images once and keep them in memory.
        predict_images: folder of images for ``predict`` (labels -1); default: the validation set.
        pin_memory: DataLoader ``pin_memory``.
        glyphs_train_per_class / glyphs_val_per_class / glyphs_image_size / glyphs_seed: the
            embedded dataset's generation parameters.

    ``num_classes`` and ``class_names`` are available before ``setup`` (the CLI passes them to the
    model): fixed for glyphs, read from the training folder for ``"folder"`` and from the
    metadata on disk for the benchmarks.
    """

    def __init__(
        self,
        dataset: str = "glyphs",
        root: str | None = None,
        image_size: int = 224,
        resize_ratio: float | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        augment: str = "standard",
        min_crop_scale: float = 0.25,
        cache_images: bool = False,
        predict_images: str | None = None,
        pin_memory: bool = False,
        glyphs_train_per_class: int = 400,
        glyphs_val_per_class: int = 100,
        glyphs_image_size: int = 128,
        glyphs_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: mobilevision eval finds the data a model was trained on
        if dataset not in CLASSIFICATION_DATASETS:
            raise UserError(f"dataset must be one of {CLASSIFICATION_DATASETS}, got {dataset!r}")
        if augment not in CLASSIFICATION_AUGMENTS:
            raise UserError(f"augment must be one of {CLASSIFICATION_AUGMENTS}, got {augment!r}")
        self.resize_ratio, self.interpolation = resolve_crop(resize_ratio, interpolation)
        self.mean, self.std = resolve_normalization(mean, std)
        if not 0.0 < min_crop_scale <= 1.0:
            raise UserError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}")
        if root is None and dataset not in ("glyphs",):
            raise UserError(f"dataset {dataset!r} needs root= (the folder holding the data)")
        self.dataset = dataset
        self.root = embedded_root("glyphs", root) if dataset == "glyphs" else str(root)
        self.image_size = _check_size(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = augment
        self.min_crop_scale = float(min_crop_scale)
        self.cache_images = bool(cache_images)
        self.predict_images = predict_images
        self.pin_memory = bool(pin_memory)
        self.glyphs_kwargs = {
            "num_train_per_class": int(glyphs_train_per_class),
            "num_val_per_class": int(glyphs_val_per_class),
            "image_size": int(glyphs_image_size),
            "seed": int(glyphs_seed),
        }
        self.train_dataset: ClassificationDataset | None = None
        self.val_dataset: ClassificationDataset | None = None
        self.predict_dataset: ClassificationDataset | None = None
        self._class_names: list[str] | None = None
        self._benchmark_samples: dict[str, SplitSamples] = {}

    # ----------------------------------------------------------------------------- metadata

    @property
    def num_classes(self) -> int:
        """Number of classes (known before ``setup``)."""
        if self.dataset in BENCHMARK_NUM_CLASSES:
            try:
                return len(self.class_names)
            except FileNotFoundError:  # data not there (yet): setup says where it must go
                return BENCHMARK_NUM_CLASSES[self.dataset]
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (known before ``setup``)."""
        if self._class_names is None:
            if self.dataset == "glyphs":
                self._class_names = list(GLYPH_CLASSES)
            elif self.dataset == "folder":
                names = _class_folders(os.path.join(self.root, "train"))
                if not names:
                    raise UserError(f"{os.path.join(self.root, 'train')} has no class sub-folders")
                self._class_names = names
            elif self.dataset in ("stanford_dogs", "cub200"):
                self._class_names = benchmark_class_names(self.dataset, self.root)
            else:
                self._class_names = list(self._benchmark_split("train").class_names)
        return list(self._class_names)

    def _benchmark_split(self, split: str) -> SplitSamples:
        if split not in self._benchmark_samples:
            self._benchmark_samples[split] = load_benchmark_split(self.dataset, self.root, split)
        return self._benchmark_samples[split]

    def _split(self, split: str) -> SplitSamples:
        if self.dataset in ("glyphs", "folder"):
            folder = os.path.join(self.root, split)
            if split == "train":
                expected = self.class_names  # what the model was built with
                samples = scan_image_folder(folder)
                if samples.class_names != expected:
                    raise UserError(
                        f"{folder}: class folders {samples.class_names[:5]}... differ from the expected "
                        f"{len(expected)} classes {expected[:5]}..."
                    )
                return samples
            return scan_image_folder(folder, self.class_names)
        samples = self._benchmark_split(split)
        if split == "train" and self._class_names is None:
            self._class_names = list(samples.class_names)
        if list(samples.class_names) != self.class_names:
            raise UserError(f"{self.dataset}: the {split} split's classes differ from the training classes")
        return samples

    # ----------------------------------------------------------------------------- lifecycle

    def prepare_data(self) -> None:
        if self.dataset == "glyphs":
            ensure_glyphs_dataset(self.root, **self.glyphs_kwargs)

    @property
    def _pipeline(self) -> dict[str, Any]:
        return {"resize_ratio": self.resize_ratio, "interpolation": self.interpolation, "mean": self.mean,
                "std": self.std}

    def setup(self, stage: str | None = None) -> None:
        if self.dataset == "glyphs":
            # Idempotent and cheap when present; covers setup() without prepare_data().
            ensure_glyphs_dataset(self.root, **self.glyphs_kwargs)
        if stage in (None, "fit") and self.train_dataset is None:
            transform = classification_train_transforms(
                self.image_size,
                self.augment,
                min_crop_scale=self.min_crop_scale,
                **self._pipeline,
            )
            self.train_dataset = ClassificationDataset(self._split("train"), transform, cache_images=self.cache_images)
            self._class_names = self.train_dataset.class_names
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            transform = classification_eval_transforms(self.image_size, **self._pipeline)
            self.val_dataset = ClassificationDataset(self._split("val"), transform, cache_images=self.cache_images)
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_images is not None:
                samples = _list_images(self.predict_images)
                samples.class_names = self.class_names
                transform = classification_eval_transforms(self.image_size, **self._pipeline)
                self.predict_dataset = ClassificationDataset(samples, transform)
            else:
                self.predict_dataset = self.val_dataset
