"""Image classification as a LightningModule: cross-entropy training, top-1 / top-5 / per-class validation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..evaluation.classification import classification_metrics, summarize_metrics
from ._backbone import BackboneTask, is_reparameterizable
from .distill import DistillationMixin, soft_cross_entropy
from ._optim import OptimizerName
from .checkpoint import check_finite_loss, check_same_labels

__all__ = ["ClassificationTask", "is_reparameterizable"]


class ClassificationTask(DistillationMixin, BackboneTask):
    """Train and evaluate an :class:`~mobilevision.models.ImageClassifier` (backbone + pool + dropout + linear).

    Args:
        backbone, width, backbone_kwargs, dropout: the network (:func:`~mobilevision.models.create_classifier`;
            ``dropout`` defaults to the backbone's published rate). ``width`` is passed only when set
            (MobileNets, EfficientNet; MobileOne variants have fixed widths).
        num_classes, class_names, image_size: linked from the data module by the CLI and kept in the
            checkpoint, so evaluation and export need no dataset. The network itself accepts any input
            size (global pooling); ``image_size`` records the training resolution. EfficientNet-B1..B7
            are meant for their own resolution (240 .. 600): their configs set ``data.image_size``.
        backbone_weights: ImageNet weights file (a torchvision / timm state dict of the same architecture,
            or ``"imagenet"`` to download one); the final layer is re-initialised when its number of classes
            differs. Loaded when a fit starts from scratch, never when resuming (``ckpt_path``), in
            ``load_from_checkpoint`` or :func:`~mobilevision.tasks.load_task`: the checkpoint holds every weight,
            so those work without the file (:meth:`load_backbone_weights` loads them at once).
        freeze_backbone: train only the classifier head (linear probe); the backbone keeps its weights and
            its BatchNorm statistics (it stays in eval mode).
        backbone_lr_scale: the backbone's learning rate as a fraction of ``lr`` (fine-tuning: e.g. 0.1).
        label_smoothing: cross-entropy label smoothing (0.1 in the EfficientNet / MobileOne recipes).
        optimizer, lr, momentum, weight_decay: SGD (Nesterov) / RMSProp / AdamW; no decay on norms and biases.
        warmup, min_lr_ratio: linear warm-up (fraction of training), then cosine to ``lr * min_lr_ratio``,
            over the optimizer steps of the fit (``trainer.max_time`` is only a safety stop).
        ema_decay: keep an exponential moving average of the weights (parameters and BatchNorm statistics)
            with this decay, e.g. 0.9998; validation, checkpoints and the weights left after ``fit`` are the
            average. Implemented with Lightning's ``WeightAveraging`` callback (returned by
            :meth:`configure_callbacks`) and a TF-style decay warm-up, see :class:`~mobilevision.tasks._ema.EMA`.
        channels_last: NHWC memory format (faster convolutions on CPU and on tensor cores).
        eval_folded: validate / test / predict with a re-parameterized copy of the network (MobileOne's
            branches folded into one conv per layer: the same outputs up to float rounding, faster). No
            effect on backbones without branches.
        teacher, teacher_weights, teacher_image_size, distill_temperature, distill_weight: knowledge distillation
            (:mod:`mobilevision.tasks.distill`): a classification checkpoint, or ``torchvision:<name>`` /
            ``timm:<name>`` with a state dict file; the temperature T and the weight of the soft loss (the
            cross-entropy gets ``1 - distill_weight``).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v1",
        num_classes: int = 1000,
        image_size: int = 224,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        dropout: float | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup: float = 0.02,
        min_lr_ratio: float = 0.0,
        ema_decay: float | None = None,
        channels_last: bool = False,
        eval_folded: bool = True,
        class_names: list[str] | None = None,
        teacher: str | None = None,
        teacher_weights: str | None = None,
        teacher_image_size: int | None = None,
        distill_temperature: float = 4.0,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.init_distillation()
        self.build_model(num_classes, dropout)
        self.val_metrics = classification_metrics(num_classes)
        self.test_metrics = classification_metrics(num_classes)
        self.last_metrics: dict[str, Any] = {}

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        if self.hparams.teacher:
            soft = soft_cross_entropy(logits, self.teacher_logits(images, logits), self.hparams.distill_temperature)
            self.log("train/loss_soft", soft, batch_size=len(images))
            loss = self.mix(loss, soft)
        check_finite_loss(self, {"loss": loss})
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        self.log("train/acc1", acc, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to resume (or validate a checkpoint) on data whose classes differ from the checkpoint's."""
        super().on_load_checkpoint(checkpoint)
        check_same_labels(self, checkpoint, ("num_classes", "class_names"))

    def _eval_step(self, batch, metrics, stage: str) -> None:
        images, labels = batch
        logits = self.eval_model()(self._prepare(images))
        self.eval_losses[stage].update(F.cross_entropy(logits, labels), len(images))
        metrics.update(logits.float(), labels)

    def summarize(self, computed: dict[str, torch.Tensor]) -> dict[str, Any]:
        return summarize_metrics(computed, self.hparams.class_names)

    def log_eval(self, stats: dict[str, Any], stage: str) -> None:
        self.log(f"{stage}/acc1", stats["acc1"], prog_bar=True)
        self.log(f"{stage}/acc5", stats["acc5"])
        self.log(f"{stage}/acc_mean_class", stats["acc_mean_class"])

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``probs`` [B, C] and predicted ``labels`` [B] (plus ``targets`` when the batch has labels)."""
        images, targets = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        probs = self.eval_model()(self._prepare(images)).float().softmax(dim=1)
        out = {"probs": probs, "labels": probs.argmax(dim=1)}
        if targets is not None:
            out["targets"] = targets
        return out


