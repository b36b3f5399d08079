"""From a checkpoint to a device: deployable networks, ONNX export (float32 and int8), ONNX Runtime execution
and prediction on images and videos. Sits above ``tasks`` and below ``cli``."""

from .graph import DetectionDecoder, NormalizedNetwork, deployable, load_any_task, metadata_of, task_kind
from .onnx import OnnxModel, append_nms, export_onnx, read_metadata
from .predictor import Predictor

__all__ = ["DetectionDecoder", "NormalizedNetwork", "OnnxModel", "Predictor", "append_nms", "deployable", "export_onnx",
           "load_any_task", "metadata_of", "read_metadata", "task_kind"]
