"""Exponential moving average of the weights, through Lightning's ``WeightAveraging`` callback.

``WeightAveraging`` keeps a ``torch.optim.swa_utils.AveragedModel`` of the LightningModule, updates it
after every optimizer step, swaps the averaged weights in for validation, saves them as the
checkpoint's ``state_dict`` (the raw weights go to ``current_model_state``, so resuming restores both)
and copies them into the module when training ends. :class:`EMA` only supplies the update rule.
"""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["EMA", "EMAUpdate"]


class EMAUpdate:
    """``multi_avg_fn`` for ``AveragedModel``: ``ema = d * ema + (1 - d) * weights``.

    With ``warmup`` the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``, the
    ``num_updates`` rule of TensorFlow's ``ExponentialMovingAverage`` that the EfficientNet / MobileNet
    reference training uses: early on the average follows the fast-changing weights instead of
    remembering the random initialization for ~1 / (1 - decay) steps. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied. A class rather than a closure, so it pickles (``ddp_spawn``).
    """

    def __init__(self, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay, self.warmup = decay, warmup

    def decay_at(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            get_ema_multi_avg_fn(self.decay_at(int(num_averaged)))(averaged, current, num_averaged)
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)


class EMA(WeightAveraging):
    """EMA of every parameter and buffer (BatchNorm statistics included), updated after each optimizer step."""

    def __init__(self, decay: float, warmup: bool = True) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=EMAUpdate(decay, warmup))
        self.decay = decay

    def setup(self, trainer, pl_module, stage: str) -> None:
        # WeightAveraging builds the average on pl_module.device, but setup() runs before the strategy moves
        # the module to its device (the average would stay on the CPU and every update would copy the weights
        # there); the strategy's root device is where the module is going.
        if stage == "fit" and self._device is None:
            self._device = trainer.strategy.root_device
            try:
                super().setup(trainer, pl_module, stage)
            finally:
                self._device = None
        else:
            super().setup(trainer, pl_module, stage)
