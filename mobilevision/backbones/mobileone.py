"""MobileOne S0-S4 (Vasu et al., arXiv 2206.04040; reference code apple/ml-mobileone).

Each layer is a 3x3 depthwise then a 1x1 pointwise :class:`MobileOneBlock`, each with k train-time
branches. ``reparameterize()`` on a block, or :func:`mobilevision.reparameterize_model` on a model,
folds them into one conv per layer.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers import MobileOneBlock
from ._features import Backbone
from ._registry import register_backbone
from .cfg import BackboneCfg

_STAGE_BLOCKS = (2, 8, 10, 1)
_STAGE_CHANNELS = (64, 128, 256, 512)


class MobileOne(Backbone):
    """``widths``: the four stage width multipliers; ``se_blocks``: how many of each stage's last blocks
    use squeeze-excite (S4: the last 5 of stage 3 and all of stage 4); ``num_branches``: k."""

    default_resolution = 224

    def __init__(self, widths: Sequence[float], num_branches: int = 1, se_blocks: Sequence[int] = (0, 0, 0, 0),
                 out_indices: Sequence[int] | None = None) -> None:
        channels = min(64, int(64 * widths[0]))
        blocks: list[nn.Module] = [MobileOneBlock(3, channels, 3, 2)]  # the stem has one branch, as in apple/ml-mobileone
        for n, base, w, n_se in zip(_STAGE_BLOCKS, _STAGE_CHANNELS, widths, se_blocks):
            out = int(base * w)
            for i in range(n):
                se = i >= n - n_se
                blocks.append(MobileOneBlock(channels, channels, 3, 2 if i == 0 else 1, groups=channels,
                                             num_branches=num_branches, use_se=se))
                blocks.append(MobileOneBlock(channels, out, 1, num_branches=num_branches, use_se=se))
                channels = out
        super().__init__(blocks, out_indices)
        self.widths, self.num_branches = tuple(widths), num_branches


@register_backbone(cfg=BackboneCfg(224, "timm mobileone_s0.apple_in1k", "bilinear", 0.875))
def mobileone_s0(num_branches: int = 4, **kwargs) -> MobileOne:
    return MobileOne((0.75, 1.0, 1.0, 2.0), num_branches, **kwargs)


@register_backbone(cfg=BackboneCfg(224, "timm mobileone_s1.apple_in1k", "bilinear", 0.9))
def mobileone_s1(num_branches: int = 1, **kwargs) -> MobileOne:
    return MobileOne((1.5, 1.5, 2.0, 2.5), num_branches, **kwargs)


@register_backbone(cfg=BackboneCfg(224, "timm mobileone_s2.apple_in1k", "bilinear", 0.9))
def mobileone_s2(num_branches: int = 1, **kwargs) -> MobileOne:
    return MobileOne((1.5, 2.0, 2.5, 4.0), num_branches, **kwargs)


@register_backbone(cfg=BackboneCfg(224, "timm mobileone_s3.apple_in1k", "bilinear", 0.9))
def mobileone_s3(num_branches: int = 1, **kwargs) -> MobileOne:
    return MobileOne((2.0, 2.5, 3.0, 4.0), num_branches, **kwargs)


@register_backbone(cfg=BackboneCfg(224, "timm mobileone_s4.apple_in1k", "bilinear", 0.9))
def mobileone_s4(num_branches: int = 1, **kwargs) -> MobileOne:
    return MobileOne((3.0, 3.5, 3.5, 4.0), num_branches, se_blocks=(0, 0, 5, 1), **kwargs)
