"""The SSD IoU crop keeps what SSD keeps: every box whose centre is inside the crop, clipped to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mobilevision.data.transforms import DetectionTransform, SSDRandomIoUCrop, detection_train_transforms


class FixedIoUCrop(SSDRandomIoUCrop):
    """The IoU crop's box handling with a given crop ``(left, top, right, bottom)``."""

    def __init__(self, crop: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.crop = crop

    def get_params_dependent_on_data(self, params, data):
        return {"crop_coords": self.crop}


IMAGE = np.zeros((100, 100, 3), np.uint8)
CROP = (30, 30, 70, 60)  # 40 x 30
BOXES = np.array([
    [0, 0, 100, 100],  # centre (50, 50) inside; 12% of it visible -> kept, clipped
    [0, 0, 40, 40],    # centre (20, 20) outside, though partly visible -> dropped
    [35, 35, 45, 45],  # inside
    [40, 10, 80, 58],  # centre (60, 34) inside, 44% visible -> clipped
    [60, 40, 90, 55],  # centre (75, 47.5) outside -> dropped
], np.float32)
EXPECTED = np.array([[0, 0, 40, 30], [5, 5, 15, 15], [10, 0, 40, 28]], np.float32)


def test_iou_crop_keeps_boxes_by_centre_whatever_their_visibility():
    # even under a min_visibility filter (0.2 was the training default): the crop clips what it keeps
    for min_visibility in (0.0, 0.2):
        out, boxes, labels = DetectionTransform([FixedIoUCrop(CROP)], min_visibility=min_visibility)(
            IMAGE, BOXES, np.arange(5))
        assert out.shape == (30, 40, 3)
        np.testing.assert_allclose(boxes, EXPECTED, atol=1e-4)
        assert labels.tolist() == [0, 2, 3]


def test_training_pipeline_keeps_boxes_by_centre(monkeypatch):
    """The same crop inside ``detection_train_transforms(..., "ssdlite")``: crop, random flip, resize 40x30 -> 80x80."""
    monkeypatch.setattr(SSDRandomIoUCrop, "get_params_dependent_on_data", lambda *args, **kwargs: {"crop_coords": CROP})
    scale = np.array([2, 8 / 3, 2, 8 / 3], np.float32)
    flipped = EXPECTED[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [40, 0, 40, 0]
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        image, boxes, labels = detection_train_transforms(80, "ssdlite", to_tensor=False)(IMAGE, BOXES, np.arange(5))
        assert image.shape == (80, 80, 3) and labels.tolist() == [0, 2, 3]
        is_flipped = not np.allclose(boxes, EXPECTED * scale, atol=1e-3)
        np.testing.assert_allclose(boxes, (flipped if is_flipped else EXPECTED) * scale, atol=1e-3)
        seen.add(is_flipped)
    assert seen == {False, True}


@pytest.mark.parametrize("seed", range(3))
def test_iou_crop_matches_torchvision(seed):
    """torchvision's RandomIoUCrop picks the crop and marks the boxes to keep (then SanitizeBoundingBoxes
    removes the others); ours, given that crop, keeps the same boxes with the same coordinates. Small crops
    and some big boxes, so that boxes with under 20% of their area in the crop occur."""
    g = torch.Generator().manual_seed(seed)
    h, w = 90, 120
    xy = torch.rand(40, 2, generator=g) * torch.tensor([w, h])
    wh = torch.rand(40, 2, generator=g) * 60 + 2
    wh[:10] += 100
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(torch.zeros(4), torch.tensor([w, h, w, h]))
    boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) >= 2).all(1)]
    labels = torch.arange(len(boxes))
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    tv_boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
    crop = v2.RandomIoUCrop(max_scale=0.5)
    torch.manual_seed(seed)
    compared = low_visibility = 0
    while compared < 5:
        params = crop.make_params([image, tv_boxes])
        if not params:  # the "keep the whole image" option
            continue
        cropped = crop.transform(tv_boxes, params)
        visible = (cropped[:, 2:] - cropped[:, :2]).prod(1) / (boxes[:, 2:] - boxes[:, :2]).prod(1)
        low_visibility += int((params["is_within_crop_area"] & (visible < 0.2)).sum())
        ref = v2.SanitizeBoundingBoxes()({"boxes": cropped, "labels": labels})
        left, top = params["left"], params["top"]
        coords = (left, top, left + params["width"], top + params["height"])
        _, ours, our_labels = DetectionTransform([FixedIoUCrop(coords)], min_visibility=0.2)(
            np.zeros((h, w, 3), np.uint8), boxes.numpy(), labels.numpy())
        assert our_labels.tolist() == ref["labels"].tolist()
        np.testing.assert_allclose(ours, ref["boxes"].numpy(), atol=1e-3)
        compared += 1
    assert low_visibility > 0

