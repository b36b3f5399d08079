"""The candidate networks of ``mobilevision select``: a grid point built with random weights (latency does not
depend on them), its MAdds and params, its file for a runtime (exported once and reused), and a zero-argument call
that runs it once in that runtime: the deployable torch network, ONNX Runtime or ExecuTorch."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from ..evaluation.selection import GridPoint

__all__ = ["RUNTIMES", "RUNTIME_FORMATS", "build_task", "complexity", "exported_file", "prepare", "random_calibration"]

RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8", "executorch", "executorch-int8")
#: the export format each runtime other than torch runs
RUNTIME_FORMATS = {"onnxruntime": "onnx", "onnxruntime-int8": "onnx", "executorch": "executorch",
                   "executorch-int8": "executorch"}


def build_task(point: GridPoint, arch: dict[str, Any] | None = None):
    """The task of ``point`` with random weights: the 1000-class classifier or the 80-class SSDLite, with the
    network-shaping settings ``arch`` (a recipe's ``first_stride``, default boxes, ...)."""
    from ..tasks import ClassificationTask, DetectionTask

    cls, classes = (ClassificationTask, 1000) if point.task == "classification" else (DetectionTask, 80)
    arch = arch or {}
    return cls(backbone=point.backbone, width=point.width, num_classes=classes, image_size=point.image_size,
               **arch).eval()


def complexity(network, point: GridPoint) -> tuple[int, int]:
    """(MAdds per image, params) of a candidate's deployable network."""
    from ..evaluation.complexity import count_madds, count_params

    return count_madds(network, (1, 3, point.image_size, point.image_size)), count_params(network)


def random_calibration(point: GridPoint, batch: int) -> list:
    """int8 calibration batches of random images for a candidate: latency does not depend on the values."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.random((batch, 3, point.image_size, point.image_size), dtype=np.float32) for _ in range(4)]


def _torch_runner(task, batch: int, inputs: dict) -> tuple[Callable[[], Any], Any]:
    import torch

    from .graph import deployable

    network, decoder = deployable(task)
    size = task.hparams.image_size
    x = inputs.setdefault(size, torch.rand(batch, 3, size, size))
    if decoder is None:
        return (lambda: network(x)), network
    return (lambda: decoder(*network(x))), network


def exported_file(task, point: GridPoint, runtime: str, batch: int, export_dir: Path,
                   log: Callable[[str], None]) -> Path:
    """The export of ``point`` for ``runtime`` under ``export_dir`` (reused when a previous call wrote it), float32
    or int8 (calibrated on random images)."""
    from .formats import FORMATS, export_model, read_exported_metadata

    fmt = RUNTIME_FORMATS[runtime]
    int8 = runtime.endswith("-int8")
    static = FORMATS[fmt].static_batch
    name = f"{point.name}{'.int8' if int8 else ''}{f'.b{batch}' if static else ''}{FORMATS[fmt].suffix}"
    path = export_dir / point.task / name
    if path.is_file():
        try:
            meta = read_exported_metadata(path)
            if (meta.get("backbone") == point.backbone and list(meta.get("image_size", [])) == [point.image_size] * 2
                    and bool(meta.get("int8")) == int8):
                return path
        except Exception:  # noqa: BLE001 - an unreadable leftover is exported again
            pass
    t0 = time.perf_counter()
    calibration = random_calibration(point, batch if static else 1) if int8 else None
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model(task, tmp, fmt, batch=batch if static else None, calibration=calibration)
    os.replace(tmp, path)
    log(f"exported {path} ({time.perf_counter() - t0:.1f} s)")
    return path


def _exported_runner(path: Path, threads: int, batch: int, size: int, inputs: dict) -> Callable[[], Any]:
    import numpy as np

    from .formats import load_exported

    model = load_exported(path, threads=threads)
    x = inputs.setdefault(("np", batch, size),
                          np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32))
    return lambda: model(x)


def prepare(point: GridPoint, runtime: str, threads: int, batch: int, export_dir: Path, inputs: dict,
            log: Callable[[str], None], arch: dict[str, Any] | None = None) -> tuple[Callable[[], Any], int, int]:
    """A zero-argument call running ``point`` (built with ``arch``) once in ``runtime``, and its (MAdds per image,
    params). ``inputs`` caches the random input batches between candidates of one size."""
    task = build_task(point, arch)
    fn, network = _torch_runner(task, batch, inputs)
    madds, params = complexity(network, point)
    if runtime != "torch":
        path = exported_file(task, point, runtime, batch, export_dir, log)
        del fn, network
        fn = _exported_runner(path, threads, batch, point.image_size, inputs)
    return fn, madds, params
