"""SSD multibox loss: smooth L1 on matched anchors, cross-entropy with 3:1 hard negative mining."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .box_coder import BoxCoder
from .matcher import match_anchors


def _anchors_per_image(anchors: torch.Tensor | Sequence[torch.Tensor], batch: int) -> list[torch.Tensor]:
    if isinstance(anchors, torch.Tensor) and anchors.dim() == 2:
        return [anchors] * batch
    if len(anchors) != batch:
        raise ValueError(f"got {len(anchors)} anchor sets for a batch of {batch}")
    return list(anchors)


def ssd_loss(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    anchors: torch.Tensor | Sequence[torch.Tensor],
    targets: Sequence[dict[str, torch.Tensor]],
    box_coder: BoxCoder | None = None,
    neg_pos_ratio: int = 3,
    iou_threshold: float = 0.5,
    smooth_l1_beta: float = 1.0,
) -> dict[str, torch.Tensor]:
    """SSD loss over a batch.

    ``cls_logits [B, A, C + 1]`` (class 0 = background), ``bbox_regression [B, A, 4]`` (encoded by
    ``box_coder``), ``anchors [A, 4]`` xyxy (shared by the batch, or one ``[A, 4]`` per image),
    ``targets[i] = {"boxes": [N, 4] xyxy in network-input pixels, "labels": [N] in 0..C-1}``.
    Ground-truth boxes with non-positive width or height are ignored.

    * Matching: :func:`match_anchors` (IoU >= ``iou_threshold`` plus a forced best anchor per box).
    * Box loss: smooth L1 (``beta = smooth_l1_beta``) of the encoded targets, summed over the matched
      anchors.
    * Class loss: cross-entropy over the matched anchors plus, per image, the hardest negatives
      (highest background cross-entropy), ``neg_pos_ratio * max(1, num_pos_i)`` of them (fewer if the
      image has fewer negative anchors). An image with no ground truth thus still contributes its
      ``neg_pos_ratio`` hardest negatives, teaching background on empty images; with positives it is
      exactly SSD's 3:1 ratio.
    * Both losses are divided by ``max(1, number of matched anchors in the batch)``.

    Returns ``{"loss": loss_cls + loss_box, "loss_cls": ..., "loss_box": ...}``.
    """
    box_coder = box_coder or BoxCoder()
    batch, num_anchors, _ = cls_logits.shape
    device = cls_logits.device
    anchors_list = _anchors_per_image(anchors, batch)

    cls_targets = torch.zeros((batch, num_anchors), dtype=torch.long, device=device)
    box_loss = cls_logits.new_zeros((), dtype=torch.float32)
    for i, (target, anc) in enumerate(zip(targets, anchors_list)):
        boxes = target["boxes"].reshape(-1, 4).to(device=device, dtype=anc.dtype)
        labels = target["labels"].reshape(-1).to(device)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[valid], labels[valid]
        matched = match_anchors(boxes, anc, iou_threshold)
        pos = matched >= 0
        if not pos.any():
            continue
        gt_idx = matched[pos]
        cls_targets[i, pos] = labels[gt_idx] + 1
        encoded = box_coder.encode(boxes[gt_idx], anc[pos])
        box_loss = box_loss + F.smooth_l1_loss(bbox_regression[i, pos].float(), encoded.float(),
                                               reduction="sum", beta=smooth_l1_beta)

    ce = F.cross_entropy(cls_logits.reshape(-1, cls_logits.shape[-1]).float(), cls_targets.reshape(-1),
                         reduction="none").view(batch, num_anchors)
    positive = cls_targets > 0
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.minimum(neg_pos_ratio * num_pos.clamp(min=1), (~positive).sum(dim=1, keepdim=True))
    # Rank negatives by loss (positives last); keep the num_neg hardest of each image.
    negative_loss = ce.detach().masked_fill(positive, -float("inf"))
    order = negative_loss.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)
    hard_negative = (rank < num_neg) & ~positive

    normalizer = num_pos.sum().clamp(min=1).float()
    loss_cls = (ce[positive].sum() + ce[hard_negative].sum()) / normalizer
    loss_box = box_loss / normalizer
    return {"loss": loss_cls + loss_box, "loss_cls": loss_cls, "loss_box": loss_box}


class SSDLoss(nn.Module):
    """Module form of :func:`ssd_loss`, holding the box coder and the matching / mining settings."""

    def __init__(self, box_coder: BoxCoder | None = None, neg_pos_ratio: int = 3, iou_threshold: float = 0.5,
                 smooth_l1_beta: float = 1.0) -> None:
        super().__init__()
        self.box_coder = box_coder or BoxCoder()
        self.neg_pos_ratio, self.iou_threshold, self.smooth_l1_beta = neg_pos_ratio, iou_threshold, smooth_l1_beta

    def forward(self, cls_logits: torch.Tensor, bbox_regression: torch.Tensor,
                anchors: torch.Tensor | Sequence[torch.Tensor],
                targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return ssd_loss(cls_logits, bbox_regression, anchors, targets, self.box_coder, self.neg_pos_ratio,
                        self.iou_threshold, self.smooth_l1_beta)

    def extra_repr(self) -> str:
        return (f"box_coder={self.box_coder}, neg_pos_ratio={self.neg_pos_ratio}, "
                f"iou_threshold={self.iou_threshold}, smooth_l1_beta={self.smooth_l1_beta}")
