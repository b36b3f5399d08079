"""Inverted residual with linear bottleneck (MobileNetV2) and its EfficientNet form (MBConv + SE)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from .conv import ActLayer, ConvBNAct
from .squeeze_excite import SqueezeExcite


class InvertedResidual(nn.Module):
    """1x1 expansion (t times) -> depthwise kxk -> [squeeze-excite] -> linear 1x1 projection.

    The residual connection is used when the block keeps shape (stride 1, in == out); with
    ``drop_path > 0`` it applies row-wise stochastic depth to the residual branch in training.
    ``forward(x, return_expansion=True)`` also returns the expansion output (the input when t == 1),
    the tap SSDLite attaches its first prediction layer to.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: float = 6.0,
        kernel_size: int = 3,
        act_layer: ActLayer = nn.ReLU6,
        se_channels: int = 0,
        drop_path: float = 0.0,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.expand = (ConvBNAct(in_channels, hidden, 1, act_layer=act_layer, bn_eps=bn_eps)
                       if hidden != in_channels else nn.Identity())
        self.dw = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act_layer=act_layer,
                            bn_eps=bn_eps)
        self.se = SqueezeExcite(hidden, se_channels, act_layer) if se_channels else nn.Identity()
        self.project = ConvBNAct(hidden, out_channels, 1, act_layer=None, bn_eps=bn_eps)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_path, "row") if self.use_residual and drop_path > 0 else nn.Identity()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.hidden_channels = hidden

    def forward(self, x: torch.Tensor, return_expansion: bool = False):
        expanded = self.expand(x)
        out = self.project(self.se(self.dw(expanded)))
        if self.use_residual:
            out = x + self.drop_path(out)
        return (out, expanded) if return_expansion else out
