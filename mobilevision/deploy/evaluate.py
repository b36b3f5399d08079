"""Accuracy and latency of a deployable model (checkpoint under torch, exported file float32 or int8) on the
checkpoint's own validation data, through the same metrics as training: top-1 / top-5, COCO mAP, km accuracy, mIoU."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from pytorch_lightning import LightningDataModule

from ..errors import UserError
from ..imagenet import IMAGENET_MEAN, IMAGENET_STD
from .predictor import Predictor

__all__ = ["checkpoint_data_args", "datamodule_of", "evaluate_predictor", "latency_ms"]


def checkpoint_data_args(ckpt: dict[str, Any], batch_size: int, num_workers: int | None = None) -> dict[str, Any]:
    """The data module arguments a checkpoint was trained with, for evaluating it: another batch size (and number
    of workers, when given), no image cache."""
    args = {k: v for k, v in (ckpt.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    args.update(batch_size=batch_size, cache_images=False)
    if num_workers is not None:
        args["num_workers"] = num_workers
    return args


def datamodule_of(task, ckpt: dict[str, Any], batch_size: int = 32) -> LightningDataModule:
    """The validation data a checkpoint was trained with (its ``datamodule_hyper_parameters``), set up."""
    from .adapters import ADAPTERS
    from .graph import task_kind

    if not ckpt.get("datamodule_hyper_parameters"):
        raise UserError("the checkpoint records no data module (trained outside `mobilevision train`?): "
                         "no validation data to measure accuracy on")
    dm = ADAPTERS[task_kind(task)].datamodule(task, checkpoint_data_args(ckpt, batch_size, num_workers=0))
    dm.setup("validate")
    return dm


def _unnormalize(images: torch.Tensor, dm: LightningDataModule) -> np.ndarray:
    """The loader's images back in [0, 1], by the data module's normalization (ImageNet's without one)."""
    mean = torch.tensor(getattr(dm, "mean", IMAGENET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(getattr(dm, "std", IMAGENET_STD)).view(1, 3, 1, 1)
    return (images.float() * std + mean).numpy()


def evaluate_predictor(predictor: Predictor, dm: LightningDataModule, max_batches: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``predictor`` over ``dm``'s validation loader (images un-normalized back to [0, 1], the exported
    input) and score it: ``acc1`` / ``acc5`` (classification), the 12 COCO stats (detection, ``AP``,
    ``AP50``, ...), ``acc_{1,25,200,750,2500}km`` and ``median_km`` (geolocalization) or ``miou``, ``pixel_acc``, ...
    (segmentation: each image's mask resized, nearest, to its original labels' size)."""
    adapter = predictor.adapter
    loader = dm.val_dataloader()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    metrics = adapter.metrics(dm)
    for i, batch in enumerate(loader):
        if i >= total:
            break
        adapter.update(metrics, predictor, batch, _unnormalize(batch[0], dm))
        if progress is not None:
            progress(i + 1, total)
    return adapter.summarize(metrics)


def latency_ms(model, runs: int = 30, warmup: int = 5) -> tuple[float, float]:
    """Median and p90 milliseconds of an exported model (:func:`~mobilevision.deploy.formats.load_exported`: ONNX
    Runtime or ExecuTorch) on a random batch of its fixed batch size (1 for a dynamic-batch file), timed and
    summarized as every latency of the project is (:func:`~mobilevision.evaluation.time_interleaved`)."""
    from ..evaluation.complexity import time_interleaved

    h, w = model.meta["image_size"]
    x = np.random.default_rng(0).random((model.batch or 1, 3, h, w), dtype=np.float32)
    stats = time_interleaved({"model": lambda: model(x)}, warmup=warmup, repeats=runs)["model"]
    return stats["median_ms"], stats["p90_ms"]
