"""Task heads that sit on a backbone's feature maps."""

from .segmentation import DeepLabV3Head, LRASPPHead
from .ssdlite import SSDLiteExtras, SSDLiteHead

__all__ = ["DeepLabV3Head", "LRASPPHead", "SSDLiteExtras", "SSDLiteHead"]
