"""MobileOne block (Vasu et al., arXiv 2206.04040): k-branch train-time conv, folded for inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .conv import StridedPointwiseConv2d, make_divisible
from .squeeze_excite import SqueezeExcite


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int) -> nn.Sequential:
    if kernel_size == 1 and stride > 1 and groups == 1:  # the stem's scale branch: see StridedPointwiseConv2d
        conv: nn.Conv2d = StridedPointwiseConv2d(in_channels, out_channels, stride)
    else:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


def fold_conv_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of a bias-free conv followed by ``bn`` (eval statistics), as one conv."""
    weight, bias = fuse_conv_bn_weights(kernel, None, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
    return weight.detach(), bias.detach()


class MobileOneBlock(nn.Module):
    """One conv of MobileOne with its train-time branches.

    Sum of ``num_branches`` kxk conv-BN branches, a 1x1 conv-BN "scale" branch (when k > 1) and a
    BN-only skip branch (when input and output shapes match), then optional squeeze-excite and ReLU.
    :meth:`reparameterize` folds every branch into a single biased kxk conv; it is idempotent.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, num_branches: int = 1, use_se: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.kernel_size, self.groups = kernel_size, groups
        self.skip = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.branches = nn.ModuleList(
            _conv_bn(in_channels, out_channels, kernel_size, stride, groups) for _ in range(num_branches))
        self.scale = _conv_bn(in_channels, out_channels, 1, stride, groups) if kernel_size > 1 else None
        self.reparam_conv: nn.Conv2d | None = None
        self.se = SqueezeExcite(out_channels, make_divisible(out_channels / 16), nn.ReLU) if use_se else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    @property
    def is_folded(self) -> bool:
        return self.reparam_conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            out = self.scale(x) if self.scale is not None else 0  # summed in timm's order
            for branch in self.branches:
                out = out + branch(x)
            if self.skip is not None:
                out = out + self.skip(x)
        return self.act(self.se(out))

    @torch.no_grad()
    def _folded_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.kernel_size
        ref = self.branches[0][0].weight
        kernel = torch.zeros_like(ref)
        bias = torch.zeros(self.out_channels, dtype=ref.dtype, device=ref.device)
        parts: list[tuple[torch.Tensor, nn.BatchNorm2d]] = [(b[0].weight, b[1]) for b in self.branches]
        if self.scale is not None:
            pad = k // 2
            parts.append((F.pad(self.scale[0].weight, [pad, pad, pad, pad]), self.scale[1]))
        if self.skip is not None:
            identity = torch.zeros_like(ref)
            in_per_group = self.in_channels // self.groups
            channels = torch.arange(self.in_channels, device=ref.device)
            identity[channels, channels % in_per_group, k // 2, k // 2] = 1.0
            parts.append((identity, self.skip))
        for w, bn in parts:
            fw, fb = fold_conv_bn(w, bn)
            kernel += fw
            bias += fb
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one conv giving the same eval-mode output. Calling it twice is a no-op."""
        if self.reparam_conv is not None:
            return
        kernel, bias = self._folded_kernel_bias()
        ref = self.branches[0][0]  # stride / padding / dilation as the branches run (see Backbone.set_output_stride)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, ref.stride, ref.padding,
                         dilation=ref.dilation, groups=self.groups, bias=True).to(kernel)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self.reparam_conv = conv
        self.branches = nn.ModuleList()
        self.scale = None
        self.skip = None


def reparameterize_model(model: nn.Module, copy: bool = True) -> nn.Module:
    """Fold every re-parameterizable block of ``model`` (anything with ``reparameterize()``).

    Returns a folded deep copy in eval mode by default, leaving the training model untouched;
    ``copy=False`` folds ``model`` itself.
    """
    import copy as _copy

    folded = _copy.deepcopy(model) if copy else model
    for module in folded.modules():
        if module is not folded and hasattr(module, "reparameterize"):
            module.reparameterize()
    return folded.eval()
