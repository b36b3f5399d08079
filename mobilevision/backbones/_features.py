"""Multi-scale feature extraction shared by every backbone.

A backbone is a flat sequence of blocks (``self.blocks``). When it is built it records *feature taps*:
the output of a block, or the expansion output inside an inverted residual block (what SSDLite taps on
MobileNetV2). Heads size themselves from :attr:`Backbone.feature_info`, never from a dummy forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One tap-able feature map: its channels, its stride w.r.t. the input, and where it comes from."""

    channels: int
    stride: int
    module: str
    block: int
    expansion: bool = False


def init_weights(module: nn.Module) -> None:
    """He (fan-out) init for convs, unit BN, small-normal linears: the scheme of the reference MobileNet /
    EfficientNet implementations (torchvision, timm), which keeps activations well scaled through the
    depth when training from scratch (PyTorch's default init shrinks them layer after layer)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class Backbone(nn.Module):
    """Base class for a flat sequence of blocks, each with ``out_channels`` and ``stride`` attributes.

    Taps are recorded once, at build time: the output of the last block at each stride, and the
    expansion output of every strided block that has one (its input side, before the stride).
    ``forward(x)`` returns the feature maps selected by ``out_indices`` (indices into
    :attr:`all_feature_info`; default: the block outputs, one per stride), in increasing stride.
    """

    def __init__(self, blocks: Sequence[nn.Module], out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.output_stride = 32
        self._index_taps(out_indices)
        init_weights(self)

    def _index_taps(self, out_indices: Sequence[int] | None) -> None:
        self._requested_out_indices = out_indices
        self.all_feature_info: list[FeatureInfo] = []
        stride = 1
        for i, block in enumerate(self.blocks):
            hidden = getattr(block, "hidden_channels", block.in_channels)
            if block.stride > 1 and hidden != block.in_channels:
                self.all_feature_info.append(FeatureInfo(hidden, stride, f"blocks.{i}.expand", i, True))
            stride *= block.stride
            if i == len(self.blocks) - 1 or self.blocks[i + 1].stride > 1:
                self.all_feature_info.append(FeatureInfo(block.out_channels, stride, f"blocks.{i}", i))
        self.num_features = self.blocks[-1].out_channels
        if out_indices is None:
            out_indices = [k for k, f in enumerate(self.all_feature_info) if not f.expansion]
        n = len(self.all_feature_info)
        for i in out_indices:
            if not -n <= i < n:
                raise IndexError(f"out_index {i} out of range: {type(self).__name__} has {n} feature taps "
                                 f"{[(f.module, f.channels, f.stride) for f in self.all_feature_info]}")
        out_indices = tuple(i % n for i in out_indices)
        if list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"out_indices must be increasing and unique, got {out_indices}")
        self.out_indices = out_indices
        self._taps = {(f.block, f.expansion): k for k, f in enumerate(self.feature_info)}
        self._last_block = max(f.block for f in self.feature_info)

    def set_output_stride(self, output_stride: int) -> Backbone:
        """Trade the last strides for dilation, as DeepLabv3 does: every block whose stride would take the network
        past ``output_stride`` (8, 16 or 32) runs at stride 1 instead, and every spatial convolution after it is
        dilated by the strides given up so far (padding ``dilation * (k - 1) / 2``): the "a trous" algorithm, so
        without global pooling inside (squeeze-excite) the stride-32 outputs are exactly every ``32 / output_stride``-th
        pixel of the new ones. Same parameters; :attr:`all_feature_info` reports the effective strides (taps that
        were apart only by a converted stride become one). In place; returns self."""
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if self.output_stride != 32:
            raise ValueError(f"output_stride is already {self.output_stride}; set it once, on a fresh backbone")
        stride, dilation = 1, 1
        for block in self.blocks:
            given_up = block.stride if block.stride > 1 and stride * block.stride > output_stride else 1
            if given_up > 1:
                for m in block.modules():
                    if isinstance(m, nn.Conv2d):
                        m.stride = (1, 1)
                    elif isinstance(getattr(m, "stride", None), int):
                        m.stride = 1
            else:
                stride *= block.stride
            if dilation > 1:  # the block that gives its stride up keeps the dilation before it (a trous)
                for m in block.modules():
                    if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1:
                        m.dilation = (dilation, dilation)
                        m.padding = tuple(dilation * (k - 1) // 2 for k in m.kernel_size)
            dilation *= given_up
        self.output_stride = output_stride
        self._index_taps(self._requested_out_indices)
        return self

    def truncate(self, last_block: int) -> Backbone:
        """Drop the blocks after ``last_block`` (an index into :attr:`blocks`, negative counts from the end): a head on
        an earlier map, e.g. DeepLabv3 on MobileNetV2's 320-channel map before its last 1x1 conv (the paper's "V2*",
        ``last_block=-2``). Taps past the new end are gone; :attr:`num_features` is the new last block's. In place;
        returns self."""
        n = len(self.blocks)
        if not -n <= last_block < n:
            raise IndexError(f"last_block {last_block} out of range: {type(self).__name__} has {n} blocks")
        del self.blocks[last_block % n + 1:]
        self._index_taps(None)
        return self

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Info of the selected outputs, in the order ``forward`` returns them (increasing stride)."""
        return [self.all_feature_info[i] for i in self.out_indices]

    # -- running ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor | None] = [None] * len(self.out_indices)
        for i, block in enumerate(self.blocks):
            if (i, True) in self._taps:
                x, expanded = block(x, return_expansion=True)
                outs[self._taps[(i, True)]] = expanded
            else:
                x = block(x)
            if (i, False) in self._taps:
                outs[self._taps[(i, False)]] = x
            if i == self._last_block:
                break
        return outs  # type: ignore[return-value]

    def forward_head_features(self, x: torch.Tensor) -> torch.Tensor:
        """Run every block and return the last feature map (what a classifier pools)."""
        for block in self.blocks:
            x = block(x)
        return x
