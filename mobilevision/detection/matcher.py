"""SSD anchor matching: IoU threshold plus a forced best anchor for every ground-truth box."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


def match_anchors(gt_boxes: torch.Tensor, anchors: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Index of the matched ground-truth box for each anchor, ``-1`` for background.

    ``gt_boxes [G, 4]`` and ``anchors [A, 4]`` are xyxy in the same frame. An anchor is matched to the
    box it overlaps most when that IoU is ``>= iou_threshold`` (SSD's rule). Then every box is also
    matched to its best anchor, whatever the IoU, overriding the threshold match there. When two boxes
    share a best anchor, the forced matches are assigned greedily (highest IoU pair first, each anchor
    and box used once), so each box still ends up with an anchor of its own (as long as ``G <= A``).
    """
    num_anchors = anchors.shape[0]
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return matched
    iou = box_iou(gt_boxes.to(anchors.dtype), anchors)  # [G, A]
    best_iou, best_gt = iou.max(dim=0)
    matched = torch.where(best_iou >= iou_threshold, best_gt, matched)

    num_gt = iou.shape[0]
    best_anchor = iou.argmax(dim=1)  # [G]
    if best_anchor.unique().numel() == num_gt:
        matched[best_anchor] = torch.arange(num_gt, device=anchors.device)
        return matched
    # Rare: some boxes share their best anchor. Greedy assignment, one box per iteration.
    iou = iou.clone()
    for _ in range(min(num_gt, num_anchors)):
        flat = int(iou.argmax())
        g, a = divmod(flat, num_anchors)
        if iou[g, a] < 0:
            break
        matched[a] = g
        iou[g, :] = -1.0
        iou[:, a] = -1.0
    return matched
