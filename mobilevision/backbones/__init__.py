"""Backbones, interchangeable through one registry (:func:`create_backbone`, :func:`list_backbones`)."""

from . import efficientnet, mobilenet_v1, mobilenet_v2, mobileone  # noqa: F401  (registers the families)
from ._features import Backbone, FeatureInfo
from ._registry import (backbone_knobs, check_backbone_kwargs, create_backbone, get_backbone_cfg, get_backbone_factory,
                        list_backbones, register_backbone)
from .cfg import PUBLISHED_TOP1_FILE, BackboneCfg, PublishedTop1, load_published_top1
from .efficientnet import EfficientNet
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .mobileone import MobileOne

__all__ = ["PUBLISHED_TOP1_FILE", "Backbone", "BackboneCfg", "EfficientNet", "FeatureInfo", "MobileNetV1", "MobileNetV2", "MobileOne",
           "PublishedTop1", "backbone_knobs", "check_backbone_kwargs", "create_backbone", "get_backbone_cfg",
           "get_backbone_factory", "list_backbones", "load_published_top1", "register_backbone"]
