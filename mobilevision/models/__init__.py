"""Composed networks: a backbone plus a task head."""

from .classifier import ImageClassifier, create_classifier
from .ssdlite import SSDLite

__all__ = ["ImageClassifier", "SSDLite", "create_classifier"]
