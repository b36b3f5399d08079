"""Accuracy and latency of a deployable model (checkpoint under torch, exported file float32 or int8) on the
checkpoint's own validation data, through the same metrics as training: top-1 / top-5, COCO mAP, km accuracy, mIoU."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from pytorch_lightning import LightningDataModule

from ..errors import UserError
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
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
    from ..data.classification import ClassificationDataModule
    from ..data.detection_datamodule import CocoDetectionDataModule
    from ..data.geolocalization import GeolocalizationDataModule
    from ..data.segmentation import SegmentationDataModule
    from .graph import task_kind

    if not ckpt.get("datamodule_hyper_parameters"):
        raise UserError("the checkpoint records no data module (trained outside `mobilevision train`?): "
                         "no validation data to measure accuracy on")
    args = checkpoint_data_args(ckpt, batch_size, num_workers=0)
    kind = task_kind(task)
    if kind == "detection":
        dm = CocoDetectionDataModule(**args)
        if task.hparams.label_to_category_id:
            dm.use_categories(list(task.hparams.label_to_category_id), task.hparams.category_names)
    elif kind == "classification":
        dm = ClassificationDataModule(**args)
    elif kind == "segmentation":
        dm = SegmentationDataModule(**args)
    else:
        dm = GeolocalizationDataModule(**args)
        dm.use_partition(task.partition)
    dm.setup("validate")
    return dm


def _unnormalize(images: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() * std + mean).numpy()


def evaluate_predictor(predictor: Predictor, dm: LightningDataModule, max_batches: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``predictor`` over ``dm``'s validation loader (images un-normalized back to [0, 1], the exported
    input) and score it: ``acc1`` / ``acc5`` (classification), the 12 COCO stats (detection, ``AP``,
    ``AP50``, ...), ``acc_{1,25,200,750,2500}km`` and ``median_km`` (geolocalization) or ``miou``, ``pixel_acc``, ...
    (segmentation: each image's mask resized, nearest, to its original labels' size)."""
    from ..evaluation.classification import classification_metrics, summarize_metrics
    from ..evaluation.coco import COCOEvaluator
    from ..evaluation.geolocalization import GeoAccuracy
    from ..evaluation.segmentation import segmentation_metrics, summarize_confusion

    kind = predictor.kind
    loader = dm.val_dataloader()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    if kind == "classification":
        metrics = classification_metrics(len(predictor.meta["class_names"]))
    elif kind == "geolocalization":
        metrics = GeoAccuracy()
    elif kind == "segmentation":
        metrics = segmentation_metrics(len(predictor.meta["class_names"]), predictor.meta["ignore_index"])
    else:
        metrics = COCOEvaluator(dm.val_coco, label_to_category_id=list(dm.label_to_category_id))
    for i, batch in enumerate(loader):
        if i >= total:
            break
        images = _unnormalize(batch[0])
        if kind == "detection":
            targets = batch[1]
            sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
            results = predictor.run(images, sizes)
            metrics.update([{"image_id": int(t["image_id"]), "boxes": torch.as_tensor(r["boxes"]),
                             "scores": torch.as_tensor(r["scores"]),
                             "labels": torch.as_tensor(r["labels"])} for t, r in zip(targets, results)])
        elif kind == "segmentation":
            for image, t in zip(images, batch[1]):
                h, w = (int(v) for v in t["input_size"])
                if predictor.meta["preprocess"]["resize"] == "short_side":
                    # the loader's input is what the predictor's preprocessing gives (the same transform): each
                    # image's unpadded part, masks mapped to the original labels' size as validation maps them
                    result = predictor.run(np.ascontiguousarray(image[None, :, :h, :w]), [tuple(t["mask"].shape)])[0]
                else:  # a fixed-size file: the image as 8-bit RGB through its letterbox
                    rgb = np.clip(np.rint(image[:, :h, :w].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
                    result = predictor([rgb])[0]
                mask = torch.from_numpy(result["mask"].astype(np.int64))
                if tuple(mask.shape) != tuple(t["mask"].shape):
                    mask = torch.nn.functional.interpolate(mask[None, None].float(), size=tuple(t["mask"].shape),
                                                           mode="nearest")[0, 0].long()
                metrics.update(mask[None], t["mask"][None])
        elif kind == "classification":
            results = predictor.run(images, [images.shape[-2:]] * len(images))
            metrics.update(torch.from_numpy(np.stack([r["probs"] for r in results])), batch[1])
        else:
            results = predictor.run(images, [images.shape[-2:]] * len(images))
            coords = batch[2]
            metrics.update(torch.tensor([r["latitude"] for r in results], dtype=torch.float64),
                           torch.tensor([r["longitude"] for r in results], dtype=torch.float64),
                           coords[:, 0], coords[:, 1])
        if progress is not None:
            progress(i + 1, total)
    if kind == "classification":
        return summarize_metrics(metrics.compute(), predictor.meta["class_names"])
    if kind == "geolocalization":
        return {k: float(v) for k, v in metrics.compute().items()}
    if kind == "segmentation":
        return summarize_confusion(metrics.compute(), predictor.meta["class_names"])
    return metrics.compute()


def latency_ms(model, runs: int = 30, warmup: int = 5) -> tuple[float, float]:
    """Median and p90 milliseconds of an exported model (:func:`~mobilevision.deploy.formats.load_exported`: ONNX
    Runtime or ExecuTorch) on a random batch of its fixed batch size (1 for a dynamic-batch file), timed and
    summarized as every latency of the project is (:func:`~mobilevision.evaluation.time_interleaved`)."""
    from ..evaluation.complexity import time_interleaved

    h, w = model.meta["image_size"]
    x = np.random.default_rng(0).random((model.batch or 1, 3, h, w), dtype=np.float32)
    stats = time_interleaved({"model": lambda: model(x)}, warmup=warmup, repeats=runs)["model"]
    return stats["median_ms"], stats["p90_ms"]
