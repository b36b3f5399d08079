"""Semantic segmentation network: any registered backbone (output stride 16 by default) + DeepLabv3 or LR-ASPP head,
logits upsampled bilinearly to the input size.

The MobileNetV2 paper's set-up (arXiv 1801.04381, section 6.3, Table 7): DeepLabv3 on the last feature map at output
stride 16, 256-channel ASPP with atrous rates 6 / 12 / 18 and image pooling ("with ASPP") or the 1x1 and pooling
branches only ("no ASPP"); its "MNet V2*" puts the head on the 320-channel map before the last 1x1 conv (``tap=-2``
here: the blocks after the tap are dropped, so they count in neither parameters nor MAdds).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import create_backbone
from ..backbones._features import init_weights
from ..heads import DeepLabV3Head, LRASPPHead

__all__ = ["SEGMENTATION_HEADS", "SegmentationModel", "multi_scale_probs"]

HeadName = Literal["deeplabv3", "lraspp"]
SEGMENTATION_HEADS = ("deeplabv3", "lraspp")


class SegmentationModel(nn.Module):
    """Backbone + segmentation head; ``forward(images [B, 3, H, W])`` -> logits ``[B, num_classes, H, W]``.

    Args:
        backbone, width, backbone_kwargs: the registered backbone (``width`` only when set).
        num_classes: classes including background (VOC: 21).
        head: ``"deeplabv3"`` (:class:`~mobilevision.heads.DeepLabV3Head`) or ``"lraspp"`` (torchvision's
            ``LRASPPHead``: the tap's map gated by its pooled attention, plus a classifier on the last map at
            stride 8, as ``lraspp_mobilenet_v3_large``).
        output_stride: 16 (the papers), 8 or 32: the last strides become dilation
            (:meth:`~mobilevision.backbones.Backbone.set_output_stride`).
        aspp: DeepLabv3 with the three atrous branches; ``False`` keeps the 1x1 and image-pooling branches only.
        atrous_rates: the atrous branches' rates; default (6, 12, 18) at output stride 16, doubled at 8 (DeepLabv3).
        tap: index of the backbone block whose output feeds the head; later blocks are dropped (``-2`` on
            MobileNetV2 = the paper's V2*, the 320-channel map before the 1280-channel 1x1 conv).
        head_channels: ASPP width (256) or LR-ASPP's inner width (128).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        num_classes: int = 21,
        head: HeadName = "deeplabv3",
        output_stride: int = 16,
        aspp: bool = True,
        atrous_rates: Sequence[int] | None = None,
        tap: int = -1,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        head_channels: int | None = None,
    ) -> None:
        super().__init__()
        if head not in SEGMENTATION_HEADS:
            raise ValueError(f"head must be one of {SEGMENTATION_HEADS}, got {head!r}")
        if num_classes < 2:
            raise ValueError(f"segmentation needs at least 2 classes (background included), got {num_classes}")
        kwargs = dict(backbone_kwargs or {})
        kwargs.pop("out_indices", None)  # the head picks its maps
        if width is not None:
            kwargs["width"] = width
        self.backbone = create_backbone(backbone, output_stride=output_stride, **kwargs).truncate(tap)
        self.num_classes, self.head_name, self.output_stride = num_classes, head, output_stride
        channels = self.backbone.num_features
        if head == "deeplabv3":
            if atrous_rates is None:
                atrous_rates = [r * 16 // output_stride for r in (6, 12, 18)]
            self.low_block = None
            self.head = DeepLabV3Head(channels, num_classes, atrous_rates if aspp else (), head_channels or 256)
        else:
            low = [f for f in self.backbone.all_feature_info if f.stride == 8 and not f.expansion]
            if not low or low[-1].block >= len(self.backbone.blocks) - 1:
                raise ValueError(f"LR-ASPP needs a stride-8 map before the tap: {backbone} taps "
                                 f"{[(f.module, f.channels, f.stride) for f in self.backbone.all_feature_info]}")
            self.low_block = low[-1].block
            self.head = LRASPPHead(low[-1].channels, channels, num_classes, head_channels or 128)
        init_weights(self.head)
        for name in ("classifier", "low_classifier", "high_classifier"):  # small logits: the loss starts near log C
            if isinstance(conv := getattr(self.head, name, None), nn.Conv2d):
                nn.init.normal_(conv.weight, 0.0, 0.01)
                nn.init.zeros_(conv.bias)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's resolution (output stride 16, or 8 for LR-ASPP)."""
        low = None
        for i, block in enumerate(self.backbone.blocks):
            x = block(x)
            if i == self.low_block:
                low = x
        return self.head(x) if low is None else self.head({"low": low, "high": x})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.forward_logits(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def multi_scale_probs(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                      logits: torch.Tensor | None = None) -> torch.Tensor:
    """Class probabilities [B, C, H, W] averaged over input scales and, with ``flip``, their mirror images (the
    DeepLab papers' multi-scale + flip "MF" testing). Each scaled input is resized bilinearly and its softmax resized
    back to H x W. ``logits``: the model's output at scale 1 when already computed."""
    size = images.shape[-2:]
    total, n = None, 0
    for scale in scales:
        x = images if scale == 1.0 else F.interpolate(images, scale_factor=float(scale), mode="bilinear",
                                                      align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            if scale == 1.0 and not mirrored and logits is not None:
                out = logits
            else:
                out = model(x.flip(-1) if mirrored else x)
                out = out.flip(-1) if mirrored else out
            if out.shape[-2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            p = out.float().softmax(dim=1)
            total, n = (p if total is None else total + p), n + 1
    return total / n
