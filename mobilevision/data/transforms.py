"""Bbox-safe albumentations pipelines for SSD-style detection training.

``detection_train_transforms(image_size, augment=...)`` / ``detection_eval_transforms(image_size)`` return a picklable
:class:`DetectionTransform` called as ``transform(image, boxes, labels)`` with an HxWx3 uint8
image and xyxy pixel boxes; it returns ``(CHW float32 tensor normalized with ImageNet mean/std,
boxes (N, 4) float32 xyxy in output pixels, labels (N,) int64)``.

Policies (``augment``):

* ``"none"``: resize to ``image_size`` x ``image_size`` + normalize (also the eval pipeline);
* ``"flip"``: horizontal flip, resize, normalize;
* ``"flips"``: horizontal and vertical flips, resize, normalize (for content without an up, such as the
  embedded shapes, aerial or microscope images);
* ``"ssdlite"``: SSD random IoU crop + flip (torchvision's SSDLite recipe);
* ``"ssd"``: photometric distortion + zoom-out + SSD random IoU crop + flip (torchvision's SSD
  recipe; zoom-out defaults to at most 2x instead of 4x because at 192-320 px most objects are
  already small - pass ``zoom_out_max=4.0`` for the original recipe).

albumentations 2.0.8 has no SSD IoU crop or zoom-out, so :class:`SSDRandomIoUCrop` and
:class:`ZoomOut` implement them as ``DualTransform``s.

Resize is a plain (aspect-ratio changing) resize to a square, so network-input boxes map back to
the original image with ``x * w / S``, ``y * h / S`` (see ``mobilevision.evaluation.scale_boxes``).
"""

from __future__ import annotations

import os
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network version check on import

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.augmentations.crops import functional as fcrops  # noqa: E402
from albumentations.augmentations.crops.transforms import BaseCrop  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from ..errors import UserError
from ..imagenet import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

__all__ = [
    "AUGMENT_POLICIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DetectionTransform",
    "SSDRandomIoUCrop",
    "SeededTransform",
    "ZoomOut",
    "detection_eval_transforms",
    "mean_fill",
    "resolve_crop",
    "resolve_normalization",
    "normalize_ops",
    "detection_train_transforms",
]

AUGMENT_POLICIES = ("none", "flip", "flips", "ssdlite", "ssd")


def resolve_normalization(mean: Sequence[float] | None,
                          std: Sequence[float] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as the data modules take them: None is ImageNet's (:mod:`mobilevision.imagenet`); three
    channel values each, std positive, in the [0, 1] scale of the image."""
    mean = IMAGENET_MEAN if mean is None else tuple(float(m) for m in mean)
    std = IMAGENET_STD if std is None else tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not all(-1.0 <= m <= 2.0 for m in mean):
        raise UserError(f"mean and std are three RGB values in the [0, 1] scale (std > 0), got mean {list(mean)}, "
                        f"std {list(std)}")
    return mean, std


def resolve_crop(resize_ratio: float | None, interpolation: str | None) -> tuple[float, str]:
    """``(resize_ratio, interpolation)`` of the center-crop pipelines: None is the standard 0.875 / bilinear."""
    ratio = DEFAULT_CROP_PCT if resize_ratio is None else float(resize_ratio)
    interp = DEFAULT_INTERPOLATION if interpolation is None else str(interpolation)
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"resize_ratio must be in (0, 1], got {resize_ratio}")
    if interp not in INTERPOLATIONS:
        raise UserError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    return ratio, interp


def mean_fill(mean: Sequence[float] = IMAGENET_MEAN) -> tuple[int, ...]:
    """The 8-bit RGB colour of ``mean`` (fractions): the padding that normalizes to zero."""
    return tuple(int(round(m * 255)) for m in mean)


def normalize_ops(mean: Sequence[float], std: Sequence[float], to_tensor: bool) -> list[A.BasicTransform]:
    """``Normalize`` + ``ToTensorV2`` (nothing when ``to_tensor`` is False: uint8 HWC out, for inspection)."""
    if not to_tensor:
        return []
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def _to_abs(bboxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    h, w = shape[:2]
    return bboxes[:, :4] * np.array([w, h, w, h], dtype=np.float64)


class SSDRandomIoUCrop(BaseCrop):
    """SSD's random IoU crop (Liu et al. 2016; same sampling as torchvision's ``RandomIoUCrop``).

    Picks a minimum IoU from ``sampler_options`` (1.0 = keep the whole image), then tries up to
    ``trials`` crops with side scales in ``[min_scale, max_scale]`` and aspect ratio in
    ``[min_aspect_ratio, max_aspect_ratio]``; a crop is accepted when at least one box centre lies
    inside it and the best IoU of those boxes with the crop is >= the minimum.  Boxes whose centre
    falls outside the accepted crop are removed; the others are kept, however little of them is
    visible, clipped to it (SSD, torchvision).  After
    ``max_attempts`` unsuccessful IoU draws the image is left uncropped (torchvision loops
    forever).  Images without boxes get an unconstrained random crop.
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect_ratio: float = 0.5,
        max_aspect_ratio: float = 2.0,
        sampler_options: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        trials: int = 40,
        max_attempts: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.min_aspect_ratio = float(min_aspect_ratio)
        self.max_aspect_ratio = float(max_aspect_ratio)
        self.sampler_options = tuple(float(o) for o in sampler_options)
        self.trials = int(trials)
        self.max_attempts = int(max_attempts)

    @property
    def targets_as_params(self) -> list[str]:
        return ["bboxes"]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        full = (0, 0, w, h)
        bboxes = data.get("bboxes")
        boxes = _to_abs(np.asarray(bboxes), (h, w)) if bboxes is not None and len(bboxes) else np.zeros((0, 4))
        rnd = self.py_random.random
        for _ in range(self.max_attempts):
            min_iou = self.py_random.choice(self.sampler_options)
            if min_iou >= 1.0:
                return {"crop_coords": full}
            for _ in range(self.trials):
                sw = self.min_scale + (self.max_scale - self.min_scale) * rnd()
                sh = self.min_scale + (self.max_scale - self.min_scale) * rnd()
                new_w, new_h = int(w * sw), int(h * sh)
                if new_w < 1 or new_h < 1:
                    continue
                if not self.min_aspect_ratio <= new_w / new_h <= self.max_aspect_ratio:
                    continue
                left, top = int((w - new_w) * rnd()), int((h - new_h) * rnd())
                right, bottom = left + new_w, top + new_h
                if len(boxes) == 0:
                    return {"crop_coords": (left, top, right, bottom)}
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                inside = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
                if not inside.any():
                    continue
                b = boxes[inside]
                iw = np.clip(np.minimum(b[:, 2], right) - np.maximum(b[:, 0], left), 0, None)
                ih = np.clip(np.minimum(b[:, 3], bottom) - np.maximum(b[:, 1], top), 0, None)
                inter = iw * ih
                union = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + new_w * new_h - inter
                if (inter / union).max() < min_iou:
                    continue
                return {"crop_coords": (left, top, right, bottom)}
        return {"crop_coords": full}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        shape = params["shape"][:2]
        if len(bboxes) and tuple(crop_coords) != (0, 0, shape[1], shape[0]):
            b = _to_abs(bboxes, shape)
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            left, top, right, bottom = crop_coords
            keep = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
            # clipped here, so that the pipeline's min_visibility never drops a box the crop keeps (as in SSD)
            h, w = shape
            lo = np.array([left / w, top / h, left / w, top / h])
            hi = np.array([right / w, bottom / h, right / w, bottom / h])
            bboxes = bboxes[keep].copy()
            bboxes[:, :4] = np.clip(bboxes[:, :4], lo, hi)
        return fcrops.crop_bboxes_by_coords(bboxes, crop_coords, shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return (
            "min_scale",
            "max_scale",
            "min_aspect_ratio",
            "max_aspect_ratio",
            "sampler_options",
            "trials",
            "max_attempts",
        )


class ZoomOut(A.DualTransform):
    """SSD zoom-out: place the image at a random position on a canvas ``r`` times larger
    (``r ~ U[1, max_scale]``) filled with ``fill`` (default: ImageNet mean colour)."""

    def __init__(
        self,
        max_scale: float = 4.0,
        fill: Sequence[float] | float = mean_fill(),
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        if max_scale < 1.0:
            raise UserError(f"max_scale must be >= 1, got {max_scale}")
        self.max_scale = float(max_scale)
        self.fill = fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        r = self.py_random.uniform(1.0, self.max_scale)
        new_w, new_h = int(w * r), int(h * r)
        left = int((new_w - w) * self.py_random.random())
        top = int((new_h - h) * self.py_random.random())
        return {"canvas_hw": (new_h, new_w), "offset": (left, top)}

    def apply(self, img: np.ndarray, canvas_hw: tuple[int, int], offset: tuple[int, int], **params: Any) -> np.ndarray:
        h, w = img.shape[:2]
        left, top = offset
        canvas = np.empty((*canvas_hw, *img.shape[2:]), dtype=img.dtype)
        fill = np.asarray(self.fill, dtype=np.float64)
        if fill.ndim and img.ndim == 3 and fill.shape[0] != img.shape[2]:
            fill = fill.mean()
        canvas[...] = fill.astype(img.dtype) if np.issubdtype(img.dtype, np.integer) else fill
        canvas[top : top + h, left : left + w] = img
        return canvas

    def apply_to_mask(
        self, mask: np.ndarray, canvas_hw: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        canvas = np.zeros((*canvas_hw, *mask.shape[2:]), dtype=mask.dtype)
        h, w = mask.shape[:2]
        canvas[offset[1] : offset[1] + h, offset[0] : offset[0] + w] = mask
        return canvas

    def apply_to_bboxes(
        self, bboxes: np.ndarray, canvas_hw: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        if not len(bboxes):
            return bboxes
        h, w = params["shape"][:2]
        new_h, new_w = canvas_hw
        out = bboxes.copy()
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * w + offset[0]) / new_w
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * h + offset[1]) / new_h
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_scale", "fill")


class SeededTransform:
    """Picklable wrapper of an ``A.Compose`` whose randomness comes from torch's global generator.

    Each call (``_reseed()``) draws a seed with ``torch.randint`` and gives the whole pipeline one
    ``random.Random`` / numpy ``Generator`` pair seeded with it.  So DataLoader workers (seeded
    differently by torch) never repeat each other's augmentations, every epoch differs, and
    ``torch.manual_seed`` / ``seed_everything`` make runs reproducible. ``deterministic=True`` (the evaluation
    pipelines: resize, crop, normalize) draws no seed, so evaluating never advances the user's generator.
    (albumentations' own
    ``Compose(seed=...)`` gives every transform an identical stream, which correlates e.g. flip and
    zoom-out decisions, and is copied unchanged into every worker.)
    """

    def __init__(self, compose: A.Compose, *, deterministic: bool = False) -> None:
        self.compose = compose
        self.deterministic = deterministic
        self._random = random.Random(0)
        self.compose.set_random_state(np.random.default_rng(0), self._random)

    def _reseed(self) -> None:
        if self.deterministic:  # an evaluation pipeline draws nothing: the user's torch RNG stays where it was
            return
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self._random.seed(seed)
        self.compose.random_generator.bit_generator.state = np.random.PCG64(seed).state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.compose})"


class DetectionTransform(SeededTransform):
    """Picklable wrapper of an ``A.Compose`` with pascal_voc (xyxy pixel) boxes.

    Seeded from torch's global generator on every call (see :class:`SeededTransform`). After each
    transform, albumentations clips the boxes to the image and drops those narrower or shorter than
    ``min_size`` pixels or with less than ``min_visibility`` of their area left. No transform of this
    module leaves a box partly outside the image (the IoU crop clips the boxes it keeps itself), so
    ``min_visibility`` only matters for other transforms.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], *, min_visibility: float = 0.0, min_size: float = 1.0,
                 deterministic: bool = False):
        super().__init__(
            A.Compose(
                list(transforms),
                bbox_params=A.BboxParams(
                    format="pascal_voc",
                    label_fields=["labels"],
                    min_visibility=min_visibility,
                    min_width=min_size,
                    min_height=min_size,
                    clip=True,
                    filter_invalid_bboxes=True,
                ),
            ),
            deterministic=deterministic,
        )

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        self._reseed()
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        out = self.compose(image=image, bboxes=boxes, labels=labels)
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        out_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        return out["image"], out_boxes, out_labels


#: How every resize of the project shrinks an image (training, validation, prediction, every task): pixel-area
#: averaging (OpenCV's INTER_AREA), so a 12 MP phone photo brought down to a few hundred pixels does not alias;
#: enlarging is bilinear. Pass it as ``area_for_downscale`` to albumentations' resizes.
AREA_FOR_DOWNSCALE = "image"


def square_resize(height: int, width: int | None = None) -> A.Resize:
    """Resize to ``height`` x ``width`` (aspect not kept), area-averaged when shrinking (the detection input)."""
    return A.Resize(height, width or height, area_for_downscale=AREA_FOR_DOWNSCALE)


def _resize_and_normalize(image_size: int, mean: Sequence[float], std: Sequence[float], to_tensor: bool) -> list[A.BasicTransform]:
    return [square_resize(image_size), *normalize_ops(mean, std, to_tensor)]


def detection_train_transforms(
    image_size: int,
    augment: str = "ssd",
    *,
    zoom_out_max: float = 2.0,
    zoom_out_p: float = 0.5,
    photometric: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    to_tensor: bool = True,
) -> DetectionTransform:
    """Training pipeline; ``augment`` in ``AUGMENT_POLICIES`` (see the module docstring).

    ``to_tensor=False`` stops after the resize (uint8 HxWx3 output), for inspection and tests.
    """
    if augment not in AUGMENT_POLICIES:
        raise UserError(f"augment must be one of {AUGMENT_POLICIES}, got {augment!r}")
    ops: list[A.BasicTransform] = []
    if augment == "ssd":
        if photometric:
            # torchvision's RandomPhotometricDistort ranges.
            ops.append(
                A.ColorJitter(
                    brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.05, 0.05), p=0.5
                )
            )
        if zoom_out_max > 1.0 and zoom_out_p > 0:
            fill = mean_fill(mean)
            ops.append(ZoomOut(max_scale=zoom_out_max, fill=fill, p=zoom_out_p))
    if augment in ("ssd", "ssdlite"):
        ops.append(SSDRandomIoUCrop())
    if augment != "none":
        ops.append(A.HorizontalFlip(p=0.5))
    if augment == "flips":
        ops.append(A.VerticalFlip(p=0.5))
    ops += _resize_and_normalize(image_size, mean, std, to_tensor)
    return DetectionTransform(ops)


def detection_eval_transforms(
    image_size: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    to_tensor: bool = True,
) -> DetectionTransform:
    """Evaluation pipeline: resize to ``image_size`` x ``image_size`` + normalize (no box is dropped)."""
    return DetectionTransform(_resize_and_normalize(image_size, mean, std, to_tensor), min_visibility=0.0, min_size=0.0,
                              deterministic=True)
