"""What the tasks built on one backbone share (classification, geolocalization, detection): frozen backbones,
ImageNet backbone weights, MobileOne folding for evaluation, EMA, channels-last and the optimizer set-up."""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MeanMetric

from ..layers.mobileone import reparameterize_model
from ..models import ImageClassifier, create_classifier, load_pretrained
from ._ema import EMA
from ._optim import build_optimizer, param_groups, schedule
from .checkpoint import check_finite_weights


# The evaluation metrics are logged already synced over the processes (torchmetrics' compute()); Lightning would
# still advise sync_dist=True for each of them under DDP, once per metric, in every run.
warnings.filterwarnings("ignore", r"It is recommended to use `self\.log\('(val|test)/", PossibleUserWarning)


def eval_losses() -> nn.ModuleDict:
    """Sample-weighted mean loss per evaluation stage. (Lightning's ``self.log(..., sync_dist=True)`` averages the
    per-process sample counts as integers, which is wrong when processes evaluate different numbers of samples.)"""
    return nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})


def is_reparameterizable(model: nn.Module) -> bool:
    """Whether ``model`` holds train-time branches that :func:`reparameterize_model` folds (MobileOne)."""
    return any(m is not model and hasattr(m, "reparameterize") for m in model.modules())


class BackboneTask(pl.LightningModule):
    """Base of :class:`ClassificationTask`, :class:`GeolocalizationTask` and :class:`DetectionTask`: ``self.model``
    is a network with a ``.backbone`` (an :class:`~mobilevision.models.ImageClassifier` made by :meth:`build_model`,
    an :class:`~mobilevision.models.SSDLite`, ... installed by :meth:`attach_model`); subclasses call one of them
    after ``save_hyperparameters()``, whose hyper-parameters must include ``backbone``, ``width``,
    ``backbone_kwargs``, ``backbone_weights``, ``freeze_backbone``, ``channels_last``, ``eval_folded``,
    ``ema_decay``, ``backbone_lr_scale``, ``weight_decay``, ``optimizer``, ``lr``, ``momentum``, ``warmup`` and
    ``min_lr_ratio``.

    ``backbone_weights`` load when a fit starts from scratch (:meth:`on_fit_start`), not at construction: resuming
    (``ckpt_path``), ``load_from_checkpoint`` and evaluation restore every weight from the checkpoint and work
    without the weights file. :meth:`load_backbone_weights` loads them at once."""

    def build_model(self, num_outputs: int, dropout: float | None) -> None:
        """An :class:`~mobilevision.models.ImageClassifier` (``backbone`` + linear layer of ``num_outputs``)."""
        self.attach_model(create_classifier(self.hparams.backbone, num_outputs, dropout=dropout,
                                            **self.backbone_kwargs()))

    def backbone_kwargs(self) -> dict[str, Any]:
        """The backbone factory's keyword arguments: ``backbone_kwargs``, plus ``width`` when set."""
        kwargs = dict(self.hparams.backbone_kwargs or {})
        if self.hparams.width is not None:
            kwargs["width"] = self.hparams.width
        return kwargs

    def attach_model(self, model: nn.Module) -> None:
        """Install ``model`` (with a ``.backbone``) as ``self.model``: frozen backbone, memory format, eval state.
        Checks the hyper-parameters every task shares (``ema_decay``; ``class_names`` against ``num_classes``)."""
        hp = self.hparams
        if hp.ema_decay is not None and not 0.0 < hp.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {hp.ema_decay}")
        if hp.get("class_names") is not None and len(hp.class_names) != hp.num_classes:
            raise ValueError(f"{len(hp.class_names)} class names for num_classes={hp.num_classes}")
        self.model = model
        self._weights_pending = bool(self.hparams.backbone_weights)  # loaded when a fit starts from scratch
        if self.hparams.freeze_backbone:  # no gradients, and BatchNorm statistics frozen too (see train())
            self.model.backbone.requires_grad_(False)
            self.model.backbone.eval()
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._folded: list[nn.Module] = []  # a plain list: the cached folded copy is no submodule
        self.eval_losses = eval_losses()

    def load_backbone_weights(self) -> None:
        """Load ``backbone_weights`` (ImageNet) into the network now: into a classifier with its final layer when the
        number of outputs fits (see :func:`~mobilevision.models.load_pretrained`); into the backbone of any other
        network (a detector, a segmenter), through an ImageNet classifier, for the blocks it has (a segmenter's
        backbone may end before the classifier's)."""
        hp = self.hparams
        if isinstance(self.model, ImageClassifier):
            load_pretrained(self.model, hp.backbone, hp.backbone_weights)
        else:
            theirs = create_classifier(hp.backbone, weights=hp.backbone_weights, **self.backbone_kwargs()).backbone
            state = theirs.state_dict()
            self.model.backbone.load_state_dict({k: state[k] for k in self.model.backbone.state_dict()})
        self._weights_pending = False

    def on_fit_start(self) -> None:
        if self._weights_pending:  # a fit from scratch: a resumed one went through on_load_checkpoint
            self.load_backbone_weights()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._weights_pending = False  # the checkpoint holds every weight

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_weights(checkpoint)

    # -- modes ------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> BackboneTask:
        super().train(mode)
        if self.hparams.freeze_backbone:  # a frozen backbone also keeps its BatchNorm statistics
            self.model.backbone.eval()
        return self

    def configure_callbacks(self):
        return [EMA(self.hparams.ema_decay)] if self.hparams.ema_decay else []

    def _folds(self) -> bool:
        return bool(self.hparams.eval_folded) and is_reparameterizable(self.model)

    def eval_model(self) -> nn.Module:
        """The network used for validation / test / predict: a folded copy when ``eval_folded`` and the
        backbone has branches (made once per evaluation epoch, after an EMA callback has swapped the
        averaged weights in; outside an evaluation loop, a fresh copy per call), else the training network."""
        if self._folded:
            return self._folded[0]
        return reparameterize_model(self.model) if self._folds() else self.model

    def _fold_for_eval(self) -> None:
        self._folded.clear()
        if self._folds():
            self._folded.append(reparameterize_model(self.model))

    def _drop_folded(self) -> None:
        self._folded.clear()

    def export_model(self) -> nn.Module:
        """A deployable copy of the network in eval mode, re-parameterized when it has branches."""
        return reparameterize_model(self.model).eval()

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else images

    def forward(self, images: torch.Tensor) -> Any:
        """Outputs of the training network (in its current mode): logits [B, C] of a classifier, SSDLite's dict."""
        return self.model(self._prepare(images))

    # -- evaluation loops ----------------------------------------------------------------------------------
    # Subclasses define ``_eval_step(batch, metrics, stage)`` (which runs ``eval_model()`` and adds the batch's
    # loss to ``eval_losses[stage]``), ``summarize(computed) -> dict`` and ``log_eval(stats, stage)``;
    # ``val_metrics`` / ``test_metrics`` have ``compute()`` and ``reset()`` (torchmetrics objects). Nothing is
    # synced per batch (under DDP ranks may run one batch more than others, see TrainValDataModule): the metrics
    # and the loss sync when computed at epoch end.
    def _start_eval(self) -> None:
        self._fold_for_eval()

    def reset_metrics(self, metrics) -> None:
        metrics.reset()

    def _end_eval(self, metrics, stage: str) -> None:
        self._drop_folded()
        stats = self.summarize(metrics.compute())  # synced across processes
        loss = self.eval_losses[stage].compute()
        # Fresh states as normal tensors: reset() inside validate()'s inference mode would make them inference
        # tensors, which the next validation inside fit() (run under no_grad) cannot update in place.
        with torch.inference_mode(False):
            self.reset_metrics(metrics)
            self.eval_losses[stage].reset()
        self.last_metrics = stats
        self.log(f"{stage}/loss", loss)  # every process holds the same synced values, so no sync_dist
        self.log_eval(stats, stage)

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval(self.val_metrics, "val")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval(self.test_metrics, "test")

    def on_predict_epoch_start(self) -> None:
        self._fold_for_eval()

    def on_predict_epoch_end(self) -> None:
        self._drop_folded()

    def on_train_epoch_start(self) -> None:
        self._drop_folded()
        if self.hparams.freeze_backbone:  # Lightning does not call train(); validation restores module modes
            self.model.backbone.eval()

    # -- optimization ---------------------------------------------------------------------------------
    def optimizer_modules(self) -> list[tuple[nn.Module, float]]:
        """(module, learning-rate scale): the backbone at ``backbone_lr_scale``, the network's other children at 1."""
        head = [(module, 1.0) for name, module in self.model.named_children() if name != "backbone"]
        return [(self.model.backbone, self.hparams.backbone_lr_scale), *head]

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.optimizer_modules(), hp.weight_decay)
        return schedule(build_optimizer(groups, hp.optimizer, hp.lr, hp.momentum), self, hp.warmup, hp.min_lr_ratio)
