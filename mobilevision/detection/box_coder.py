"""SSD box encoding: anchor-relative centre offsets and log size ratios, scaled by 1 / variances."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def _cxcywh(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


class BoxCoder:
    """Encode xyxy boxes against xyxy anchors and back.

    ``weights=(wx, wy, ww, wh)`` are the inverses of SSD's variances (0.1, 0.1, 0.2, 0.2):
    ``dx = wx (x - xa) / wa``, ``dw = ww log(w / wa)``, likewise for y, h. :meth:`decode` clamps
    ``dw / ww`` and ``dh / wh`` at ``bbox_xform_clip = log(1000 / 16)`` (torchvision's bound), so a wild
    prediction cannot overflow ``exp``. Shapes broadcast: ``[..., 4]`` against ``[..., 4]``.
    """

    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        x, y, w, h = _cxcywh(boxes)
        xa, ya, wa, ha = _cxcywh(anchors)
        return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha,
                            ww * torch.log(w / wa), wh * torch.log(h / ha)], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        deltas = deltas.to(anchors.dtype)
        xa, ya, wa, ha = _cxcywh(anchors)
        x = deltas[..., 0] / wx * wa + xa
        y = deltas[..., 1] / wy * ha + ya
        w = torch.exp((deltas[..., 2] / ww).clamp(max=self.bbox_xform_clip)) * wa
        h = torch.exp((deltas[..., 3] / wh).clamp(max=self.bbox_xform_clip)) * ha
        return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"
