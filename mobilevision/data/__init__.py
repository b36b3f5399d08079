"""Detection data: COCO datasets, bbox-safe augmentation, the shapes demo dataset, a Lightning data module.

This package depends only on torch / albumentations / pycocotools / Lightning; it never imports
``mobilevision.models`` or the tasks.
"""

from .coco import CocoDetection, ImageDecodeError, ImageSizeMismatchError, load_coco, load_rgb_image
from .detection_datamodule import CocoDetectionDataModule, ImageFolderDataset, detection_collate
from .shapes import SHAPES_CATEGORIES, ensure_shapes_dataset, render_shapes_image, shapes_paths
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectionTransform,
    SSDRandomIoUCrop,
    ZoomOut,
    eval_transforms,
    train_transforms,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES_CATEGORIES",
    "CocoDetection",
    "CocoDetectionDataModule",
    "DetectionTransform",
    "ImageDecodeError",
    "ImageFolderDataset",
    "ImageSizeMismatchError",
    "SSDRandomIoUCrop",
    "ZoomOut",
    "detection_collate",
    "ensure_shapes_dataset",
    "eval_transforms",
    "load_coco",
    "load_rgb_image",
    "render_shapes_image",
    "shapes_paths",
    "train_transforms",
]
