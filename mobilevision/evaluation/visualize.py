"""Pictures of results: detections drawn on images (torchvision.utils does the drawing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, make_grid

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
            "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw_detections(
    images: Sequence[np.ndarray | torch.Tensor],
    detections: Sequence[dict],
    class_names: Sequence[str],
    path: str | os.PathLike,
    score_thresh: float = 0.3,
    ground_truth: Sequence[dict] | None = None,
    nrow: int = 4,
) -> Path:
    """Save a grid PNG of ``images`` (HxWx3 uint8) with predicted boxes (label + score) and, optionally,
    ground-truth boxes in white. Boxes are xyxy in each image's pixels; ``labels`` index ``class_names``."""
    tiles = []
    size = None
    for k, (image, det) in enumerate(zip(images, detections)):
        img = torch.as_tensor(np.asarray(image)).permute(2, 0, 1).contiguous()
        if ground_truth is not None and len(ground_truth[k]["boxes"]):
            img = draw_bounding_boxes(img, torch.as_tensor(ground_truth[k]["boxes"]).float(), colors="white", width=1)
        keep = det["scores"] >= score_thresh
        boxes, labels, scores = det["boxes"][keep].float().cpu(), det["labels"][keep].cpu(), det["scores"][keep].cpu()
        if len(boxes):
            img = draw_bounding_boxes(
                img, boxes, labels=[f"{class_names[int(c)]} {s:.2f}" for c, s in zip(labels, scores)],
                colors=[_PALETTE[int(c) % len(_PALETTE)] for c in labels], width=2)
        size = size or img.shape[-2:]
        if img.shape[-2:] != size:  # pad to the first tile's size so the grid lines up
            canvas = torch.zeros(3, max(size[0], img.shape[1]), max(size[1], img.shape[2]), dtype=torch.uint8)
            canvas[:, : img.shape[1], : img.shape[2]] = img
            img = canvas[:, : size[0], : size[1]]
        tiles.append(img)
    grid = make_grid(tiles, nrow=nrow, padding=4, pad_value=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path
