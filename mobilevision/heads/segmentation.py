"""Semantic segmentation heads: DeepLabv3 (as the MobileNetV2 paper uses it, arXiv 1801.04381 section 6.3) and
LR-ASPP (MobileNetV3 paper, arXiv 1905.02244 section 6.3).

The blocks are torchvision's (``ASPP``, ``LRASPPHead``), so the layers match its DeepLabv3 / LR-ASPP models exactly;
what is defined here is how the papers wire them onto a backbone's feature maps.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.lraspp import LRASPPHead

__all__ = ["DeepLabV3Head", "LRASPPHead"]


class DeepLabV3Head(nn.Module):
    """ASPP on the last feature map, then a 1x1 classifier (logits at the feature map's stride).

    ``atrous_rates`` (6, 12, 18) at output stride 16 is the paper's "with ASPP" (three 3x3 atrous branches beside
    the 1x1 branch and the image-pooling branch); ``()`` is "no ASPP" (the 1x1 branch and the image-pooling
    branch only). Each branch has ``channels`` (256) outputs; their concatenation is projected back to
    ``channels`` (1x1 conv + BN + ReLU + dropout 0.5, torchvision's ASPP)."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (6, 12, 18),
                 channels: int = 256) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, list(atrous_rates), channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.atrous_rates = tuple(atrous_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(x))
