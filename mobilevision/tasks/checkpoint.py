"""Checkpoints of the tasks: safe loading (``weights_only=True``) with clear errors, and the guards that keep bad
states out of them: training stops at a non-finite loss, weights that are not finite are never written, files are
replaced atomically, ``last.ckpt`` is kept current, and resuming on data with other labels is refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from weakref import proxy

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import ModelCheckpoint

from ..errors import UserError


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or objects that weights_only refuses to unpickle
        raise UserError(f"cannot load checkpoint {path} with weights_only=True: {e}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"{path} is not a mobilevision training checkpoint (expected 'state_dict' and "
                         f"'hyper_parameters', found {keys})")
    return ckpt


def load_task(path: str | os.PathLike, task_cls: type[pl.LightningModule]) -> tuple[pl.LightningModule, dict]:
    """Rebuild ``task_cls`` from a checkpoint's hyper-parameters and load its weights (eval mode).

    Returns the task and the checkpoint dict (its ``datamodule_hyper_parameters`` say what data it
    was trained on). Backbone ImageNet weights are not reloaded: the checkpoint holds every weight.
    """
    ckpt = load_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    if class_path and class_path.rsplit(".", 1)[-1] != task_cls.__name__:
        raise UserError(f"{path} is a checkpoint of {class_path}, not of {task_cls.__name__}")
    if "backbone_weights" in hparams:
        hparams["backbone_weights"] = None
    try:
        task = task_cls(**hparams)
    except TypeError as e:
        raise UserError(f"{path} does not hold {task_cls.__name__} hyper-parameters: {e}") from e
    task.on_load_checkpoint(ckpt)  # as Lightning's load_from_checkpoint does, before the weights
    try:
        result = task.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        raise UserError(f"{path} does not match {task_cls.__name__}({hparams.get('backbone', '')}): {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{path} does not match {task_cls.__name__}({hparams.get('backbone', '')}): "
                         f"missing keys {result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}")
    return task.eval(), ckpt


# -- guards -------------------------------------------------------------------------------------------------
def check_finite_loss(task: pl.LightningModule, losses: Mapping[str, torch.Tensor]) -> None:
    """Stop training with an error naming the step and the loss terms when any term is NaN or infinite.

    Called in ``training_step`` before the backward pass, so the weights never see the bad step and no checkpoint
    is written after it. Under DDP the decision is shared, so every process stops at the same step.
    """
    finite = torch.stack([v.detach().float().isfinite().all() for v in losses.values()]).tolist()
    bad = [name for name, ok in zip(losses, finite) if not ok]
    trainer = task._trainer
    if trainer is None or not trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
        return
    terms = ", ".join(f"{name}={float(losses[name].detach()):g}" for name in bad) or "finite here, not elsewhere"
    raise FloatingPointError(
        f"non-finite loss at global step {trainer.global_step} (epoch {trainer.current_epoch}): {terms}; "
        "training stopped before updating the weights (checkpoints hold the last finite weights)")


def check_finite_weights(checkpoint: Mapping[str, Any]) -> None:
    """Refuse to save a checkpoint whose weights (or, with EMA, raw training weights) hold NaN or inf."""
    for key in ("state_dict", "current_model_state"):
        state = checkpoint.get(key) or {}
        bad = [name for name, t in state.items()
               if torch.is_tensor(t) and t.is_floating_point() and not bool(t.isfinite().all())]
        if bad:
            raise FloatingPointError(f"not saving the checkpoint of global step {checkpoint.get('global_step')}: "
                                     f"non-finite weights in {len(bad)} tensor(s) of {key!r}, e.g. {bad[:3]}")


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_same_labels(task: pl.LightningModule, checkpoint: Mapping[str, Any], names: Sequence[str]) -> None:
    """Refuse to restore ``checkpoint`` when its label set (hyper-parameters ``names``, e.g. ``class_names``)
    differs from the attached data module's or from the task's own: the network's outputs would be read as
    other classes. Values missing on either side are not compared."""
    saved = checkpoint.get("hyper_parameters") or {}
    trainer = task._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    for name in names:
        old = _plain(saved.get(name))
        for where, new in (("the data module", getattr(datamodule, name, None)), ("the model", task.hparams.get(name))):
            new = _plain(new)
            if old is not None and new is not None and old != new:
                raise UserError(f"the checkpoint was trained with {name}={_short(old)} but {where} has "
                                 f"{name}={_short(new)}: refusing to restore it on data with other labels")


def _short(value: Any, n: int = 8) -> str:
    if isinstance(value, list) and len(value) > n:
        return f"[{', '.join(map(repr, value[:n]))}, ... ({len(value)} in all)]"
    return repr(value)


class TrainingCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (best-k by the monitored metric, ``last.ckpt``) with four changes:

    * every file is written under a temporary name in its directory and renamed into place (``os.replace``), so a
      process killed during a save leaves the previous file whole;
    * ``last.ckpt`` is rewritten at every epoch end (``save_on_train_epoch_end``) or validation end, also when the
      monitored metric did not improve (Lightning then leaves it at the last improvement);
    * ``save_last_every_n_steps``: also refresh ``last.ckpt`` every that many optimizer steps, so a killed run
      resumes (``--ckpt_path last.ckpt``) at most that many steps back. Best-k files still follow the metric;
    * epochs that end before the first validation (``check_val_every_n_epoch`` > 1) rank nothing, silently:
      Lightning would save nothing either, but warn that the metric was never logged.
    """

    def __init__(self, *args: Any, save_last_every_n_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if save_last_every_n_steps < 0:
            raise UserError(f"save_last_every_n_steps must be >= 0, got {save_last_every_n_steps}")
        self.save_last_every_n_steps = save_last_every_n_steps
        self._periodic_step = -1

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        atomic = _is_local_file_protocol(filepath)
        target = f"{filepath}.tmp" if atomic else filepath
        trainer.save_checkpoint(target, self.save_weights_only)  # every process dumps; rank 0 writes
        if atomic and trainer.is_global_zero:
            os.replace(target, filepath)
        trainer.strategy.barrier("TrainingCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if (self.monitor is not None and self.monitor not in monitor_candidates
                and not trainer.fit_loop.epoch_loop.val_loop._has_run):
            return  # no validation yet: nothing to rank by (Lightning raises once one has run without the metric)
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _write_last(self, trainer: pl.Trainer) -> None:
        if (self.save_last is True and trainer.state.fn == "fit" and not trainer.sanity_checking
                and not trainer.fast_dev_run):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        n, step = self.save_last_every_n_steps, trainer.global_step
        if n and step > 0 and step % n == 0 and step != self._periodic_step:
            self._periodic_step = step
            saved = self._last_global_step_saved
            self._write_last(trainer)
            self._last_global_step_saved = saved  # the epoch-end save (best-k and last) still happens at this step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and self._last_global_step_saved != trainer.global_step:
            self._write_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and self._last_global_step_saved != trainer.global_step:
            self._write_last(trainer)
