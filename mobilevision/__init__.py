"""mobilevision: downstream vision tasks on mobile-efficient backbones."""

from .backbones import create_backbone, get_backbone_cfg, list_backbones, load_published_top1, register_backbone
from .layers import reparameterize_model
from .models import create_classifier

__version__ = "0.1.0"
__all__ = ["create_backbone", "create_classifier", "get_backbone_cfg", "list_backbones", "load_published_top1",
           "register_backbone", "reparameterize_model"]
