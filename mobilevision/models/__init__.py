"""Composed networks: a backbone plus a task head."""

from .classifier import ImageClassifier, create_classifier
from .pretrained import load_pretrained
from .ssdlite import SSDLite

__all__ = ["ImageClassifier", "SSDLite", "create_classifier", "load_pretrained"]
