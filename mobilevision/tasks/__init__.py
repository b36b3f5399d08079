"""LightningModules, one per task."""

from .checkpoint import load_checkpoint, load_task
from .detection import DetectionTask

__all__ = ["DetectionTask", "load_checkpoint", "load_task"]

# image classification
from .classification import ClassificationTask  # noqa: E402

__all__ += ["ClassificationTask"]

# geolocalization (PlaNet)
from .geolocalization import GeolocalizationTask  # noqa: E402

__all__ += ["GeolocalizationTask"]

# semantic segmentation (DeepLabv3, LR-ASPP)
from .segmentation import SegmentationTask  # noqa: E402

__all__ += ["SegmentationTask"]

# multi-label attributes (the MobileNet paper's Table 12)
from .attributes import AttributesTask  # noqa: E402

__all__ += ["AttributesTask"]
