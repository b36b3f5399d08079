"""Multi-label attribute metrics: average precision per attribute and its mean (the MobileNet paper's Table 12
measure), accuracy at 0.5 and at thresholds chosen on validation.

Labels are 1, 0 or -1 (unknown: left out of every number of its attribute). Definitions, per attribute over its
known labels:

* ``ap``: average precision (torchmetrics' ``binary_average_precision``, the area under the precision-recall
  step curve, equal to scikit-learn's ``average_precision_score``); None for an attribute without a positive.
* ``mean_ap``: the mean of the defined ``ap`` values.
* ``acc_at_0.5``: accuracy of ``score >= 0.5``; ``threshold`` / ``acc_at_threshold``: the threshold that
  maximizes accuracy on these data (midway between two neighbouring scores) and the accuracy it gives, or with
  ``thresholds`` given (chosen on validation) the accuracy at those.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_average_precision

from ..errors import UserError, first_few
from ..files import csv_rows

__all__ = ["AttributeMetrics", "attribute_stats", "read_attribute_scores", "save_attribute_ap_png",
           "save_stats_json"]


class AttributeMetrics(Metric):
    """Accumulates ``(scores [B, A] in [0, 1], labels [B, A] with -1 unknown)``; ``compute()`` gives
    :func:`attribute_stats` over everything seen (gathered across processes under DDP)."""

    full_state_update = False

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        if scores.shape != labels.shape or scores.shape[-1] != len(self.names):
            raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must both be "
                             f"[B, {len(self.names)}]")
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach().float())

    def compute(self) -> dict[str, Any]:
        scores = _cat(self.scores).reshape(-1, len(self.names))
        labels = _cat(self.labels).reshape(-1, len(self.names))
        return attribute_stats(scores, labels, self.names)


def _cat(state) -> torch.Tensor:
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0)


def _best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The threshold maximizing the accuracy of ``scores >= t`` and that accuracy (ties: the lowest t)."""
    order = torch.argsort(scores, descending=True)
    s, y = scores[order].double(), labels[order].double()
    n, pos = len(y), float(y.sum())
    # predicting the first k as positive: correct = tp(k) + (negatives - fp(k))
    tp = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(y, 0)])
    fp = torch.arange(n + 1, dtype=torch.float64) - tp
    correct = tp + (n - pos) - fp
    # only cut between different scores
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[:-1] != s[1:]
    correct[~valid] = -1
    k = int(torch.argmax(correct))
    if k == 0:
        t = float(s[0]) + 1e-6 if n else 0.5
    elif k == n:
        t = float(s[-1])
    else:
        t = float((s[k - 1] + s[k]) / 2)
    return t, float(correct[k]) / n


def attribute_stats(scores: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                    thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    """Plain numbers (see the module docstring): ``mean_ap``, ``mean_acc_at_0.5``, ``mean_acc_at_threshold``,
    ``num_samples``, ``attribute_names`` and ``per_attribute`` (name -> ``ap``, ``acc_at_0.5``, ``threshold``,
    ``acc_at_threshold``, ``positives``, ``negatives``, ``unknown``)."""
    scores, labels = torch.as_tensor(scores).float(), torch.as_tensor(labels).float()
    per: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        known = labels[:, j] >= 0
        s, y = scores[known, j], labels[known, j]
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        entry: dict[str, Any] = {"positives": positives, "negatives": negatives,
                                 "unknown": int((~known).sum())}
        if len(y) == 0:
            entry.update({"ap": None, "acc_at_0.5": None, "threshold": None, "acc_at_threshold": None})
        else:
            entry["ap"] = float(binary_average_precision(s, y.long())) if positives else None
            entry["acc_at_0.5"] = float(((s >= 0.5).float() == y).float().mean())
            if thresholds is None:
                entry["threshold"], entry["acc_at_threshold"] = _best_threshold(s, y)
            else:
                entry["threshold"] = float(thresholds[j])
                entry["acc_at_threshold"] = float(((s >= thresholds[j]).float() == y).float().mean())
        per[name] = entry

    def mean(key: str) -> float:
        values = [e[key] for e in per.values() if e[key] is not None]
        return float(sum(values) / len(values)) if values else math.nan

    return {"mean_ap": mean("ap"), "mean_acc_at_0.5": mean("acc_at_0.5"),
            "mean_acc_at_threshold": mean("acc_at_threshold"), "num_samples": int(scores.shape[0]),
            "attribute_names": list(names), "per_attribute": per}


def save_stats_json(stats: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, allow_nan=True))
    return path


def save_attribute_ap_png(stats: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """A horizontal bar per attribute (its AP, the value written at the bar's end), sorted, the mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = stats["per_attribute"]
    items = sorted(((n, e["ap"]) for n, e in per.items() if e["ap"] is not None), key=lambda kv: kv[1])
    if not items:
        raise UserError("no attribute has a positive label: no AP to draw")
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(items)), dpi=130)
    ax.barh([n for n, _ in items], [v for _, v in items], color="#4477aa")
    for i, (_, v) in enumerate(items):
        inside = v > 0.85
        ax.text(v - 0.01 if inside else v + 0.01, i, f"{v:.3f}", va="center", ha="right" if inside else "left",
                fontsize=9, color="white" if inside else "black")
    # a random score's AP is the share of positives: the chance level of each attribute
    chance = [per[n]["positives"] / max(1, per[n]["positives"] + per[n]["negatives"]) for n, _ in items]
    ax.scatter(chance, range(len(items)), marker="|", s=180, color="black", zorder=3,
               label="chance (share of positives)")
    ax.axvline(stats["mean_ap"], color="#cc3311", lw=1.5, label=f"mean AP {stats['mean_ap']:.3f}")
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("average precision")
    ax.set_title(title or "average precision per attribute")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def read_attribute_scores(path: str | os.PathLike) -> tuple[list[str], list[str], torch.Tensor]:
    """A predictions CSV (``file`` + one probability in [0, 1] per attribute column; a ``frame`` column, if any,
    is left out) -> ``(files, names, scores [N, A])``; bad rows are errors naming the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    header, rows, bad = csv_rows(path)
    if "file" not in header:
        raise UserError(f"{path}: the header must have a 'file' column and one column per attribute")
    cols = [i for i, h in enumerate(header) if h not in ("file", "frame")]
    files, scores = [], []
    for line, row in rows:
        try:
            values = [float(row[i]) for i in cols]
        except ValueError:
            bad.append(f"line {line}: a score that is not a number")
            continue
        if not all(0.0 <= v <= 1.0 for v in values):
            bad.append(f"line {line}: a score outside [0, 1]")
            continue
        files.append(row[header.index("file")].strip())
        scores.append(values)
    if bad:
        raise UserError(f"{path}: {len(bad)} bad row(s): {first_few(bad, 5, sep='; ')}")
    return files, [header[i] for i in cols], torch.tensor(scores, dtype=torch.float32).reshape(len(files), len(cols))
