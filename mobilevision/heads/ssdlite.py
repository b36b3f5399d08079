"""SSDLite prediction head and extra feature layers (MobileNetV2 paper, arXiv 1801.04381, section 6.2).

SSDLite is SSD with every regular convolution of the prediction layers replaced by a separable
convolution: depthwise 3x3 conv-BN-ReLU6, then a pointwise 1x1 conv. The two backbone taps
(MobileNetV2: the expansion of block 15 at stride 16 and the last 1x1 conv at stride 32) are followed
by four extra layers (:class:`SSDLiteExtras`), for six feature maps in all; :class:`SSDLiteHead` predicts
class logits and box deltas on each of them. Same layout as the TensorFlow object detection API and
torchvision's ``ssdlite320_mobilenet_v3_large``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import ConvBNAct

# TF object detection API / torchvision SSDLite batch norm epsilon.
BN_EPS = 1e-3


def normal_init_(module: nn.Module, std: float = 0.03) -> None:
    """Initialise every conv of ``module`` as torchvision's SSDLite does: N(0, std) weights, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SeparablePredictor(nn.Sequential):
    """Depthwise 3x3 conv-BN-ReLU6, then a pointwise 1x1 conv with bias (no norm, no activation)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, groups=in_channels, act_layer=nn.ReLU6, bn_eps=BN_EPS),
            nn.Conv2d(in_channels, out_channels, 1, bias=True),
        )


class SSDLiteHead(nn.Module):
    """Classification and box regression branches over each feature map, concatenated over levels.

    ``in_channels[k]`` / ``num_anchors[k]``: channels of feature map k and anchors per location on it.
    ``forward(features)`` returns ``(cls_logits [B, A_total, num_classes + 1], bbox_regression [B, A_total, 4])``
    where index 0 of the class axis is background, and the anchor axis runs level by level, row-major
    over each map's locations, then over the anchors of one location (the order of
    :class:`mobilevision.detection.DefaultBoxGenerator`).
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"in_channels and num_anchors differ in length: {len(in_channels)} vs {len(num_anchors)}")
        self.num_classes = num_classes
        self.num_anchors = list(num_anchors)
        self.classification = nn.ModuleList(
            SeparablePredictor(c, a * (num_classes + 1)) for c, a in zip(in_channels, num_anchors))
        self.regression = nn.ModuleList(SeparablePredictor(c, a * 4) for c, a in zip(in_channels, num_anchors))
        normal_init_(self)

    @staticmethod
    def _flatten(x: torch.Tensor, num_anchors: int) -> torch.Tensor:
        # [B, A*K, H, W] -> [B, H*W*A, K]
        b, _, h, w = x.shape
        return x.view(b, num_anchors, -1, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * num_anchors, -1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(features) != len(self.num_anchors):
            raise ValueError(f"expected {len(self.num_anchors)} feature maps, got {len(features)}")
        cls, reg = [], []
        for x, a, cls_branch, reg_branch in zip(features, self.num_anchors, self.classification, self.regression):
            cls.append(self._flatten(cls_branch(x), a))
            reg.append(self._flatten(reg_branch(x), a))
        return torch.cat(cls, dim=1), torch.cat(reg, dim=1)


def _extra_layer(in_channels: int, out_channels: int) -> nn.Sequential:
    mid = out_channels // 2
    return nn.Sequential(
        ConvBNAct(in_channels, mid, 1, act_layer=nn.ReLU6, bn_eps=BN_EPS),
        ConvBNAct(mid, mid, 3, 2, groups=mid, act_layer=nn.ReLU6, bn_eps=BN_EPS),
        ConvBNAct(mid, out_channels, 1, act_layer=nn.ReLU6, bn_eps=BN_EPS),
    )


class SSDLiteExtras(nn.Module):
    """Extra feature layers after the backbone: each is 1x1 conv to depth/2, depthwise 3x3 stride 2,
    1x1 conv to depth, all with BN + ReLU6. ``forward(x)`` returns the ``len(depths)`` maps, each at
    twice the stride of the previous one (spatial size ``ceil(n / 2)``, down to 1x1).
    """

    def __init__(self, in_channels: int, depths: Sequence[int] = (512, 256, 256, 128)) -> None:
        super().__init__()
        self.out_channels = [int(d) for d in depths]
        ins = [in_channels] + self.out_channels[:-1]
        self.layers = nn.ModuleList(_extra_layer(i, o) for i, o in zip(ins, self.out_channels))
        normal_init_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs
