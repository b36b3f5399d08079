"""Convolution building blocks shared by every backbone."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ActLayer = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10%.

    Same rule as the TensorFlow reference MobileNets, torchvision and timm use, so width multipliers
    give identical channel counts to those implementations.
    """
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation. ``act_layer=None`` gives a linear conv-BN."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: ActLayer | None = nn.ReLU,
        bn_eps: float = 1e-5,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=bn_eps),
        ]
        if act_layer is not None:
            layers.append(act_layer(inplace=True))
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride


class DepthwiseSeparableConv(nn.Module):
    """MobileNetV1 layer pair: depthwise 3x3 conv-BN-act, then pointwise 1x1 conv-BN-act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 act_layer: ActLayer = nn.ReLU, kernel_size: int = 3) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels,
                            act_layer=act_layer)
        self.pw = ConvBNAct(in_channels, out_channels, 1, act_layer=act_layer)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))
