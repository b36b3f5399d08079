"""Optimizers and the warm-up + cosine schedule shared by every task.

The schedule's progress is optimizer steps over the Trainer's total (``max_steps``, or ``max_epochs`` times
the batches of an epoch), never the wall clock: the same seeded recipe trains the same steps, and gives the
same result, on a fast and on a slow machine, and every DDP rank computes the same factor.
``Trainer(max_time=...)`` is only a safety stop.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

import pytorch_lightning as pl
import torch
from torch import nn

OptimizerName = Literal["sgd", "rmsprop", "adamw"]


def param_groups(modules: Iterable[tuple[nn.Module, float]], weight_decay: float) -> list[dict]:
    """Parameter groups with ``lr_scale`` per module; no weight decay on norms and biases."""
    groups = []
    for module, lr_scale in modules:
        decay, no_decay = [], []
        for p in module.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups += [{"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale},
                   {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict], name: OptimizerName, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    for g in groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "rmsprop":  # TF-style RMSProp of the MobileNet papers
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, rmsprop or adamw")


def training_progress(trainer: pl.Trainer | None, step: int) -> float:
    """Fraction of training done, in [0, 1]: optimizer steps over the Trainer's total."""
    if trainer is None:
        return 0.0
    total = trainer.estimated_stepping_batches
    if not total or not math.isfinite(total):
        raise ValueError("the learning-rate schedule follows optimizer steps: set trainer.max_steps or "
                         "trainer.max_epochs (trainer.max_time is only a safety stop)")
    return min(1.0, step / total)


def warmup_cosine(progress: float, warmup: float = 0.02, min_lr_ratio: float = 0.0) -> float:
    """LR factor at ``progress`` in [0, 1]: linear warm-up over ``warmup``, then cosine to ``min_lr_ratio``."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    p = (progress - warmup) / max(1e-8, 1.0 - warmup)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def schedule(optimizer: torch.optim.Optimizer, module: pl.LightningModule, warmup: float, min_lr_ratio: float) -> dict:
    """Lightning ``configure_optimizers`` return value with a per-step warm-up + cosine schedule."""

    def factor(step: int) -> float:  # a plain function: LambdaLR checkpoints no state for it
        return warmup_cosine(training_progress(module._trainer, step), warmup, min_lr_ratio)

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
