"""Convolution building blocks shared by every backbone."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
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


class StridedPointwiseConv2d(nn.Conv2d):
    """Bias-free 1x1 convolution with stride ``s``, computed as a stride-1 1x1 convolution of every ``s``-th
    pixel: the same output and gradients, and the same parameters (``weight``) as ``nn.Conv2d(..., 1, s)``.

    Why: PyTorch's CPU (oneDNN ``jit_1x1``) weight-gradient kernel for a strided 1x1 convolution on a
    channels_last input with fewer input channels than one SIMD register holds (2-7 with AVX2, 2-15 with
    AVX-512; one channel is fine) writes out of bounds: double free, segfault, hang or a wrong gradient,
    depending on the CPU and the input size (PyTorch 2.x / oneDNN 3.x). MobileOne's stem scale branch
    (RGB -> 1x1 stride 2) is that layer. The stride-1 kernel it runs instead is a different, sound one,
    and with channels_last the fastest safe form measured (converting to NCHW and back costs more).
    Depthwise strided 1x1 convolutions use another kernel, which is sound and much faster than this form.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, 1, stride, 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, None, 1, 0, 1, self.groups)


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
