"""Semantic segmentation data: datasets in their published layouts, the DeepLab augmentation, a data module.

Labels are int64 class indices ``0..C-1``; ``IGNORE_INDEX`` (255) marks pixels that count nowhere (VOC's object
borders, ADE20K's "other", Cityscapes' void classes, the padding of training crops).

Batches (:func:`segmentation_collate`):

* train: ``(images float32 [B, 3, S, S] normalized with mean / std (default ImageNet's), masks int64 [B, S, S])``, ``S`` the
  crop size; the DeepLab recipe: random rescale in ``[scale_min, scale_max]`` (image bilinear, mask nearest), pad
  bottom / right to ``S`` (image: the mean colour, mask: 255), random ``S x S`` crop, horizontal flip, light
  photometric jitter;
* val / test / predict: ``(images float32 [B, 3, H, W], targets)``, the images optionally resized (shorter side to
  ``eval_size``), normalized and zero-padded bottom / right to the batch's largest ``H``, ``W``; each target is
  ``{"mask": int64 [h0, w0] at the ORIGINAL image resolution (None for unlabelled prediction images),
  "input_size": (h, w) the image's unpadded region in the tensor, "orig_size": (h0, w0), "file_name": the image
  path relative to the images root}``.  Crop the logits to ``input_size`` and resize them to ``orig_size`` before
  comparing with ``mask``.

Input handling: images are decoded by :func:`~mobilevision.data.image_io.load_rgb_image` (EXIF orientation
applied; grayscale, palette, 16-bit converted to 8-bit RGB); masks are read as they are stored (no EXIF: annotation
tools export them in the displayed orientation) by :func:`~mobilevision.masks.read_index_mask`
(palette PNGs give their indices, grayscale PNGs their values) or, for colour masks, through a label map.  Before
training, every sample is checked: missing images or masks and masks whose size (from the file headers) differs
from their image's are errors naming the files (with a hint when the mask matches the image before its EXIF
rotation); the masks of a user's own data (``folder``) are also decoded, so label values that are neither classes
nor 255 and colours missing from the label map are errors too.  The benchmarks' masks are checked the same way
when loaded.  ``skip_bad=True`` skips such samples instead (the benchmarks: ignores the mask) with a warning that
counts them and names the first few.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..masks import IGNORE_INDEX
from ._datamodule import TrainValDataModule
from ._generated import embedded_root
from .image_io import is_image_file, load_rgb_image
from .segmentation_files import (  # noqa: F401  (re-exported: the segmentation data in one place)
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    SEGMENTATION_DATASETS,
    VOC_CLASSES,
    SegmentationSamples,
    _FOLDER_LAYOUTS_HELP,
    _ade20k_split,
    _cityscapes_classes,
    _cityscapes_split,
    _decode_mask,
    _first_dir,
    _label_problem,
    _read_lines,
    _size_problem,
    _threads,
    _voc_split,
    _walk,
    check_samples,
    image_folder_samples,
    pair_by_stem,
    read_cvat_labelmap,
    read_label_mask,
    read_roboflow_classes,
)
from .shapes import SHAPES_SEGMENTATION_CLASSES, ensure_shapes_dataset, shapes_paths
from .transforms import (AREA_FOR_DOWNSCALE, IMAGENET_MEAN, IMAGENET_STD, SeededTransform, mean_fill, normalize_ops,
                         resolve_normalization)

import albumentations as A  # noqa: E402  (imported after .transforms, which disables the update check)
import cv2  # noqa: E402

__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "SEGMENTATION_DATASETS",
    "SHAPES_SEGMENTATION_CLASSES",
    "VOC_CLASSES",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SegmentationSamples",
    "SegmentationTransform",
    "check_samples",
    "image_folder_samples",
    "pair_by_stem",
    "read_cvat_labelmap",
    "read_label_mask",
    "read_roboflow_classes",
    "segmentation_collate",
    "segmentation_eval_transforms",
    "segmentation_train_transforms",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------


class SegmentationTransform(SeededTransform):
    """Picklable ``A.Compose`` called as ``transform(image, mask=None) -> (image, mask)`` on an HxWx3 uint8 RGB
    image and an HxW uint8 label mask (``None``: image only); seeded from torch's global generator on every call
    (see :class:`~mobilevision.data.transforms.SeededTransform`)."""

    def __init__(self, transforms: Sequence[A.BasicTransform], *, deterministic: bool = False) -> None:
        super().__init__(A.Compose(list(transforms)), deterministic=deterministic)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> tuple[Any, Any]:
        self._reseed()
        if mask is None:
            return self.compose(image=image)["image"], None
        out = self.compose(image=image, mask=mask)
        return out["image"], out["mask"]


def segmentation_train_transforms(
    crop_size: int,
    scale_min: float = 0.5,
    scale_max: float = 2.0,
    *,
    hflip: bool = True,
    vflip: bool = False,
    photometric: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    to_tensor: bool = True,
) -> SegmentationTransform:
    """DeepLab training pipeline: random rescale by a factor in ``[scale_min, scale_max]`` (image bilinear / area,
    mask nearest), pad bottom / right to ``crop_size`` (image: the mean colour, mask: ``IGNORE_INDEX``), random
    ``crop_size`` square crop, horizontal (and optionally vertical) flip, light colour jitter (p 0.5), normalize.  ``to_tensor=False`` stops
    before the normalization (uint8 output, for inspection and tests)."""
    if not 0 < scale_min <= scale_max:
        raise UserError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
    fill = mean_fill(mean)
    ops: list[A.BasicTransform] = []
    if (scale_min, scale_max) != (1.0, 1.0):
        ops.append(A.RandomScale(scale_limit=(scale_min - 1.0, scale_max - 1.0), interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST, area_for_downscale=AREA_FOR_DOWNSCALE, p=1.0))
    ops += [A.PadIfNeeded(crop_size, crop_size, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=fill,
                          fill_mask=IGNORE_INDEX),
            A.RandomCrop(crop_size, crop_size)]
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if vflip:
        ops.append(A.VerticalFlip(p=0.5))
    if photometric:
        ops.append(A.ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.02, 0.02),
                                 p=0.5))
    return SegmentationTransform(ops + normalize_ops(mean, std, to_tensor))


def segmentation_eval_transforms(
    eval_size: int | None = None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    to_tensor: bool = True,
) -> SegmentationTransform:
    """Evaluation pipeline for the image only: shorter side resized to ``eval_size`` (None: full resolution),
    normalize.  The label mask stays at the original resolution."""
    ops: list[A.BasicTransform] = []
    if eval_size is not None:
        ops.append(A.SmallestMaxSize(max_size=int(eval_size), interpolation=cv2.INTER_LINEAR,
                                     area_for_downscale=AREA_FOR_DOWNSCALE))
    return SegmentationTransform(ops + normalize_ops(mean, std, to_tensor), deterministic=True)


# --------------------------------------------------------------------------------------------
# dataset and collate
# --------------------------------------------------------------------------------------------


class SegmentationDataset(Dataset):
    """Samples of a :class:`SegmentationSamples`, checked at construction (:func:`check_samples`).

    ``train=True``: items are ``(image, mask)`` after ``transform(image, mask)`` (a
    :func:`segmentation_train_transforms`), the mask int64.  Otherwise ``(image, target)`` with the image through
    ``transform`` (default :func:`segmentation_eval_transforms`) and the target dict of the module docstring.
    ``cache_images`` decodes every image and mask once up front (threads) and keeps them in memory.
    """

    def __init__(self, samples: SegmentationSamples, transform: SegmentationTransform | None = None, *,
                 train: bool = False, num_classes: int | None = None, skip_bad: bool = False,
                 cache_images: bool = False, check: bool = True) -> None:
        self.num_classes = int(num_classes if num_classes is not None else len(samples.class_names))
        if not 1 <= self.num_classes <= IGNORE_INDEX:
            raise UserError(f"{samples.name}: {self.num_classes} classes; 1..{IGNORE_INDEX} supported "
                             f"({IGNORE_INDEX} is the ignore index)")
        n = len(samples)
        self.samples = check_samples(samples, self.num_classes, skip_bad) if check else samples
        if train and transform is None:
            raise UserError("a training dataset needs a transform (segmentation_train_transforms)")
        if train and any(m is None for m in self.samples.masks):
            raise UserError(f"{samples.name}: training needs a mask for every image")
        self.transform = transform if transform is not None else segmentation_eval_transforms()
        self.train = bool(train)
        self.skip_bad = bool(skip_bad)
        self.class_names = list(samples.class_names)
        self.stats = {"images": len(self.samples), "skipped": n - len(self.samples)}
        self._cache: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        if cache_images:
            with ThreadPoolExecutor(max_workers=_threads()) as pool:
                self._cache = list(pool.map(self._load, range(len(self.samples))))

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image = load_rgb_image(self.samples.images[index])
        path = self.samples.masks[index]
        if path is None:
            return image, None
        try:
            raw, labels = _decode_mask(path, self.samples.lut, self.samples.colors)
            problem = (_size_problem(self.samples.images[index], path, image.shape[1::-1], labels.shape[::-1])
                       or _label_problem(path, raw, labels, self.num_classes))
        except ValueError as e:
            problem = str(e)
        if problem is not None:
            if not self.skip_bad:
                raise UserError(f"{problem} (skip_bad=True ignores such masks)")
            logger.warning("%s; ignoring the mask (skip_bad)", problem)
            labels = np.full(image.shape[:2], IGNORE_INDEX)
        return image, labels.astype(np.uint8)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(image HxWx3 uint8, label mask HxW uint8 or None)`` of sample ``index``, before any transform."""
        return self._cache[index] if self._cache is not None else self._load(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, mask = self.load(index)
        if self.train:
            image_t, mask_t = self.transform(image, mask)
            return image_t, torch.as_tensor(mask_t).long()
        image_t, _ = self.transform(image)
        target = {
            "mask": None if mask is None else torch.from_numpy(mask.astype(np.int64)),
            "input_size": tuple(int(s) for s in image_t.shape[-2:]),
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
            "file_name": self.samples.names[index],
        }
        return image_t, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.samples.name}: {len(self)} images, {self.num_classes} classes)"


def segmentation_collate(batch: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, Any]:
    """Training items ``(image, mask)``: stacked.  Evaluation items ``(image, target)``: images zero-padded bottom /
    right to the batch's largest height and width (``target["input_size"]`` is the valid region), targets a list."""
    images, targets = zip(*batch)
    if isinstance(targets[0], torch.Tensor):
        return torch.stack(images), torch.stack(targets)
    h, w = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for k, image in enumerate(images):
        out[k, :, : image.shape[-2], : image.shape[-1]] = image
    return out, list(targets)


# --------------------------------------------------------------------------------------------
# data module
# --------------------------------------------------------------------------------------------


class SegmentationDataModule(TrainValDataModule):
    """Semantic segmentation data (defaults to the embedded shapes dataset); batches as in the module docstring.

    Datasets (nothing is ever downloaded; torchvision's dataset classes read the benchmarks' file lists):

    * ``"shapes"``: the generated shapes dataset's index masks (6 classes: background + 5 shapes), generated under
      ``shapes_root`` by ``prepare_data()`` on first use (the same folder as the detection task's);
    * ``"voc"``: PASCAL VOC 2012 under ``root`` (the folder holding ``VOCdevkit``), 21 classes, val = ``val``
      (1449); train = ``train`` (1464) or, with ``voc_sbd``, the usual 10582-image "trainaug" set:
      ``VOC2012/SegmentationClassAug/`` + ``ImageSets/Segmentation/trainaug.txt`` when present, else VOC train +
      SBD (torchvision ``SBDataset`` under ``sbd_root``, default ``root/SBD``; ``train_noval`` when listed, else
      train + val) without the VOC val images;
    * ``"ade20k"``: ``ADEChallengeData2016/{images,annotations}/{training,validation}`` under ``root``, 150 classes
      (mask value 0 "other" -> 255, ``v`` -> ``v - 1``);
    * ``"cityscapes"``: ``leftImg8bit`` + ``gtFine`` ``*_labelIds.png`` under ``root`` (torchvision ``Cityscapes``),
      mapped to the 19 train ids (the others -> 255);
    * ``"folder"``: a user's own data under ``root``, layout detected from what is there:

      - a CVAT "Segmentation mask 1.1" / PASCAL VOC export: ``JPEGImages/``, ``SegmentationClass/`` (colour PNGs:
        colour -> class through ``labelmap.txt``, ``name:r,g,b::`` lines; a colour not in it is an error naming
        the file; VOC's border colour 224,224,192 is ignored unless listed), ``ImageSets/Segmentation/train.txt``
        and ``val.txt`` (an export with one subset only, CVAT's ``default.txt``, is split by file name: about one
        image in ten validates, the rest trains; a warning says so);
      - a Roboflow "Semantic Segmentation Masks" export: ``train/`` and ``valid/`` (or ``val/``) holding ``x.jpg``
        and ``x_mask.png`` (grayscale values) and ``_classes.csv`` (``Pixel Value, Class``: classes in pixel value
        order);
      - ``images/train``, ``masks/train``, ``images/val``, ``masks/val`` (index PNGs: palette indices or grayscale
        values; masks matched to images by relative path without extension) with an optional ``classes.txt`` (one
        name per line) in ``root``; ``train_images`` / ``train_masks`` / ``val_images`` / ``val_masks`` replace
        those folders (then ``root`` is only needed for ``classes.txt``).

      Class names come from the label map / ``_classes.csv`` / ``classes.txt`` (``class_names``, if given, must
      agree), else ``class_names``, else ``num_classes`` (names "0", "1", ...); at most 255 classes.  Every mask
      is decoded at setup to check it.

    Args:
        dataset / root / train_images / train_masks / val_images / val_masks / class_names / num_classes: see above.
        crop_size: training crop side S (the model's ``image_size``); 512 suits VOC / ADE20K, 769 or 1024
            Cityscapes, the shapes image size (192) shapes.
        scale_min / scale_max: the training random rescale range (DeepLab: 0.5 - 2.0).
        eval_size: evaluation images resized to this shorter side; None: full resolution (the usual protocol).
        hflip / vflip / photometric: training horizontal flip / vertical flip (scenes without an up, such as
            shapes) / light colour jitter.
        mean / std: normalization, RGB in [0, 1] (None: ImageNet's).
        batch_size: training batch size.
        eval_batch_size: validation / test / predict batch size (images padded to the batch's largest); None:
            ``batch_size`` for shapes (one image size), 1 otherwise.
        num_workers / pin_memory: DataLoader settings.
        voc_sbd / sbd_root: train VOC on trainaug (see above) / where SBD is.
        skip_bad: skip unusable samples with a warning instead of raising (see the module docstring).
        binary_masks: ``folder`` masks of 0 and 255 (as many tools save a foreground mask) read as classes 0 and 1
            (2 class names); without it such masks are an error, 255 being the ignore index.
        cache_images: decode the training and validation images and masks once and keep them in memory.
        predict_images: folder of images for ``predict`` (targets without masks); default: the validation set.
        shapes_root / shapes_num_train / shapes_num_val / shapes_image_size / shapes_seed: the embedded dataset's
            location and generation parameters (the detection data module's defaults: one generated folder).

    ``num_classes``, ``class_names`` and ``image_size`` (= ``crop_size``) are known before ``setup`` (the CLI links
    them to the model); ``ignore_index`` is 255.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        dataset: str = "shapes",
        root: str | None = None,
        train_images: str | None = None,
        train_masks: str | None = None,
        val_images: str | None = None,
        val_masks: str | None = None,
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        crop_size: int = 512,
        scale_min: float = 0.5,
        scale_max: float = 2.0,
        eval_size: int | None = None,
        hflip: bool = True,
        vflip: bool = False,
        photometric: bool = True,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        voc_sbd: bool = True,
        sbd_root: str | None = None,
        skip_bad: bool = False,
        binary_masks: bool = False,
        cache_images: bool = False,
        predict_images: str | None = None,
        shapes_root: str | None = None,
        shapes_num_train: int = 2000,
        shapes_num_val: int = 200,
        shapes_image_size: int = 192,
        shapes_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # stored in checkpoints: mobilevision eval finds the data a model was trained on
        self.collate_fn = segmentation_collate
        if dataset not in SEGMENTATION_DATASETS:
            raise UserError(f"dataset must be one of {SEGMENTATION_DATASETS}, got {dataset!r}")
        folders = (train_images, train_masks, val_images, val_masks)
        if dataset != "folder" and any(f is not None for f in folders):
            raise UserError("train_images / train_masks / val_images / val_masks are for dataset='folder'")
        if root is None and (dataset not in ("shapes", "folder")
                             or dataset == "folder" and not all(f is not None for f in folders)):
            raise UserError(f"dataset {dataset!r} needs root= (the folder holding the data)")
        if int(crop_size) < 8:
            raise UserError(f"crop_size must be >= 8, got {crop_size}")
        if not 0 < scale_min <= scale_max:
            raise UserError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
        self.dataset = dataset
        self.root = root
        self.folders = dict(zip(("train_images", "train_masks", "val_images", "val_masks"), folders))
        self._given_class_names = list(class_names) if class_names is not None else None
        self._given_num_classes = num_classes
        self.crop_size = int(crop_size)
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.eval_size = None if eval_size is None else int(eval_size)
        self.hflip, self.vflip, self.photometric = bool(hflip), bool(vflip), bool(photometric)
        self.mean, self.std = resolve_normalization(mean, std)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size if eval_batch_size is not None else
                                   (batch_size if dataset == "shapes" else 1))
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.voc_sbd, self.sbd_root = bool(voc_sbd), sbd_root
        self.skip_bad, self.cache_images = bool(skip_bad), bool(cache_images)
        if binary_masks and dataset != "folder":
            raise UserError("binary_masks is for dataset='folder' (masks of 0 and 255)")
        self.binary_masks = bool(binary_masks)
        self.predict_images = predict_images
        self.shapes_root = embedded_root("shapes", shapes_root)
        self.shapes_kwargs = {"num_train": int(shapes_num_train), "num_val": int(shapes_num_val),
                              "image_size": int(shapes_image_size), "seed": int(shapes_seed)}
        self.train_dataset: SegmentationDataset | None = None
        self.val_dataset: SegmentationDataset | None = None
        self.predict_dataset: SegmentationDataset | None = None
        self._layout: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- metadata

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (known before ``setup``)."""
        return list(self._meta()["class_names"])

    @property
    def num_classes(self) -> int:
        """Number of classes, background included where the dataset has one (known before ``setup``)."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """The training crop side (the model's input size)."""
        return self.crop_size

    def _meta(self) -> dict[str, Any]:
        """``{"class_names", "kind", ...}``: the classes and, for ``folder``, the detected layout."""
        if self._layout is not None:
            return self._layout
        fixed = {"shapes": SHAPES_SEGMENTATION_CLASSES, "voc": VOC_CLASSES, "ade20k": ADE20K_CLASSES}
        if self.dataset in fixed or self.dataset == "cityscapes":
            names = list(fixed[self.dataset] if self.dataset in fixed else _cityscapes_classes())
            layout = {"kind": self.dataset, "class_names": names, "from": f"dataset {self.dataset!r}"}
        else:
            layout = self._detect_folder_layout()
        names = layout["class_names"]
        given, n = self._given_class_names, self._given_num_classes
        if names is None:
            if given is not None:
                names = given
            elif n is not None:
                names = [str(i) for i in range(int(n))]
            else:
                raise UserError(f"{self.root}: no label map, _classes.csv or classes.txt (one class name per line) "
                                 "to name the classes; pass class_names= (or num_classes=)")
        elif given is not None and list(given) != list(names):
            raise UserError(f"class_names {given} differ from the {len(names)} classes of {layout['from']}: {names}")
        if n is not None and int(n) != len(names):
            raise UserError(f"num_classes={n} but {layout.get('from', 'class_names')} has {len(names)} classes")
        if not 2 <= len(names) <= IGNORE_INDEX:
            raise UserError(f"{len(names)} classes: segmentation needs 2..{IGNORE_INDEX} ({IGNORE_INDEX} is the "
                             "ignore index)")
        layout["class_names"] = list(names)
        self._layout = layout
        # the resolved classes in the saved (and logged: "initial") hyper-parameters: they equal the model's (linked
        # from here), as Lightning requires of keys both have, and a checkpoint's data module re-creates them
        for hparams in (self.hparams, getattr(self, "_hparams_initial", None)):
            if hparams is not None:
                hparams.update(class_names=list(names), num_classes=len(names))
        return layout

    def _detect_folder_layout(self) -> dict[str, Any]:
        root, given = self.root, {k: v for k, v in self.folders.items() if v is not None}
        classes_txt = os.path.join(root, "classes.txt") if root is not None else None
        plain = {"kind": "plain", "from": classes_txt,
                 "class_names": _read_lines(classes_txt) if classes_txt and os.path.isfile(classes_txt) else None}
        if given or root is None:
            return plain
        if os.path.isfile(os.path.join(root, "labelmap.txt")) or os.path.isdir(os.path.join(root, "SegmentationClass")):
            labelmap = os.path.join(root, "labelmap.txt")
            if not os.path.isfile(labelmap):
                raise FileNotFoundError(f"{root} looks like a CVAT / VOC export (SegmentationClass/) but has no "
                                        "labelmap.txt (name:r,g,b:: lines) to map the mask colours to classes")
            names, colors = read_cvat_labelmap(labelmap)
            return {"kind": "cvat", "from": labelmap, "class_names": names, "colors": colors}
        split_dirs = {s: _first_dir(*(os.path.join(root, d) for d in dirs))
                      for s, dirs in (("train", ("train",)), ("val", ("valid", "val")))}
        csv_path = next((p for p in (os.path.join(root, "_classes.csv"),
                                     *(os.path.join(d, "_classes.csv") for d in split_dirs.values() if d))
                         if os.path.isfile(p)), None)
        if csv_path is not None:
            names, lut = read_roboflow_classes(csv_path)
            return {"kind": "roboflow", "from": csv_path, "class_names": names, "lut": lut, "dirs": split_dirs}
        return plain  # also the fallback: _samples says which layouts are understood when the folders are not there

    # ----------------------------------------------------------------------------- samples

    def _samples(self, split: str) -> SegmentationSamples:
        layout = self._meta()
        names, kind = layout["class_names"], layout["kind"]
        if kind == "shapes":
            p = shapes_paths(self.shapes_root)
            return pair_by_stem(p[f"{split}_images"], p[f"{split}_masks"], names, f"shapes {split}")
        if kind == "voc":
            return _voc_split(self.root, split, self.voc_sbd, self.sbd_root)
        if kind == "ade20k":
            return _ade20k_split(self.root, split)
        if kind == "cityscapes":
            return _cityscapes_split(self.root, split)
        if kind == "cvat":
            return self._cvat_split(split, layout)
        if kind == "roboflow":
            folder = layout["dirs"][split]
            if folder is None:
                raise FileNotFoundError(f"{self.root}: Roboflow export without a "
                                        f"{'train' if split == 'train' else 'valid'}/ folder")
            return pair_by_stem(folder, folder, names, f"{folder}", mask_suffix="_mask", lut=layout["lut"],
                                check_labels=True)
        images = self.folders[f"{split}_images"] or os.path.join(self.root, "images", split)
        masks = self.folders[f"{split}_masks"] or os.path.join(self.root, "masks", split)
        if not self.folders[f"{split}_images"] and not os.path.isdir(images):
            raise FileNotFoundError(f"{self.root}: no {images} (unknown layout). {_FOLDER_LAYOUTS_HELP}")
        if self.binary_masks:  # 0 / 255 (or 0 / 1) masks: two classes, nothing ignored
            if len(names) != 2:
                raise UserError(f"binary_masks=True needs 2 classes (background, object), got {names}")
            lut = np.full(256, -1, dtype=np.int64)
            lut[0], lut[1], lut[IGNORE_INDEX] = 0, 1, 1
            return pair_by_stem(images, masks, names, f"{images}", lut=lut, check_labels=True)
        return pair_by_stem(images, masks, names, f"{images}", check_labels=True)

    def _cvat_split(self, split: str, layout: dict[str, Any]) -> SegmentationSamples:
        sets_dir = os.path.join(self.root, "ImageSets", "Segmentation")
        list_file = os.path.join(sets_dir, f"{split}.txt")
        present = sorted(Path(p).stem for p in os.listdir(sets_dir)) if os.path.isdir(sets_dir) else []
        if os.path.isfile(list_file):
            stems = _read_lines(list_file)
        elif len(present) == 1 and not {"train", "val"} & set(present):
            # one subset (CVAT's "default"): a fixed split by file name, about 1 image in 10 for validation
            list_file = os.path.join(sets_dir, f"{present[0]}.txt")
            everything = _read_lines(list_file)
            held_out = [s for s in everything if zlib.crc32(s.encode()) % 10 == 0] or everything[-1:]
            stems = held_out if split == "val" else [s for s in everything if s not in set(held_out)] or everything
            if split == "val":
                logger.warning("%s: no train.txt / val.txt; validating on %d of its %d images (file names whose "
                               "CRC-32 is a multiple of 10), training on the others", list_file, len(stems),
                               len(everything))
        else:
            raise FileNotFoundError(
                f"{list_file} not found (subsets present: {present or 'none'}): a CVAT export needs the subsets "
                "'train' and 'val', or a single one that is then split (set each image's subset in CVAT, or write "
                "val.txt / train.txt with one image name without extension per line)")
        images_dir, masks_dir = os.path.join(self.root, "JPEGImages"), os.path.join(self.root, "SegmentationClass")
        images = _walk(images_dir, is_image_file) if os.path.isdir(images_dir) else {}
        return SegmentationSamples(
            [images.get(s, os.path.join(images_dir, s + ".jpg")) for s in stems],
            [os.path.join(masks_dir, s + ".png") for s in stems],
            [os.path.relpath(images.get(s, os.path.join(images_dir, s + ".jpg")), images_dir).replace(os.sep, "/")
             for s in stems],
            layout["class_names"], f"{list_file}", colors=layout["colors"], check_labels=True)

    # ----------------------------------------------------------------------------- lifecycle

    def prepare_data(self) -> None:
        if self.dataset == "shapes":
            ensure_shapes_dataset(self.shapes_root, **self.shapes_kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset == "shapes":
            # Idempotent and cheap when present; covers setup() without prepare_data().
            ensure_shapes_dataset(self.shapes_root, **self.shapes_kwargs)
        common = {"num_classes": self.num_classes, "skip_bad": self.skip_bad, "cache_images": self.cache_images}
        if stage in (None, "fit") and self.train_dataset is None:
            transform = segmentation_train_transforms(self.crop_size, self.scale_min, self.scale_max, hflip=self.hflip,
                                                      vflip=self.vflip, photometric=self.photometric,
                                                      mean=self.mean, std=self.std)
            self.train_dataset = SegmentationDataset(self._samples("train"), transform, train=True, **common)
        evaluate = stage in (None, "fit", "validate", "test") or (stage == "predict" and self.predict_images is None)
        if evaluate and self.val_dataset is None:
            eval_transform = segmentation_eval_transforms(self.eval_size, mean=self.mean, std=self.std)
            self.val_dataset = SegmentationDataset(self._samples("val"), eval_transform, **common)
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_images is not None:
                self.predict_dataset = SegmentationDataset(image_folder_samples(self.predict_images, self.class_names),
                                                           segmentation_eval_transforms(self.eval_size, mean=self.mean,
                                                                                        std=self.std),
                                                           num_classes=self.num_classes)
            else:
                self.predict_dataset = self.val_dataset

