"""Squeeze-and-excitation channel attention (Hu et al.), as used by EfficientNet and MobileOne-S4."""

from __future__ import annotations

import torch
from torch import nn

from .conv import ActLayer


class SqueezeExcite(nn.Module):
    """Global average pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, reduced_channels: int, act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced_channels, 1)
        self.act = act_layer(inplace=True)
        self.expand = nn.Conv2d(reduced_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * torch.sigmoid(scale)
