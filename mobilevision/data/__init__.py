"""Data: COCO detection datasets, bbox-safe augmentation, the shapes demo dataset, a detection data module;
image classification datasets (image folders, fine-grained benchmarks, the glyphs demo dataset) and data module;
geotagged photo lists, the geoscenes demo dataset and the geolocalization data module; semantic segmentation
datasets (the shapes masks, VOC, ADE20K, Cityscapes, a user's own CVAT / Roboflow / image + mask folders) and data
module.

This package depends only on torch / albumentations / pycocotools / Lightning and, for reading COCO
files and label masks the way evaluation reads them, ``mobilevision.coco_format`` and
``mobilevision.evaluation.segmentation``; it never imports ``mobilevision.models`` or the tasks.
"""

from .coco_detection import (
    CocoDetection,
    ImageDecodeError,
    ImageSizeMismatchError,
    load_coco,
    load_rgb_image,
    read_coco,
    training_categories,
)
from .detection_datamodule import CocoDetectionDataModule, ImageFolderDataset, detection_collate
from .shapes import SHAPES_CATEGORIES, ensure_shapes_dataset, render_shapes_image, shapes_paths
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectionTransform,
    SeededTransform,
    SSDRandomIoUCrop,
    ZoomOut,
    detection_eval_transforms,
    detection_train_transforms,
)
from .image_io import IMAGE_EXTENSIONS, is_image_file
from ._generated import data_home, embedded_root
from .glyphs import GLYPH_CLASSES, GLYPH_TRAITS, ensure_glyphs_dataset, glyphs_paths, render_glyph_image
from .finegrained import BENCHMARK_DATASETS, BENCHMARK_NUM_CLASSES, SplitSamples, load_benchmark_split
from .classification import (
    CLASSIFICATION_AUGMENTS,
    CLASSIFICATION_DATASETS,
    ClassificationDataModule,
    ClassificationDataset,
    ClassificationTransform,
    classification_eval_transforms,
    classification_train_transforms,
    randaugment_ops,
    scan_image_folder,
)

from .geolocalization import GEO_DATASETS, GeoImageDataset, GeolocalizationDataModule, GeoSamples, read_geotagged_list
from .geoscenes import ensure_geoscenes_dataset, render_geoscene
from .glyph_attributes import GLYPH_ATTRIBUTES, ensure_glyph_attributes_dataset
from .attributes import (ATTRIBUTE_DATASETS, AttributeSamples, AttributesDataModule, AttributesDataset,
                         read_attribute_csv, read_celeba)
from .segmentation import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    SEGMENTATION_DATASETS,
    SHAPES_SEGMENTATION_CLASSES,
    VOC_CLASSES,
    SegmentationDataModule,
    SegmentationDataset,
    SegmentationSamples,
    SegmentationTransform,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)

__all__ = [
    "ATTRIBUTE_DATASETS",
    "GLYPH_ATTRIBUTES",
    "AttributeSamples",
    "AttributesDataModule",
    "AttributesDataset",
    "ensure_glyph_attributes_dataset",
    "read_attribute_csv",
    "read_celeba",
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
    "data_home",
    "detection_collate",
    "embedded_root",
    "ensure_shapes_dataset",
    "detection_eval_transforms",
    "load_coco",
    "load_rgb_image",
    "read_coco",
    "render_shapes_image",
    "shapes_paths",
    "detection_train_transforms",
    "training_categories",
    # classification
    "BENCHMARK_DATASETS",
    "BENCHMARK_NUM_CLASSES",
    "CLASSIFICATION_AUGMENTS",
    "CLASSIFICATION_DATASETS",
    "GLYPH_CLASSES",
    "GLYPH_TRAITS",
    "IMAGE_EXTENSIONS",
    "ClassificationDataModule",
    "ClassificationDataset",
    "ClassificationTransform",
    "SeededTransform",
    "SplitSamples",
    "classification_eval_transforms",
    "classification_train_transforms",
    "ensure_glyphs_dataset",
    "glyphs_paths",
    "is_image_file",
    "load_benchmark_split",
    "randaugment_ops",
    "render_glyph_image",
    "scan_image_folder",
    # geolocalization
    "GEO_DATASETS",
    "GeoImageDataset",
    "GeoSamples",
    "GeolocalizationDataModule",
    "ensure_geoscenes_dataset",
    "read_geotagged_list",
    "render_geoscene",
    # semantic segmentation
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "SEGMENTATION_DATASETS",
    "SHAPES_SEGMENTATION_CLASSES",
    "VOC_CLASSES",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SegmentationSamples",
    "SegmentationTransform",
    "segmentation_collate",
    "segmentation_eval_transforms",
    "segmentation_train_transforms",
]
