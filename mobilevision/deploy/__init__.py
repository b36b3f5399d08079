"""From a checkpoint to a device: deployable networks, export (ONNX, ExecuTorch, Core ML; float32 and int8), and
prediction on images and videos with the checkpoint or an exported file. Sits above ``tasks`` and below ``cli``.

Names are imported on first use: running an ONNX or ExecuTorch file (:class:`Predictor`) loads neither the
training stack (Lightning, torchmetrics, the data modules, albumentations) nor the COCO tools; exporting a
checkpoint (``export_onnx``, ``deployable``, ...) does.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it
_EXPORTS = {
    "DetectionDecoder": "graph", "Deployable": "graph", "NormalizedNetwork": "graph", "deployable": "graph", "load_any_task": "graph",
    "metadata_of": "graph", "task_kind": "graph",
    "OnnxModel": "onnx", "append_nms": "onnx", "export_onnx": "onnx", "read_metadata": "onnx",
    "Predictor": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
