"""Each backbone's facts in one place, as timm's ``pretrained_cfg``: its published input size, the weights that
``weights="imagenet"`` loads and the input pipeline those weights expect (interpolation, crop ratio, mean / std),
and the published ImageNet top-1 of the family's grid (:file:`published_top1.csv`, next to this module).

Read by :func:`~mobilevision.models.load_pretrained` (where the weights come from), the train command (a model
that starts from ImageNet weights gets their normalization, interpolation and crop unless the data options say
otherwise; :meth:`BackboneCfg.data_config`), the exported files' metadata (through the data module's recorded
options) and ``mobilevision select`` (published top-1, which weights can reach it).

The preprocessing is that of the weights' own release: torchvision's weight transforms (``crop_size /
resize_size``, their interpolation) and timm's ``pretrained_cfg`` (``crop_pct``, ``interpolation``, ``mean``,
``std``); ``tests/test_backbone_cfg.py`` reads them from both libraries. A backbone without ImageNet weights (the
generic ``efficientnet`` of any phi) has the standard pipeline of :mod:`mobilevision.imagenet`.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ..imagenet import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

__all__ = ["PUBLISHED_TOP1_FILE", "BackboneCfg", "PublishedTop1", "load_published_top1"]

PUBLISHED_TOP1_FILE = "published_top1.csv"


@dataclass(frozen=True)
class BackboneCfg:
    """A backbone's facts.

    Attributes:
        input_size: the published input side of the architecture (EfficientNet-B3: 300).
        weights: what ``weights="imagenet"`` loads: ``"torchvision <weights enum>"`` or ``"timm <model.tag>"``;
            None when no ImageNet weights exist for it.
        interpolation / crop_pct / mean / std: the evaluation pipeline of those weights (the shorter side to
            ``size / crop_pct``, a center crop, images enlarged by ``interpolation``, normalized by mean / std).
    """

    input_size: int = 224
    weights: str | None = None
    interpolation: str = DEFAULT_INTERPOLATION
    crop_pct: float = DEFAULT_CROP_PCT
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0.0 < self.crop_pct <= 1.0 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"bad backbone cfg: crop_pct {self.crop_pct}, mean {self.mean}, std {self.std}")

    @property
    def weights_source(self) -> tuple[str, str] | None:
        """``("torchvision", "MobileNet_V2_Weights.IMAGENET1K_V1")`` / ``("timm", "mobileone_s0.apple_in1k")``."""
        if self.weights is None:
            return None
        library, ref = self.weights.split(" ", 1)
        return library, ref

    def data_config(self) -> dict[str, object]:
        """The data modules' options that reproduce the weights' input pipeline: ``mean``, ``std`` and, for the
        center-crop tasks (classification, geolocalization), ``resize_ratio`` and ``interpolation``."""
        return {"mean": list(self.mean), "std": list(self.std), "resize_ratio": self.crop_pct,
                "interpolation": self.interpolation}

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PublishedTop1:
    """A published ImageNet-1k top-1 (percent), the name it is published under and where."""

    top1: float
    published_name: str
    source: str


def _width_key(width: float | str | None) -> float | None:
    return None if width in (None, "") else round(float(width), 4)


def load_published_top1(path: str | Path | None = None) -> dict[tuple[str, float | None, int], PublishedTop1]:
    """The published top-1 table (default: :file:`published_top1.csv`, shipped with the package) as
    ``{(backbone, width, resolution): PublishedTop1}``; ``width`` is None for the families without a multiplier
    (MobileOne, EfficientNet). Every row names its source; none of these numbers is measured by this project."""
    if path is None:
        text = resources.files(__package__).joinpath(PUBLISHED_TOP1_FILE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    table = {}
    for row in csv.DictReader(text.splitlines()):
        key = (row["backbone"], _width_key(row["width"]), int(row["resolution"]))
        if key in table:
            raise ValueError(f"{path or PUBLISHED_TOP1_FILE}: two rows for {key}")
        table[key] = PublishedTop1(float(row["top1"]), row["published_name"], row["source"])
    return table
