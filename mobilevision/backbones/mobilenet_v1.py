"""MobileNetV1 (Howard et al., arXiv 1704.04861): a 3x3 stem and 13 depthwise-separable layers.

With the final classifier this is the paper's 28-layer network. ``width`` is the width multiplier alpha;
the resolution multiplier rho is the input size, set in configs and benchmarks (224 * rho).
Activations are ReLU6, as in the TensorFlow reference and timm's ``mobilenetv1_100``.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers import ConvBNAct, DepthwiseSeparableConv, make_divisible
from ._features import Backbone
from ._registry import register_backbone
from .cfg import BackboneCfg

# (output channels, stride) of the 13 depthwise-separable layers (Table 1 of the paper; the last
# stride is 1, as in every reference implementation).
_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(Backbone):
    default_resolution = 224

    def __init__(self, width: float = 1.0, out_indices: Sequence[int] | None = None) -> None:
        if width <= 0:
            raise ValueError(f"width multiplier must be positive, got {width}")
        channels = make_divisible(32 * width)
        blocks: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, act_layer=nn.ReLU6)]
        for out, stride in _LAYERS:
            out = make_divisible(out * width)
            blocks.append(DepthwiseSeparableConv(channels, out, stride, act_layer=nn.ReLU6))
            channels = out
        super().__init__(blocks, out_indices)
        self.width = width


# timm's weights were trained with mean = std = 0.5, not ImageNet's statistics
@register_backbone(cfg=BackboneCfg(224, "timm mobilenetv1_100.ra4_e3600_r224_in1k", "bicubic", 0.875,
                                   (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
def mobilenet_v1(width: float = 1.0, **kwargs) -> MobileNetV1:
    return MobileNetV1(width=width, **kwargs)
