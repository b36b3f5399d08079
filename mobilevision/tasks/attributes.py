"""Multi-label attributes as a LightningModule: one sigmoid per attribute on any backbone, binary cross-entropy
that leaves unknown labels out, average precision per attribute (the MobileNet paper's Table 12 measure)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..evaluation.attributes import AttributeMetrics
from ._backbone import BackboneTask
from ._optim import OptimizerName
from .checkpoint import check_finite_loss, check_same_labels
from .distill import DistillationMixin, soft_binary_loss

__all__ = ["AttributesTask", "masked_bce"]


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits over the known labels (1 / 0; -1 is unknown and left out), averaged over
    them; 0 when a batch has none."""
    known = labels >= 0
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), reduction="none",
                                              pos_weight=pos_weight)
    return (loss * known).sum() / known.sum().clamp(min=1)


class AttributesTask(DistillationMixin, BackboneTask):
    """Train and evaluate an :class:`~mobilevision.models.ImageClassifier` with one output (a sigmoid) per attribute.

    Args:
        backbone: with ``width``, ``backbone_kwargs``, ``backbone_weights``, ``dropout``, ``freeze_backbone``,
            ``backbone_lr_scale``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``warmup``, ``min_lr_ratio``,
            ``ema_decay``, ``channels_last`` and ``eval_folded``: as in :class:`~mobilevision.tasks.ClassificationTask`.
        num_attributes, attribute_names, image_size: linked from the data module by the CLI and kept in the
            checkpoint.
        pos_weight: the positive examples' weight in the loss, one number for every attribute or one per
            attribute (e.g. negatives / positives, for rare attributes); None: 1.
        teacher, teacher_weights, teacher_image_size, distill_temperature, distill_weight: knowledge distillation
            (:mod:`mobilevision.tasks.distill`) from an attributes checkpoint or a torchvision / timm network with
            one output per attribute.

    Validation logs ``val/map`` (mean average precision), ``val/acc`` (accuracy at 0.5) and ``val/acc_tuned``
    (accuracy at the per-attribute thresholds that are best on the validation data); ``last_metrics`` holds the
    per-attribute table (:func:`~mobilevision.evaluation.attributes.attribute_stats`).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v1",
        num_attributes: int = 40,
        image_size: int = 224,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        dropout: float | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        pos_weight: float | list[float] | None = None,
        optimizer: OptimizerName = "adamw",
        lr: float = 0.003,
        momentum: float = 0.9,
        weight_decay: float = 0.05,
        warmup: float = 0.03,
        min_lr_ratio: float = 0.0,
        ema_decay: float | None = None,
        channels_last: bool = False,
        eval_folded: bool = True,
        attribute_names: list[str] | None = None,
        teacher: str | None = None,
        teacher_weights: str | None = None,
        teacher_image_size: int | None = None,
        distill_temperature: float = 2.0,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_attributes < 1:
            raise UserError(f"num_attributes must be at least 1, got {num_attributes}")
        if attribute_names is not None and len(attribute_names) != num_attributes:
            raise UserError(f"{len(attribute_names)} attribute names for num_attributes={num_attributes}")
        self.init_distillation()
        self.build_model(num_attributes, dropout)
        self.register_buffer("pos_weight", self._pos_weight(pos_weight, num_attributes), persistent=False)
        names = attribute_names or [str(i) for i in range(num_attributes)]
        self.val_metrics = AttributeMetrics(names)
        self.test_metrics = AttributeMetrics(names)
        self.last_metrics: dict[str, Any] = {}

    @staticmethod
    def _pos_weight(value: float | Sequence[float] | None, n: int) -> torch.Tensor | None:
        if value is None:
            return None
        values = [float(value)] * n if isinstance(value, (int, float)) else [float(v) for v in value]
        if len(values) != n or min(values) <= 0:
            raise UserError(f"pos_weight must be one positive number or {n} of them, got {value}")
        return torch.tensor(values)

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = masked_bce(logits, labels, self.pos_weight)
        if self.hparams.teacher:
            soft = soft_binary_loss(logits, self.teacher_logits(images, logits), self.hparams.distill_temperature)
            self.log("train/loss_soft", soft, batch_size=len(images))
            loss = self.mix(loss, soft)
        check_finite_loss(self, {"loss": loss})
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to resume (or validate a checkpoint) on data whose attributes differ from the checkpoint's."""
        super().on_load_checkpoint(checkpoint)
        check_same_labels(self, checkpoint, ("num_attributes", "attribute_names"))

    def _eval_step(self, batch, metrics, stage: str) -> None:
        images, labels = batch
        logits = self.eval_model()(self._prepare(images)).float()
        self.eval_losses[stage].update(masked_bce(logits, labels, self.pos_weight), len(images))
        metrics.update(logits.sigmoid(), labels)

    def summarize(self, computed: dict[str, Any]) -> dict[str, Any]:
        return computed

    def log_eval(self, stats: dict[str, Any], stage: str) -> None:
        self.log(f"{stage}/map", stats["mean_ap"], prog_bar=True)
        self.log(f"{stage}/acc", stats["mean_acc_at_0.5"])
        self.log(f"{stage}/acc_tuned", stats["mean_acc_at_threshold"])

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``probs`` [B, A] (one sigmoid per attribute), plus ``targets`` when the batch has labels."""
        images, targets = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        out = {"probs": self.eval_model()(self._prepare(images)).float().sigmoid()}
        if targets is not None:
            out["targets"] = targets
        return out
