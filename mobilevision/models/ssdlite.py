"""SSDLite (MobileNetV2 paper, arXiv 1801.04381, section 6.2) on any registered backbone.

Backbone taps at stride 16 and 32 -> four extra layers -> separable prediction head on the six maps,
with SSD default boxes (``first_stride=8``: taps at 8, 16 and 32 -> three extra layers).
:meth:`SSDLite.forward` returns the raw outputs (the same in train and eval mode);
:meth:`SSDLite.compute_loss` and :meth:`SSDLite.predict` / :meth:`SSDLite.postprocess` turn them
into the training loss and detections.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..backbones import FeatureInfo, create_backbone
from ..detection import BoxCoder, DefaultBoxGenerator, postprocess, ssd_loss
from ..detection.anchors import as_size
from ..heads import SSDLiteExtras, SSDLiteHead
from ..layers import make_divisible


def select_ssd_taps(feature_info: Sequence[FeatureInfo], first_stride: int = 16) -> tuple[int, ...]:
    """Indices into ``all_feature_info`` of the backbone maps SSDLite predicts from, finest first.

    The last tap (the final block output, stride 32 for every backbone here) and, at each halved stride
    down to ``first_stride``, the expansion output of the strided block when the backbone has one there
    (MobileNetV2: ``blocks.14.expand`` at stride 16, the paper's "expansion of layer 15"; ``blocks.7.expand``
    at 8), otherwise the last block output at that stride. The paper predicts from 16 and 32.
    """
    last = max(k for k, f in enumerate(feature_info) if not f.expansion)
    taps, stride = [last], feature_info[last].stride
    while first_stride >= 1 and stride > first_stride:
        stride //= 2
        candidates = [k for k, f in enumerate(feature_info) if f.stride == stride]
        if not candidates:
            raise ValueError(f"backbone has no feature tap at stride {stride}: "
                             f"{[(f.module, f.channels, f.stride) for f in feature_info]}")
        expansions = [k for k in candidates if feature_info[k].expansion]
        taps.insert(0, (expansions or candidates)[-1])
    if stride != first_stride:
        raise ValueError(f"first_stride must be a power of 2 up to the backbone's last stride "
                         f"{feature_info[last].stride}, got {first_stride}")
    return tuple(taps)


class SSDLite(nn.Module):
    """SSDLite detector.

    Args:
        backbone: registered backbone name (:func:`mobilevision.list_backbones`).
        num_classes: object classes, without background (labels ``0..num_classes-1``).
        image_size: nominal input size (``int`` or ``(H, W)``); inputs of other sizes work too (anchors
            follow the actual input size). Used by :meth:`anchors_for` defaults and as metadata.
        width: backbone width multiplier; ``None`` keeps the backbone's own default (1.0, or the
            published width of EfficientNet-Bx). Backbones without a ``width`` argument (MobileOne)
            need ``None``.
        backbone_kwargs: more keyword arguments for the backbone factory (``out_indices`` is chosen
            here: see :func:`select_ssd_taps`).
        first_stride: stride of the finest map predicted from: 16 as in the paper (backbone maps at 16 and
            32, then four extra layers), or 8 (backbone maps at 8, 16 and 32, then three extra layers;
            the first default boxes sit on a grid twice as fine, which small objects need: at 192 px with
            ``min_ratio`` 0.1, 0.2% of the shapes training boxes have no default box at IoU 0.5, against
            16% at stride 16).
        extra_depths: output channels of the extra layers (paper / TF: 512, 256, 256, 128; default: as
            many of those as make six maps in all).
        scale_extras: when ``width`` is given, scale ``extra_depths`` by it too (rounded to a multiple
            of 8, at least 16), as torchvision does for SSDLite-MobileNetV3; at width 1.0 the depths are
            the paper's.
        aspect_ratios, min_ratio, max_ratio: default boxes (:class:`DefaultBoxGenerator`); one ratio list
            per feature map (``2 + len(extra_depths)`` maps), default ``[[2, 3]] * 6``: 6 boxes per location.
        box_weights: :class:`BoxCoder` weights (inverse SSD variances).
        iou_threshold, neg_pos_ratio: matching and hard negative mining of :meth:`compute_loss`.
        score_thresh, nms_thresh, topk_candidates, detections_per_img: :meth:`postprocess` defaults.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        num_classes: int = 80,
        image_size: int | tuple[int, int] = 320,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        first_stride: int = 16,
        extra_depths: Sequence[int] | None = None,
        scale_extras: bool = True,
        aspect_ratios: Sequence[Sequence[float]] | None = None,
        min_ratio: float = 0.2,
        max_ratio: float = 0.95,
        box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        iou_threshold: float = 0.5,
        neg_pos_ratio: int = 3,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.5,
        topk_candidates: int = 300,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        kwargs = dict(backbone_kwargs or {})
        if "out_indices" in kwargs:
            raise ValueError("SSDLite chooses the backbone's out_indices itself; drop it from backbone_kwargs")
        if width is not None:
            kwargs["width"] = width
        # Read the backbone's taps from a parameter-free build on the meta device, then build it for real.
        with torch.device("meta"):
            probe = create_backbone(backbone, **kwargs)
        out_indices = select_ssd_taps(probe.all_feature_info, first_stride)
        del probe
        if extra_depths is None:  # six maps in all
            extra_depths = (512, 256, 256, 128)[:max(0, 6 - len(out_indices))]
        self.backbone = create_backbone(backbone, out_indices=out_indices, **kwargs)
        taps = self.backbone.feature_info

        if width is not None and scale_extras:
            extra_depths = [make_divisible(d * width, 8, min_value=16) for d in extra_depths]
        self.extras = SSDLiteExtras(taps[-1].channels, extra_depths)
        in_channels = [f.channels for f in taps] + self.extras.out_channels
        num_maps = len(in_channels)
        self.anchor_generator = DefaultBoxGenerator(
            aspect_ratios if aspect_ratios is not None else [[2, 3]] * num_maps, min_ratio, max_ratio)
        if len(self.anchor_generator.aspect_ratios) != num_maps:
            raise ValueError(f"{num_maps} feature maps but "
                             f"{len(self.anchor_generator.aspect_ratios)} aspect ratio lists")
        self.head = SSDLiteHead(in_channels, self.anchor_generator.num_anchors_per_location(), num_classes)
        self.box_coder = BoxCoder(box_weights)

        self.backbone_name = backbone
        self.num_classes = num_classes
        self.image_size = as_size(image_size)
        self.strides = [f.stride for f in taps] + [taps[-1].stride * 2 ** (k + 1) for k in range(len(extra_depths))]
        self.iou_threshold, self.neg_pos_ratio = iou_threshold, neg_pos_ratio
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_candidates, self.detections_per_img = topk_candidates, detections_per_img

    # -- raw outputs ----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images [B, 3, H, W]`` -> ``{"cls_logits": [B, A, num_classes + 1], "bbox_regression": [B, A, 4],
        "anchors": [A, 4] xyxy pixels (float32), "feature_sizes": [(h, w)] per map, "image_size": (H, W)}``.

        The same in train and eval mode. The last extra maps are 1x1 at usual sizes (320 px), so batch
        norm in train mode needs a batch of at least 2 images (as in torchvision's SSDLite).
        """
        features = self.backbone(images)
        features = list(features) + self.extras(features[-1])
        cls_logits, bbox_regression = self.head(features)
        feature_sizes = [tuple(f.shape[-2:]) for f in features]
        image_size = tuple(images.shape[-2:])
        anchors = self.anchor_generator(image_size, feature_sizes, device=images.device)
        return {"cls_logits": cls_logits, "bbox_regression": bbox_regression, "anchors": anchors,
                "feature_sizes": feature_sizes, "image_size": image_size}

    def feature_sizes_for(self, image_size: int | Sequence[int]) -> list[tuple[int, int]]:
        """Sizes of the six maps for an input size, without running the network (every stride-2 layer
        here maps ``n`` to ``ceil(n / 2)``)."""
        h, w = as_size(image_size)
        return [(_ceil_div(h, s), _ceil_div(w, s)) for s in self.strides]

    def anchors_for(self, images: torch.Tensor | int | Sequence[int] | None = None) -> torch.Tensor:
        """Anchors ``[A, 4]`` (xyxy pixels) for a batch of images, an input size, or the nominal size."""
        if isinstance(images, torch.Tensor):
            size, device = tuple(images.shape[-2:]), images.device
        else:
            size, device = as_size(self.image_size if images is None else images), None
        return self.anchor_generator(size, self.feature_sizes_for(size), device=device)

    # -- training and inference -----------------------------------------------------------------------
    def compute_loss(self, outputs: dict[str, Any],
                     targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """:func:`mobilevision.detection.ssd_loss` of :meth:`forward`'s outputs against ``targets``
        (``{"boxes": [N, 4] xyxy input pixels, "labels": [N] in 0..num_classes-1}`` per image)."""
        return ssd_loss(outputs["cls_logits"], outputs["bbox_regression"], outputs["anchors"], targets,
                        self.box_coder, self.neg_pos_ratio, self.iou_threshold)

    def postprocess(self, outputs: dict[str, Any], image_sizes: Any = None,
                    **overrides: Any) -> list[dict[str, torch.Tensor]]:
        """Detections from :meth:`forward`'s outputs; boxes are clipped to ``image_sizes`` (default: the
        input size; pass each image's unpadded ``(H, W)`` for padded batches). ``overrides``: any of
        ``score_thresh``, ``nms_thresh``, ``topk_candidates``, ``detections_per_img``, ``min_size``."""
        settings = {"score_thresh": self.score_thresh, "nms_thresh": self.nms_thresh,
                    "topk_candidates": self.topk_candidates, "detections_per_img": self.detections_per_img}
        settings.update(overrides)
        return postprocess(outputs["cls_logits"], outputs["bbox_regression"], outputs["anchors"],
                           outputs["image_size"] if image_sizes is None else image_sizes,
                           box_coder=self.box_coder, **settings)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, **overrides: Any) -> list[dict[str, torch.Tensor]]:
        """Forward + :meth:`postprocess`: ``[{"boxes", "scores", "labels"}]`` per image, in input pixels.
        Runs in the module's current mode: call ``.eval()`` first."""
        return self.postprocess(self(images), **overrides)


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d) if d > 0 else n


__all__ = ["SSDLite", "select_ssd_taps"]
