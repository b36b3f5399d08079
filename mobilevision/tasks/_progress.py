"""The CLI's progress bar: Lightning's rich bar plus the whole run's optimizer steps and remaining time."""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingProgressBar(RichProgressBar):
    """Rich progress bar whose metrics also show ``step`` (done / total optimizer steps) and ``eta`` (time left for
    the whole fit, from the mean time per step since the first steps; validation runs are included in it)."""

    warmup_steps = 3  # the first steps (data caching, allocator warm-up) say little about the rest

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._start: tuple[float, int] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if not trainer.training:
            return metrics
        total, step = trainer.estimated_stepping_batches, trainer.global_step
        if not total or not math.isfinite(total):
            return metrics
        metrics["step"] = f"{step}/{int(total)}"
        if self._start is None or step < self._start[1]:
            if step >= self.warmup_steps:
                self._start = (time.monotonic(), step)
            return metrics
        t0, s0 = self._start
        if step > s0:
            per_step = (time.monotonic() - t0) / (step - s0)
            metrics["eta"] = _clock(per_step * max(0, int(total) - step))
        return metrics
