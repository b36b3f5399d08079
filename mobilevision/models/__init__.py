"""Composed networks: a backbone plus a task head."""

from .classifier import ImageClassifier, create_classifier

__all__ = ["ImageClassifier", "create_classifier"]
