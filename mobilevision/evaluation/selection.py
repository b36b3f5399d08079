"""Latency-budget model selection: the families' published grids, their published ImageNet top-1, the Pareto front
of latency against accuracy, and the best point under a budget.

Data and pure logic only: measuring the candidates (which needs the tasks and the deploy code) is
:mod:`mobilevision.cli.select`'s job.

The grids are the published ones: MobileNetV1 alpha {1.0, 0.75, 0.5, 0.25} x rho {224, 192, 160, 128} (the 16
TF-slim checkpoints), MobileNetV2 depth multiplier x resolution as published (1.4 and 1.3 at 224 only; 1.0, 0.75,
0.5, 0.35 at 224, 192, 160, 128, 96: the 22 TF-slim checkpoints), EfficientNet B0-B7 at their resolutions and
MobileOne S0-S4 at 224. Our MobileNetV2 rounds channels as the TF reference does (``make_divisible`` to multiples
of 8, the last 1x1 conv never below 1280), so its MAdds are within 1 M of the published ones (582 / 509 / 300 / 209
/ 97 / 59 M at 224 for 1.4 / 1.3 / 1.0 / 0.75 / 0.5 / 0.35). The detection grid is SSDLite on each of these backbones (one
point per backbone width, at :data:`DETECTION_SIZES`).

Accuracy: the backbones' published top-1 table (``mobilevision/backbones/published_top1.csv``, read by
:func:`mobilevision.backbones.load_published_top1` and passed in here) holds the published ImageNet-1k top-1 of every
grid point with its source per row: TF-slim's checkpoint tables for MobileNetV1 (float) and V2, the authors' README
for EfficientNet (the released AutoAugment checkpoints, the only published row with B0-B7 complete) and Apple's
README for MobileOne. None of these numbers is measured by this project. A point without a published figure has
none (``accuracy is None``): it is listed, never put on the front or picked, and never estimated.

For detection the accuracy is the backbone's published ImageNet top-1 (no per-size COCO figures are published for
these grids); points of the same backbone are then ordered by input size (a larger input is taken as better),
i.e. a detection candidate's score is ``(top1, image_size)``, compared lexicographically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .complexity import spearman

if TYPE_CHECKING:
    from ..backbones import PublishedTop1

__all__ = ["DETECTION_SIZES", "FAMILIES", "STATISTICS", "TASKS", "AccuracyTable", "Candidate",
           "GridPoint", "candidate_grid", "choose", "fastest", "format_width", "latency_madds_correlation",
           "pareto_front", "published_accuracy"]

FAMILIES = ("mobilenet_v1", "mobilenet_v2", "mobileone", "efficientnet")
TASKS = ("classification", "ssdlite")
#: SSDLite input sizes measured for every backbone (the paper's 320 and smaller)
DETECTION_SIZES = (320, 256, 192)
#: latency statistics a front / budget can use (keys of a measurement)
STATISTICS = {"p90": "p90_ms", "median": "median_ms"}
#: ``{(backbone, width, resolution): PublishedTop1}``, as :func:`mobilevision.backbones.load_published_top1` reads it
AccuracyTable = Mapping[tuple[str, "float | None", int], "PublishedTop1"]

MOBILENET_V1_WIDTHS = (1.0, 0.75, 0.5, 0.25)
MOBILENET_V1_RESOLUTIONS = (224, 192, 160, 128)
#: the 22 published MobileNetV2 checkpoints: (depth multiplier, resolution)
MOBILENET_V2_POINTS = ((1.4, 224), (1.3, 224),
                       *((w, r) for w in (1.0, 0.75, 0.5, 0.35) for r in (224, 192, 160, 128, 96)))
MOBILEONE_VARIANTS = ("s0", "s1", "s2", "s3", "s4")
EFFICIENTNET_VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")


def format_width(width: float) -> str:
    """``1.0``, ``0.75``, ``0.5``, ``1.4``: the multiplier as in the published checkpoint names."""
    s = f"{float(width):g}"
    return s if "." in s else s + ".0"


@dataclass(frozen=True)
class GridPoint:
    """One candidate network: ``backbone`` (registry name) with ``width`` (None: the backbone's own) at
    ``image_size``, for ``task`` (``classification``: the 1000-class classifier, ``ssdlite``: the detector)."""

    name: str
    task: str
    family: str
    backbone: str
    width: float | None
    image_size: int
    #: the ImageNet resolution whose published top-1 describes this point (the image size for classification)
    accuracy_resolution: int

    @property
    def backbone_label(self) -> str:
        return self.backbone if self.width is None else f"{self.backbone} x{format_width(self.width)}"


def _backbone_points(table: AccuracyTable) -> dict[str, list[tuple[str, float | None, int]]]:
    """family -> [(backbone, width, ImageNet resolution)] of the classification grid; EfficientNet at each variant's
    own resolution, as the accuracy table lists it."""
    own = {backbone: r for backbone, width, r in table if backbone.startswith("efficientnet_")}
    return {
        "mobilenet_v1": [("mobilenet_v1", w, r) for w in MOBILENET_V1_WIDTHS for r in MOBILENET_V1_RESOLUTIONS],
        "mobilenet_v2": [("mobilenet_v2", w, r) for w, r in MOBILENET_V2_POINTS],
        "mobileone": [(f"mobileone_{v}", None, 224) for v in MOBILEONE_VARIANTS],
        "efficientnet": [(f"efficientnet_{v}", None, own[f"efficientnet_{v}"]) for v in EFFICIENTNET_VARIANTS],
    }


def _classification_name(backbone: str, width: float | None, resolution: int) -> str:
    return backbone if width is None else f"{backbone}_{format_width(width)}_{resolution}"


def candidate_grid(task: str, table: AccuracyTable, families: Iterable[str] = FAMILIES,
                   sizes: Sequence[int] = DETECTION_SIZES) -> list[GridPoint]:
    """The published grid of ``families`` for ``task`` (``table``: the published top-1, which also gives
    EfficientNet's resolutions).

    ``classification``: every published (width, resolution) point. ``ssdlite``: the detector on each backbone
    width of the grid (MobileNetV1 4 widths, MobileNetV2 6, MobileOne S0-S4, EfficientNet B0-B7) at each of
    ``sizes``; its accuracy is the backbone's at 224 (EfficientNet: at the variant's resolution)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    families = list(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    points: list[GridPoint] = []
    grid = _backbone_points(table)
    for family in FAMILIES:
        if family not in families:
            continue
        if task == "classification":
            points += [GridPoint(_classification_name(b, w, r), task, family, b, w, r, r) for b, w, r in grid[family]]
            continue
        # one point per backbone width: its 224 row (the widest resolution published for every width)
        backbones = list(dict.fromkeys((b, w) for b, w, _ in grid[family]))
        for b, w in backbones:
            res = max(r for bb, ww, r in grid[family] if (bb, ww) == (b, w))
            for s in sizes:
                base = b if w is None else f"{b}_{format_width(w)}"
                points.append(GridPoint(f"ssdlite_{base}_{int(s)}", task, family, b, w, int(s), res))
    return points


# -- published accuracy ----------------------------------------------------------------------------

def published_accuracy(point: GridPoint, table: AccuracyTable) -> PublishedTop1 | None:
    """The published top-1 of ``point``'s network (its backbone's, for a detector), None when none is published."""
    width = None if point.width is None else round(float(point.width), 4)
    return table.get((point.backbone, width, point.accuracy_resolution))


# -- candidates, Pareto front, budget ----------------------------------------------------------------

@dataclass
class Candidate:
    """A grid point with what is known of it: published accuracy, MAdds, params, measured latency (a
    ``{"median_ms", "p90_ms", ...}`` dict)."""

    point: GridPoint
    accuracy: PublishedTop1 | None = None
    madds: int | None = None
    params: int | None = None
    latency: dict[str, Any] | None = None
    #: how the latency was measured (date, other candidates interleaved with, CPUs kept busy by other processes)
    measurement: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.point.name

    @property
    def top1(self) -> float | None:
        return None if self.accuracy is None else self.accuracy.top1

    def latency_ms(self, statistic: str = "p90") -> float:
        """The measured latency by ``statistic`` (``p90`` or ``median``); inf when not measured."""
        if not self.latency:
            return math.inf
        return float(self.latency[STATISTICS[statistic]])

    @property
    def score(self) -> tuple[float, ...] | None:
        """What the front maximizes: ``(top1,)``; for detection ``(top1, image_size)``. None without a figure."""
        if self.accuracy is None:
            return None
        return (self.top1,) if self.point.task == "classification" else (self.top1, float(self.point.image_size))


def _rated(candidates: Iterable[Candidate], statistic: str) -> list[Candidate]:
    return [c for c in candidates if c.score is not None and math.isfinite(c.latency_ms(statistic))]


def pareto_front(candidates: Iterable[Candidate], statistic: str = "p90") -> list[Candidate]:
    """The candidates no other one dominates (at most as slow and at least as accurate, better in one of the two),
    fastest first. Candidates without a published figure or a latency take no part. Exact ties (same latency, same
    score) are all on the front (neither dominates the other); equal latencies with different scores keep only the
    more accurate; equal scores keep only the fastest."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    rated = _rated(candidates, statistic)

    def dominates(a: Candidate, b: Candidate) -> bool:
        la, lb = a.latency_ms(statistic), b.latency_ms(statistic)
        return la <= lb and a.score >= b.score and (la < lb or a.score > b.score)

    front = [c for c in rated if not any(dominates(o, c) for o in rated if o is not c)]
    return sorted(front, key=lambda c: (c.latency_ms(statistic), [-s for s in c.score], c.name))


def choose(candidates: Iterable[Candidate], budget_ms: float, statistic: str = "p90") -> Candidate | None:
    """The most accurate candidate whose latency (``statistic``) is within ``budget_ms`` (``<=``); among equally
    accurate ones the fastest, then the first by name. None when no candidate with a published figure fits.
    The choice is always on :func:`pareto_front`."""
    fits = [c for c in _rated(candidates, statistic) if c.latency_ms(statistic) <= budget_ms]
    if not fits:
        return None
    return min(fits, key=lambda c: ([-s for s in c.score], c.latency_ms(statistic), c.name))


def fastest(candidates: Iterable[Candidate], statistic: str = "p90") -> Candidate | None:
    """The fastest measured candidate (with or without a published figure)."""
    measured = [c for c in candidates if math.isfinite(c.latency_ms(statistic))]
    return min(measured, key=lambda c: (c.latency_ms(statistic), c.name)) if measured else None


def latency_madds_correlation(candidates: Iterable[Candidate], statistic: str = "median") -> dict[str, float]:
    """Spearman rank correlation of the measured latency with MAdds and with params across ``candidates``
    (NaN with fewer than two)."""
    measured = [c for c in candidates if math.isfinite(c.latency_ms(statistic)) and c.madds is not None]
    lat = [c.latency_ms(statistic) for c in measured]
    return {"madds": spearman(lat, [c.madds for c in measured]),
            "params": spearman(lat, [c.params or 0 for c in measured]), "n": len(measured)}
