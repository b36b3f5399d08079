"""Task heads that sit on a backbone's feature maps."""

from .ssdlite import SSDLiteExtras, SSDLiteHead

__all__ = ["SSDLiteExtras", "SSDLiteHead"]
