"""Dataloader plumbing shared by the data modules."""

from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler


class TrainValDataModule(pl.LightningDataModule):
    """Train / val / test (= val) / predict loaders over ``self.{train,val,predict}_dataset``, which
    subclasses build in ``setup``; subclasses set ``batch_size``, ``num_workers``, ``pin_memory`` and may
    set ``collate_fn`` and ``eval_batch_size`` (every loader but the training one; default ``batch_size``)."""

    collate_fn: Callable[[list], Any] | None = None
    eval_batch_size: int | None = None
    train_dataset: Dataset | None = None
    val_dataset: Dataset | None = None
    predict_dataset: Dataset | None = None

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False,
                sampler: Sampler | None = None) -> DataLoader:
        batch_size = self.batch_size if dataset is self.train_dataset else self.eval_batch_size or self.batch_size
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def _eval_sampler(self, dataset: Dataset) -> Sampler | None:
        """Under DDP, a sampler giving each process every ``world_size``-th sample: each sample is evaluated exactly
        once. (Lightning keeps a DistributedSampler it is given; the one it would add pads the last round with
        repeated samples, which the metrics would count twice.) Processes may then run one batch more than
        others, so the tasks' evaluation steps sync nothing per batch: metrics and loss sync at epoch end."""
        trainer = self.trainer
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        if not kwargs or kwargs.get("num_replicas", 1) <= 1:
            return None  # one process
        return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        # drop_last: a trailing batch of 1-2 images gives noisy BatchNorm statistics.
        drop_last = len(self.train_dataset) > self.batch_size
        return self._loader(self.train_dataset, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        return self._loader(self.val_dataset, shuffle=False, sampler=self._eval_sampler(self.val_dataset))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dataset is None:
            self.setup("predict")
        return self._loader(self.predict_dataset, shuffle=False)
