"""SSD inference post-processing: softmax, per-class top-k, decode, clip, class-wise NMS."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from .anchors import as_size
from .box_coder import BoxCoder
from .loss import _anchors_per_image


def _sizes_per_image(image_size, batch: int) -> list[tuple[int, int]]:
    if isinstance(image_size, (int, torch.Size)) or all(isinstance(s, int) for s in image_size):
        return [as_size(image_size)] * batch  # one size (or an images.shape) for the whole batch
    if len(image_size) != batch:
        raise ValueError(f"got {len(image_size)} image sizes for a batch of {batch}")
    return [as_size(s) for s in image_size]


def top_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
            limit: int) -> torch.Tensor:
    """``batched_nms(boxes, scores, labels, iou_threshold)[:limit]``, without running NMS on every box.

    Whether a box survives class-wise NMS depends only on the higher-scoring boxes of its class, so NMS
    over the ``m`` highest-scoring boxes keeps exactly the survivors among them; once ``limit`` of them
    survive, they are the ``limit`` best survivors overall. ``m`` starts at ``4 * limit`` and grows 4x
    until that holds (or covers every box). Same result as the full NMS (up to the order of tied
    scores), much faster when only a few hundred of many thousand candidates are wanted.
    """
    n = scores.numel()
    if limit <= 0 or n <= 4 * limit:
        return batched_nms(boxes, scores, labels, iou_threshold)[:limit]
    order = scores.argsort(descending=True)
    m = 4 * limit
    while True:
        idx = order[:m]
        keep = batched_nms(boxes[idx], scores[idx], labels[idx], iou_threshold)
        if keep.numel() >= limit or m >= n:
            return idx[keep[:limit]]
        m *= 4


@torch.no_grad()
def postprocess(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    anchors: torch.Tensor | Sequence[torch.Tensor],
    image_size: int | Sequence[int] | Sequence[Sequence[int]],
    score_thresh: float = 0.01,
    topk_candidates: int = 300,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    box_coder: BoxCoder | None = None,
    min_size: float = 0.0,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image from raw SSD outputs.

    ``cls_logits [B, A, C + 1]`` (0 = background), ``bbox_regression [B, A, 4]``, ``anchors [A, 4]`` xyxy
    (or one per image); ``image_size``: ``int``, ``(H, W)`` for the whole batch, or one ``(H, W)`` per image
    (boxes are clipped to it). Per image: softmax over classes, drop background; for each class keep
    the ``topk_candidates`` highest-scoring anchors whose score is ``> score_thresh``; decode and clip
    those boxes; drop boxes smaller than ``min_size`` pixels (when ``min_size > 0``); class-wise NMS
    at ``nms_thresh``; keep the ``detections_per_img`` best (NMS runs on the best-scoring candidates
    only as far as needed to find them: :func:`top_nms`).

    Returns ``[{"boxes": [D, 4] xyxy network-input pixels, "scores": [D], "labels": [D] in 0..C-1}]``,
    sorted by decreasing score.
    """
    box_coder = box_coder or BoxCoder()
    batch = cls_logits.shape[0]
    anchors_list = _anchors_per_image(anchors, batch)
    sizes = _sizes_per_image(image_size, batch)
    scores = F.softmax(cls_logits.float(), dim=-1)[..., 1:]  # [B, A, C]
    boxes = [clip_boxes_to_image(box_coder.decode(d.float(), a.float()), size)
             for d, a, size in zip(bbox_regression, anchors_list, sizes)]
    return select_detections(torch.stack(boxes), scores, score_thresh, topk_candidates, nms_thresh,
                             detections_per_img, min_size)


@torch.no_grad()
def select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_thresh: float = 0.01,
    topk_candidates: int = 300,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 0.0,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image from decoded boxes ``[B, A, 4]`` (xyxy, already clipped) and class scores ``[B, A, C]``
    (background dropped): the second half of :func:`postprocess`, shared with exported models, whose graph ends
    with the decoded boxes and scores."""
    batch, num_anchors, num_classes = scores.shape
    results = []
    for img_scores, img_boxes in zip(scores.float(), boxes.float()):
        k = min(topk_candidates, num_anchors)
        top_scores, top_anchor = img_scores.topk(k, dim=0)  # [k, C], per class
        labels = torch.arange(num_classes, device=img_scores.device).expand(k, num_classes)
        top_scores, top_anchor, labels = top_scores.reshape(-1), top_anchor.reshape(-1), labels.reshape(-1)
        keep = top_scores > score_thresh
        top_scores, top_anchor, labels = top_scores[keep], top_anchor[keep], labels[keep]
        boxes_k = img_boxes[top_anchor]
        if min_size > 0:
            keep = remove_small_boxes(boxes_k, min_size)
            boxes_k, top_scores, labels = boxes_k[keep], top_scores[keep], labels[keep]
        keep = top_nms(boxes_k, top_scores, labels, nms_thresh, detections_per_img)
        results.append({"boxes": boxes_k[keep], "scores": top_scores[keep], "labels": labels[keep]})
    return results


def scale_boxes(
    boxes: torch.Tensor,
    from_size: tuple[int, int] | Sequence[float],
    to_size: tuple[int, int] | Sequence[float],
    clip: bool = False,
) -> torch.Tensor:
    """Rescale xyxy ``boxes`` from an image of ``from_size=(h, w)`` to one of ``to_size=(h, w)``.

    Typical use: a detector ran on a ``320x320`` resize of an image whose COCO entry is
    ``height x width``; ``scale_boxes(boxes, (320, 320), (height, width))`` gives boxes in original
    pixels, as :class:`COCOEvaluator` expects. Independent x/y factors, so this also undoes
    aspect-ratio-changing resizes. It does not undo padding or cropping (subtract the offset first).
    ``clip=True`` clamps the result to the target image.
    """
    fh, fw = float(from_size[0]), float(from_size[1])
    th, tw = float(to_size[0]), float(to_size[1])
    if fh <= 0 or fw <= 0 or th <= 0 or tw <= 0:
        raise ValueError(f"sizes must be positive, got from_size={tuple(from_size)}, to_size={tuple(to_size)}")
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [..., 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        boxes = boxes.float()
    factors = boxes.new_tensor([tw / fw, th / fh, tw / fw, th / fh])
    out = boxes * factors
    if clip:
        out = torch.stack(
            [out[..., 0].clamp(0, tw), out[..., 1].clamp(0, th), out[..., 2].clamp(0, tw), out[..., 3].clamp(0, th)],
            dim=-1,
        )
    return out
