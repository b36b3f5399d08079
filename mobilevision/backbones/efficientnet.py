"""EfficientNet B0-B7 (Tan & Le, arXiv 1905.11946): MBConv + squeeze-excite + SiLU + stochastic depth.

Every variant is generated from the B0 table by compound scaling: depth d = 1.2^phi, width w = 1.1^phi,
resolution r = 1.15^phi. B0-B7 use the published (width, depth, resolution, dropout) coefficients; the
generic ``efficientnet`` factory builds any phi, or explicit width / depth / resolution.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from ..layers import ConvBNAct, InvertedResidual, make_divisible
from ._features import Backbone
from ._registry import register_backbone
from .cfg import BackboneCfg

# B0 body: expansion t, kernel k, stride s, channels c, layers n.
_B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of compound scaling

# Published (width, depth, resolution, dropout) coefficients.
PUBLISHED = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}


# torchvision's IMAGENET1K_V1 weights: (crop size, resize size) of their evaluation, bicubic
_TORCHVISION_EVAL = {"b0": (224, 256), "b1": (240, 256), "b2": (288, 288), "b3": (300, 320), "b4": (380, 384),
                     "b5": (456, 456), "b6": (528, 528), "b7": (600, 600)}


def _cfg(variant: str) -> BackboneCfg:
    crop, resize = _TORCHVISION_EVAL[variant]
    return BackboneCfg(PUBLISHED[variant][2], f"torchvision EfficientNet_{variant.upper()}_Weights.IMAGENET1K_V1",
                       "bicubic", crop / resize)


def compound_coefficients(phi: float) -> tuple[float, float, int]:
    """(width, depth, resolution) for compound coefficient ``phi`` from the B0 baseline at 224."""
    return BETA ** phi, ALPHA ** phi, int(round(224 * GAMMA ** phi))


class EfficientNet(Backbone):
    """Stem conv 3x3/2, MBConv stages scaled by ``width``/``depth``, 1x1 head conv to 1280*width.

    ``drop_path`` is the final stochastic depth rate; it grows linearly with block index from 0.
    ``resolution`` and ``dropout`` are recorded for configs and :func:`create_classifier`.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, resolution: int = 224, dropout: float = 0.2,
                 drop_path: float = 0.2, out_indices: Sequence[int] | None = None) -> None:
        if width <= 0 or depth <= 0:
            raise ValueError(f"width and depth multipliers must be positive, got {width}, {depth}")
        channels = make_divisible(32 * width)
        blocks: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, act_layer=nn.SiLU)]
        repeats = [int(math.ceil(n * depth)) for *_, n in _B0_STAGES]
        total, index = sum(repeats), 0
        for (t, k, s, c, _), n in zip(_B0_STAGES, repeats):
            out = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, s if i == 0 else 1, t, k, act_layer=nn.SiLU,
                                               se_channels=max(1, channels // 4),
                                               drop_path=drop_path * index / total))
                channels, index = out, index + 1
        blocks.append(ConvBNAct(channels, make_divisible(1280 * width), 1, act_layer=nn.SiLU))
        super().__init__(blocks, out_indices)
        self.width, self.depth, self.default_resolution, self.dropout = width, depth, resolution, dropout


@register_backbone
def efficientnet(phi: float = 0.0, width: float | None = None, depth: float | None = None,
                 resolution: int | None = None, dropout: float = 0.2, **kwargs) -> EfficientNet:
    """Any compound coefficient ``phi``; explicit ``width``/``depth``/``resolution`` override it."""
    w, d, r = compound_coefficients(phi)
    return EfficientNet(width or w, depth or d, resolution or r, dropout, **kwargs)


def _published(variant: str, **kwargs) -> EfficientNet:
    width, depth, resolution, dropout = PUBLISHED[variant]
    return EfficientNet(**{"width": width, "depth": depth, "resolution": resolution, "dropout": dropout, **kwargs})


@register_backbone(cfg=_cfg("b0"))
def efficientnet_b0(**kwargs) -> EfficientNet:
    return _published("b0", **kwargs)


@register_backbone(cfg=_cfg("b1"))
def efficientnet_b1(**kwargs) -> EfficientNet:
    return _published("b1", **kwargs)


@register_backbone(cfg=_cfg("b2"))
def efficientnet_b2(**kwargs) -> EfficientNet:
    return _published("b2", **kwargs)


@register_backbone(cfg=_cfg("b3"))
def efficientnet_b3(**kwargs) -> EfficientNet:
    return _published("b3", **kwargs)


@register_backbone(cfg=_cfg("b4"))
def efficientnet_b4(**kwargs) -> EfficientNet:
    return _published("b4", **kwargs)


@register_backbone(cfg=_cfg("b5"))
def efficientnet_b5(**kwargs) -> EfficientNet:
    return _published("b5", **kwargs)


@register_backbone(cfg=_cfg("b6"))
def efficientnet_b6(**kwargs) -> EfficientNet:
    return _published("b6", **kwargs)


@register_backbone(cfg=_cfg("b7"))
def efficientnet_b7(**kwargs) -> EfficientNet:
    return _published("b7", **kwargs)
