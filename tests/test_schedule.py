"""The learning-rate schedule follows optimizer steps only (never the clock), and the CLI's progress bar shows
the steps and the time left."""

import math
import time

import pytorch_lightning as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mobilevision.tasks._optim import schedule
from mobilevision.tasks._progress import TrainingProgressBar


class _Tiny(pl.LightningModule):
    def __init__(self, sleep: float = 0.0):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.sleep = sleep
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        time.sleep(self.sleep)
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return schedule(torch.optim.SGD(self.parameters(), lr=1.0), self, warmup=0.25, min_lr_ratio=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)  # 4 steps per epoch


def _fit(module: pl.LightningModule, **trainer_kwargs) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
                         **trainer_kwargs)
    trainer.fit(module)
    return trainer


def _hand_cosine(step: int, total: int) -> float:
    """Warm-up over the first quarter, then half a cosine to 0 (written out independently of _optim)."""
    p = step / total
    if p < 0.25:
        return max(p / 0.25, 1e-3)
    return 0.5 * (1 + math.cos(math.pi * (p - 0.25) / 0.75))


@pytest.mark.parametrize("limits", [{"max_steps": 8}, {"max_epochs": 2}])
def test_lr_follows_steps_whatever_the_clock(limits):
    fast = _Tiny()
    _fit(fast, enable_progress_bar=False, **limits)
    # A slow machine whose wall-clock limit stops it half-way: with a clock-driven schedule its cosine would run
    # ahead of the steps; here the factors are the same step by step, and max_time only stops the run.
    slow = _Tiny(sleep=0.25)
    _fit(slow, enable_progress_bar=False, max_time={"seconds": 1}, **limits)
    expected = [_hand_cosine(s, 8) for s in range(8)]
    assert fast.lrs == pytest.approx(expected, abs=1e-9)
    assert 2 <= len(slow.lrs) < 8
    assert slow.lrs == pytest.approx(expected[: len(slow.lrs)], abs=1e-9)


def test_schedule_needs_a_step_limit():
    with pytest.raises(ValueError, match="max_steps or trainer.max_epochs"):
        _fit(_Tiny(), enable_progress_bar=False, max_epochs=-1, max_time={"seconds": 5})


def test_progress_bar_shows_steps_and_time_left():
    seen: list[dict] = []

    class Spy(TrainingProgressBar):
        def get_metrics(self, trainer, pl_module):
            metrics = super().get_metrics(trainer, pl_module)
            seen.append(dict(metrics))
            return metrics

    _fit(_Tiny(sleep=0.02), max_steps=10, callbacks=[Spy()])
    assert any(m.get("step") == "9/10" for m in seen)
    etas = [m["eta"] for m in seen if "eta" in m]
    assert etas, "no time-left estimate shown"
    h, mnt, s = (int(v) for v in etas[-1].split(":"))
    assert h == 0 and mnt == 0 and s <= 2  # one step of ~0.02 s left
