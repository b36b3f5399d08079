"""mobilevision: downstream vision tasks on mobile-efficient backbones."""

from .backbones import create_backbone, list_backbones, register_backbone
from .layers import reparameterize_model
from .models import create_classifier

__version__ = "0.1.0"
__all__ = ["create_backbone", "create_classifier", "list_backbones", "register_backbone", "reparameterize_model"]
