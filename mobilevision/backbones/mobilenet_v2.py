"""MobileNetV2 (Sandler et al., arXiv 1801.04381): inverted residuals with linear bottlenecks, ReLU6."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers import ConvBNAct, InvertedResidual, make_divisible
from ._features import Backbone
from ._registry import register_backbone
from .cfg import BackboneCfg

# Table 2 of the paper: expansion t (None: the body's t), channels c, repeats n, first stride s.
_STAGES = [(1, 16, 1, 1), (None, 24, 2, 2), (None, 32, 3, 2), (None, 64, 4, 2),
           (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]


class MobileNetV2(Backbone):
    """Blocks: stem conv, 17 inverted residuals, last 1x1 conv (1280 channels, never below width 1.0).

    ``blocks[14]`` is the paper's "block 15" (layer_15 in the TF reference): its expansion output
    (576 channels at stride 16 for width 1.0) is one of :attr:`all_feature_info`'s taps.
    """

    default_resolution = 224

    def __init__(self, width: float = 1.0, expand_ratio: float = 6.0, out_indices: Sequence[int] | None = None) -> None:
        if width <= 0:
            raise ValueError(f"width multiplier must be positive, got {width}")
        channels = make_divisible(32 * width)
        blocks: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, act_layer=nn.ReLU6)]
        for t, c, n, s in _STAGES:
            out = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, s if i == 0 else 1,
                                               expand_ratio if t is None else t, act_layer=nn.ReLU6))
                channels = out
        blocks.append(ConvBNAct(channels, make_divisible(1280 * max(1.0, width)), 1, act_layer=nn.ReLU6))
        super().__init__(blocks, out_indices)
        self.width, self.expand_ratio = width, expand_ratio


@register_backbone(cfg=BackboneCfg(224, "torchvision MobileNet_V2_Weights.IMAGENET1K_V1", "bilinear", 224 / 256))
def mobilenet_v2(width: float = 1.0, expand_ratio: float = 6.0, **kwargs) -> MobileNetV2:
    return MobileNetV2(width=width, expand_ratio=expand_ratio, **kwargs)
