"""The export formats, one table: what ``mobilevision export --format`` writes and what ``Predictor`` can run.

Every format keeps what a deployed model needs: MobileOne folded, normalization inside, the metadata of
:func:`~mobilevision.deploy.graph.metadata_of` inside the file. A new format is a module with an ``export``
function and (where this machine can execute it) a runtime class, plus one row here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from torch import nn

from ..errors import UserError

__all__ = ["FORMATS", "ExportFormat", "export_model", "format_of", "load_exported", "read_exported_metadata"]


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    #: ``export --int8`` is available (static int8, calibrated on the user's images)
    int8: bool
    #: this machine (Linux / any OS with the Python runtime) can execute the file: parity checks and ``predict``
    runs_here: bool
    #: what loads the file on a device
    runtime: str
    #: the input shape is static (phone runtimes plan memory for it): a fixed batch, default 1, and a segmentation
    #: model takes its training resolution (:func:`~mobilevision.deploy.graph.static_metadata`)
    static_batch: bool = True
    #: int8 can be fine-tuned with fake quantization first (``export --int8 --qat-steps N``; PT2E QAT with the quantizer
    #: of the post-training path)
    qat: bool = False


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", True, True, "ONNX Runtime (servers, desktops, Android / iOS builds)",
                         static_batch=False),
    "executorch": ExportFormat("executorch", ".pte", True, True,
                               "ExecuTorch with the XNNPACK delegate (Android, iOS, Linux; the CPU kernels of phones)",
                               qat=True),
    "coreml": ExportFormat("coreml", ".mlpackage", False, False,
                           "Core ML ML Program (iOS 16 / macOS 13 and later; executes on Apple devices only)"),
}


def format_of(path: str | os.PathLike, name: str | None = None) -> ExportFormat:
    """The format named ``name``, or the one whose suffix ``path`` has."""
    if name is not None:
        if name not in FORMATS:
            raise UserError(f"unknown export format {name!r}; formats: {', '.join(FORMATS)}")
        return FORMATS[name]
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    raise UserError(f"{path}: no export format has the suffix {suffix or '(none)'!r}; "
                    f"suffixes: {', '.join(f.suffix for f in FORMATS.values())}")


def export_model(task: nn.Module, output: str | os.PathLike, fmt: str, *, ckpt: dict[str, Any] | None = None,
                 batch: int | str | None = None, nms: bool = False,
                 calibration: Iterable[np.ndarray] | None = None, **options: Any) -> Path:
    """Write ``task`` as ``fmt``. ``batch``: a fixed batch size (ONNX also ``"dynamic"``, its default; the other
    formats default to 1). ``calibration``: float32 batches in [0, 1] at the input size; given, the file is int8."""
    spec = FORMATS[fmt]
    if calibration is not None and not spec.int8:
        raise UserError(f"--int8 is not available for {fmt} files (formats with int8: "
                        f"{', '.join(n for n, f in FORMATS.items() if f.int8)})")
    if options.get("qat_steps") and not spec.qat:
        raise UserError(f"quantization-aware training (--qat-steps) is available for "
                        f"{', '.join(n for n, f in FORMATS.items() if f.qat)} files, not {fmt}")
    if nms and fmt == "executorch":
        raise UserError("--nms (NMS inside the model) is for ONNX files and the Core ML Vision pipeline; an ExecuTorch "
                        "file gives boxes and scores and the app (or `mobilevision predict`) selects detections")
    if fmt == "onnx":
        from .onnx import export_onnx
        from .quantize import quantize_int8

        opset = options.pop("opset", None)
        quantize = None
        if calibration is not None:
            batches = list(calibration)
            quantize = lambda m: quantize_int8(m, batches, **options)  # noqa: E731
        return export_onnx(task, output, ckpt=ckpt, batch="dynamic" if batch is None else batch, nms=nms,
                           quantize=quantize, opset=opset)
    if fmt == "executorch":
        from .executorch import export_executorch

        return export_executorch(task, output, ckpt=ckpt, batch=1 if batch is None else batch, calibration=calibration,
                                 **options)
    from .coreml import export_coreml

    return export_coreml(task, output, ckpt=ckpt, batch=1 if batch is None else batch, nms=nms)


def load_exported(path: str | os.PathLike, threads: int | None = None, providers=None):
    """The runtime model of an exported file: ``model(images)`` -> ``{output: array}``, ``model.meta``, and
    ``model.batch`` (the fixed batch size, or None when the file takes any)."""
    fmt = format_of(path)
    if fmt.name == "onnx":
        from .onnx import OnnxModel

        return OnnxModel(path, threads=threads, providers=providers)
    if fmt.name == "executorch":
        from .executorch import ExecuTorchModel

        return ExecuTorchModel(path, threads=threads)
    raise UserError(f"{path}: {fmt.name} files execute on Apple devices only ({fmt.runtime}); "
                    "`mobilevision export` checked its spec when writing it")


def read_exported_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The mobilevision metadata of any exported file, without running it."""
    fmt = format_of(path)
    if fmt.name == "onnx":
        from .onnx import read_metadata

        return read_metadata(path)
    if fmt.name == "executorch":
        from .executorch import read_pte_metadata

        return read_pte_metadata(path)
    from .coreml import read_coreml_metadata

    return read_coreml_metadata(path)
