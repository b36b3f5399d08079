"""Composed networks: a backbone plus a task head."""

from .classifier import ImageClassifier, create_classifier
from .pretrained import load_pretrained
from .segmentation import SEGMENTATION_HEADS, SegmentationModel, multi_scale_probs
from .ssdlite import SSDLite

__all__ = ["SEGMENTATION_HEADS", "ImageClassifier", "SSDLite", "SegmentationModel", "create_classifier",
           "load_pretrained", "multi_scale_probs"]
