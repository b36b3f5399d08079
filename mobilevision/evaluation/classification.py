"""Classification metrics (torchmetrics): top-1, top-5, per-class accuracy, confusion matrix.

:func:`classification_metrics` builds the torchmetrics collection a task updates batch by batch (it
syncs across processes under DDP); :func:`summarize_metrics` turns its ``compute()`` into plain,
JSON-serializable numbers; :func:`compute_classification_metrics` does both for logits and labels in
hand; :func:`save_confusion_matrix_png` draws the matrix.

Definitions:

* ``acc1`` / ``acc5``: fraction of samples whose label is the top-1 / among the top-5 scores
  (micro average, the ImageNet convention). With fewer than 5 classes ``acc5`` is top-``num_classes``
  accuracy, i.e. 1.0; ``top_k`` in the summary says which k was used.
* ``per_class``: accuracy (recall) of each class, ``None`` for a class without samples.
* ``acc_mean_class``: mean of ``per_class`` over the classes that have samples (the "mean per-class
  accuracy" reported for FGVC-Aircraft, Oxford-IIIT Pets, Oxford Flowers-102).
* ``confusion_matrix[i][j]``: number of samples of true class ``i`` predicted as class ``j``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from ..errors import UserError

__all__ = ["classification_metrics", "compute_classification_metrics", "save_confusion_matrix_png",
           "save_metrics_json", "summarize_metrics"]


def classification_metrics(num_classes: int, top_k: int = 5) -> MetricCollection:
    """torchmetrics collection: ``acc1``, ``acc5`` (top-``min(top_k, num_classes)``), ``per_class``
    (accuracy of each class, ``average=None``) and ``confusion_matrix``; update with (logits, labels)."""
    if num_classes < 2:
        raise UserError(f"classification needs at least 2 classes, got num_classes={num_classes}")
    k = min(top_k, num_classes)
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=k, average="micro"),
            "per_class": MulticlassAccuracy(num_classes, top_k=1, average=None),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes),
        },
        # acc1 and acc5 have the same state shapes: automatic compute groups could merge them after a first
        # batch where they agree, so every metric keeps its own state.
        compute_groups=False,
    )


def summarize_metrics(computed: dict[str, torch.Tensor], class_names: Sequence[str] | None = None,
                      top_k: int = 5) -> dict[str, Any]:
    """Plain numbers from ``classification_metrics(...).compute()`` (keys may carry a prefix such as
    ``val/``): ``acc1``, ``acc5``, ``top_k``, ``acc_mean_class``, ``num_samples``, ``num_classes``,
    ``class_names``, ``per_class`` and ``support`` (name -> value), ``confusion_matrix`` (list of rows)."""
    def get(name: str) -> torch.Tensor:
        for key, value in computed.items():
            if key == name or key.endswith("/" + name) or key.endswith("_" + name):
                return value
        raise KeyError(f"no {name!r} in the computed metrics {sorted(computed)}")

    matrix = get("confusion_matrix").detach().cpu().long()
    num_classes = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UserError(f"{len(names)} class names for {num_classes} classes")
    support = matrix.sum(dim=1)
    per_class_t = get("per_class").detach().cpu().double()
    per_class = [float(a) if int(n) > 0 else None for a, n in zip(per_class_t, support)]
    present = [a for a in per_class if a is not None]
    return {
        "acc1": float(get("acc1")),
        "acc5": float(get("acc5")),
        "top_k": min(top_k, num_classes),
        "acc_mean_class": sum(present) / len(present) if present else math.nan,
        "num_samples": int(support.sum()),
        "num_classes": num_classes,
        "class_names": names,
        "per_class": dict(zip(names, per_class)),
        "support": dict(zip(names, (int(n) for n in support))),
        "confusion_matrix": matrix.tolist(),
    }


@torch.no_grad()
def compute_classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                                   class_names: Sequence[str] | None = None, top_k: int = 5) -> dict[str, Any]:
    """Metrics of ``logits`` [N, C] (scores or probabilities) against integer ``labels`` [N], summarized
    as :func:`summarize_metrics` does."""
    logits, labels = torch.as_tensor(logits).float(), torch.as_tensor(labels).long()
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise UserError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    num_classes = num_classes or logits.shape[1]
    if logits.shape[1] != num_classes:
        raise UserError(f"logits have {logits.shape[1]} columns for {num_classes} classes")
    metrics = classification_metrics(num_classes, top_k)
    metrics.update(logits, labels)
    return summarize_metrics(metrics.compute(), class_names, top_k)


def save_metrics_json(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a :func:`summarize_metrics` dict as JSON (NaN becomes ``null``)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(metrics), indent=2))
    return path


def save_confusion_matrix_png(matrix: torch.Tensor | Sequence[Sequence[int]], class_names: Sequence[str] | None,
                              path: str | os.PathLike, normalize: bool = True, title: str | None = None) -> Path:
    """Save the confusion matrix (rows: true class, columns: predicted class) as a PNG.

    Colours are row-normalized (each row shows where a class's samples went) unless ``normalize`` is
    false; counts are written in the cells and class names on the axes when there are few enough
    classes to read them (<= 30 names, <= 20 cell counts). Uses matplotlib's Agg canvas directly, so it
    never touches the global backend or needs a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = torch.as_tensor(matrix).detach().cpu().double()
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise UserError(f"a confusion matrix is square, got shape {tuple(counts.shape)}")
    n = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise UserError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    shown = counts / counts.sum(dim=1, keepdim=True).clamp(min=1) if normalize else counts

    side = min(max(4.0, 0.35 * n + 2.5), 24.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1.0 if normalize else None, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "count")
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    if n <= 20:
        top = float(shown.max()) if n else 0.0
        for i in range(n):
            for j in range(n):
                if counts[i, j] > 0:
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.6 * top else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = counts.sum()
    acc = float(counts.diagonal().sum() / total) if total > 0 else math.nan
    ax.set_title(title or f"confusion matrix ({int(total)} samples, top-1 accuracy {acc:.3f})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
