"""SSD default boxes (Liu et al., arXiv 1512.02325, section 2.2), as used by SSDLite."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

Size = tuple[int, int]


def as_size(size: int | Sequence[int]) -> Size:
    """``int`` or ``(H, W)`` (or a tensor shape ending in H, W) -> ``(H, W)`` of Python ints."""
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    return size[-2], size[-1]


class DefaultBoxGenerator(nn.Module):
    """Default boxes of SSD for ``m = len(aspect_ratios)`` feature maps.

    Scales grow linearly, ``s_k = min_ratio + (max_ratio - min_ratio) * k / (m - 1)`` (relative to the
    image side), and ``s_m = 1``. On map k each location gets a box of scale ``s_k`` and one of scale
    ``sqrt(s_k * s_{k+1})`` with aspect ratio 1, then for each ratio ``r`` in ``aspect_ratios[k]`` the
    boxes ``(s_k sqrt(r), s_k / sqrt(r))`` and ``(s_k / sqrt(r), s_k sqrt(r))``: ``2 + 2 * len(ratios)``
    boxes per location, 6 with the default ``[[2, 3]] * 6``.

    Box centres are ``(j + 0.5) / W_k`` of the image width (``(j + 0.5) * steps[k]`` pixels when
    ``steps`` is given), likewise for rows. Widths and heights are relative to the image's own width
    and height, so non-square inputs get stretched boxes, as in SSD. ``clip=True`` clamps the relative
    widths and heights to ``[0, 1]`` (torchvision's rule; the centre stays put, so a box may still
    overhang the border by up to half the image).

    ``forward(image_size, feature_sizes)`` returns ``[sum_k H_k W_k A_k, 4]`` boxes, xyxy in pixels of
    the network input, ordered level by level, row-major over locations, then over the boxes of one
    location (the order of :class:`mobilevision.heads.SSDLiteHead`). Results are cached per
    (image size, feature sizes, device, dtype).
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[float]] | None = None,
        min_ratio: float = 0.2,
        max_ratio: float = 0.95,
        scales: Sequence[float] | None = None,
        steps: Sequence[float] | None = None,
        clip: bool = True,
    ) -> None:
        super().__init__()
        self.aspect_ratios = [list(r) for r in (aspect_ratios if aspect_ratios is not None else [[2, 3]] * 6)]
        m = len(self.aspect_ratios)
        if scales is None:
            scales = [min_ratio + (max_ratio - min_ratio) * k / max(m - 1, 1) for k in range(m)] + [1.0]
        if len(scales) != m + 1:
            raise ValueError(f"need {m + 1} scales (one per feature map plus the last), got {len(scales)}")
        if steps is not None and len(steps) != m:
            raise ValueError(f"need {m} steps, got {len(steps)}")
        self.scales = [float(s) for s in scales]
        self.steps = None if steps is None else [float(s) for s in steps]
        self.clip = clip
        # Relative (w, h) of the boxes of one location, per feature map (plain floats: no device).
        self.wh_pairs: list[list[tuple[float, float]]] = []
        for k, ratios in enumerate(self.aspect_ratios):
            s_k, s_prime = self.scales[k], math.sqrt(self.scales[k] * self.scales[k + 1])
            wh = [(s_k, s_k), (s_prime, s_prime)]
            for r in ratios:
                q = math.sqrt(r)
                wh += [(s_k * q, s_k / q), (s_k / q, s_k * q)]
            if clip:
                wh = [(min(max(w, 0.0), 1.0), min(max(h, 0.0), 1.0)) for w, h in wh]
            self.wh_pairs.append(wh)
        self._cache: dict[tuple, torch.Tensor] = {}

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def _generate(self, image_size: Size, feature_sizes: Sequence[Size]) -> torch.Tensor:
        img_h, img_w = image_size
        f64 = {"dtype": torch.float64, "device": "cpu"}
        boxes = []
        for k, (fh, fw) in enumerate(feature_sizes):
            # Number of cells the unit interval is divided into, in each direction.
            cells_x = img_w / self.steps[k] if self.steps is not None else fw
            cells_y = img_h / self.steps[k] if self.steps is not None else fh
            cx = (torch.arange(fw, **f64) + 0.5) / cells_x
            cy = (torch.arange(fh, **f64) + 0.5) / cells_y
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # [H*W, 1, 2]
            wh = torch.tensor(self.wh_pairs[k], **f64).unsqueeze(0).expand(centres.shape[0], -1, -1)  # [H*W, A, 2]
            centres = centres.expand_as(wh)
            boxes.append(torch.cat([centres - wh / 2, centres + wh / 2], dim=-1).reshape(-1, 4))
        scale = torch.tensor([img_w, img_h, img_w, img_h], **f64)
        return torch.cat(boxes) * scale

    def forward(
        self,
        image_size: int | Sequence[int],
        feature_sizes: Sequence[int | Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        image_size = as_size(image_size)
        feature_sizes = tuple(as_size(s) for s in feature_sizes)
        if len(feature_sizes) != len(self.aspect_ratios):
            raise ValueError(f"{len(self.aspect_ratios)} feature maps configured, got {len(feature_sizes)} sizes")
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = (image_size, feature_sizes, device, dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = self._generate(image_size, feature_sizes).to(device=device, dtype=dtype)
            self._cache[key] = anchors
        return anchors

    def extra_repr(self) -> str:
        return (f"aspect_ratios={self.aspect_ratios}, scales={[round(s, 4) for s in self.scales]}, "
                f"steps={self.steps}, clip={self.clip}")
