"""Semantic segmentation metrics (PASCAL VOC protocol): a confusion matrix accumulated over every labelled pixel
(``ignore_index``, 255 by default, left out), then per-class IoU ``TP / (TP + FP + FN)``, mean IoU over the classes
present (in the ground truth or the predictions), pixel accuracy and mean class accuracy (over the classes present in
the ground truth).

The accumulation is torchmetrics' ``MulticlassConfusionMatrix`` (summed across processes under DDP); the masks of a
model-free evaluation are index PNGs (palette PNGs read as their indices, as VOC ships them) matched by file stem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from ..errors import UserError, first_few
from ..files import walk_files
from ..masks import IGNORE_INDEX, MASK_EXTENSIONS, read_index_mask

__all__ = ["SEGMENTATION_KEYS", "evaluate_mask_folders", "save_segmentation_json", "segmentation_metrics",
           "summarize_confusion"]

SEGMENTATION_KEYS = ("miou", "pixel_acc", "mean_acc", "per_class_iou")


def segmentation_metrics(num_classes: int, ignore_index: int = IGNORE_INDEX) -> MulticlassConfusionMatrix:
    """The accumulator: update with ``(preds, target)``, ``preds`` labels [B, H, W] or logits [B, C, H, W],
    ``target`` [B, H, W]; :func:`summarize_confusion` of its ``compute()`` gives the numbers."""
    if num_classes < 2:
        raise UserError(f"segmentation needs at least 2 classes, got num_classes={num_classes}")
    return MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)


def summarize_confusion(confmat: torch.Tensor | np.ndarray,
                        class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``miou``, ``pixel_acc``, ``mean_acc``, ``per_class_iou`` (name -> IoU, ``None`` for a class absent from both
    ground truth and predictions), ``per_class_acc``, ``num_pixels`` and ``num_classes`` from a confusion matrix
    (rows: ground truth, columns: prediction)."""
    cm = torch.as_tensor(confmat).double()
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise UserError(f"{len(names)} class names for {n} classes")
    tp = cm.diag()
    gt, pred = cm.sum(1), cm.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
    total = float(cm.sum())

    def mean(x: torch.Tensor) -> float:
        x = x[~x.isnan()]
        return float(x.mean()) if len(x) else float("nan")

    def plain(x: torch.Tensor) -> dict[str, float | None]:
        return {name: (None if v != v else float(v)) for name, v in zip(names, x.tolist())}

    return {"miou": mean(iou), "pixel_acc": float(tp.sum()) / total if total else float("nan"),
            "mean_acc": mean(acc), "per_class_iou": plain(iou), "per_class_acc": plain(acc),
            "num_pixels": int(total), "num_classes": n}


def _masks(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    found: dict[str, Path] = {}
    for path in map(Path, walk_files(folder, lambda name: name.lower().endswith(MASK_EXTENSIONS))):
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise UserError(f"{what}: two masks named {stem!r} in {folder} ({found[stem].name}, {path.name})")
        found[stem] = path
    if not found:
        raise UserError(f"no mask ({', '.join(MASK_EXTENSIONS)}) in {what} folder {folder}")
    return found


def evaluate_mask_folders(predictions: str | os.PathLike, ground_truth: str | os.PathLike, num_classes: int,
                          ignore_index: int = IGNORE_INDEX,
                          class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Score a folder of predicted index masks against a folder of ground-truth ones, matched by file stem (relative
    path without extension). Every ground-truth mask needs a prediction of its size; labels must be below
    ``num_classes`` (ground truth may also hold ``ignore_index``). Checked for every file before scoring; errors
    name the files."""
    pred_files = _masks(Path(predictions), "predictions")
    gt_files = _masks(Path(ground_truth), "ground truth")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise UserError(f"{len(missing)} ground-truth mask(s) have no prediction in {predictions}: "
                        f"{first_few(missing)}")
    metrics = segmentation_metrics(num_classes, ignore_index)
    for stem, gt_path in gt_files.items():
        gt, pred = read_index_mask(gt_path), read_index_mask(pred_files[stem])
        if gt.shape != pred.shape:
            raise UserError(f"{pred_files[stem]} is {pred.shape[1]}x{pred.shape[0]} but its ground truth {gt_path} "
                             f"is {gt.shape[1]}x{gt.shape[0]} (width x height)")
        bad = np.unique(gt[(gt >= num_classes) & (gt != ignore_index) | (gt < 0)])
        if len(bad):
            raise UserError(f"{gt_path} holds label(s) {bad.tolist()[:8]}: not classes 0..{num_classes - 1} "
                             f"nor the ignore index {ignore_index}")
        bad = np.unique(pred[(pred >= num_classes) | (pred < 0)])
        if len(bad):
            raise UserError(f"{pred_files[stem]} holds label(s) {bad.tolist()[:8]}: not classes 0..{num_classes - 1}")
        metrics.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    stats = summarize_confusion(metrics.compute(), class_names)
    stats.update(num_images=len(gt_files), extra_predictions=len(set(pred_files) - set(gt_files)))
    return stats


def save_segmentation_json(stats: dict[str, Any], path: str | os.PathLike) -> Path:
    """``stats`` as JSON (NaN written as ``null``)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(stats), indent=2))
    return path
