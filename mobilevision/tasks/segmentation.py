"""Semantic segmentation as a LightningModule: per-pixel cross-entropy (ignore index 255), validation mIoU from an
accumulated confusion matrix at each image's original resolution, optional multi-scale + flip testing."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..evaluation.segmentation import segmentation_metrics, summarize_confusion
from ..masks import IGNORE_INDEX
from ..models import SegmentationModel, multi_scale_probs
from ..models.segmentation import HeadName
from ._backbone import BackboneTask
from ._optim import OptimizerName
from .checkpoint import check_finite_loss, check_same_labels

__all__ = ["SegmentationTask"]


class SegmentationTask(BackboneTask):
    """Train and evaluate a :class:`~mobilevision.models.SegmentationModel` (backbone + DeepLabv3 / LR-ASPP head).

    Batches (:class:`~mobilevision.data.SegmentationDataModule`): training ``(images [B, 3, S, S], masks [B, S, S])``;
    evaluation ``(images [B, 3, H, W], targets)``, each target with ``mask`` (original resolution), ``input_size``
    (the image's unpadded part of the tensor) and ``orig_size``: the network runs on each image's unpadded part,
    its logits are resized bilinearly to ``orig_size`` and scored there (the VOC protocol), so a resized evaluation
    input is still scored on the original labels, and the batch size changes nothing.

    Args:
        backbone, width, backbone_kwargs, head, output_stride, aspp, atrous_rates, tap, head_channels: the network
            (:class:`~mobilevision.models.SegmentationModel`): by default the MobileNetV2 paper's DeepLabv3 (output
            stride 16, ASPP 6 / 12 / 18 + image pooling, 256 channels).
        num_classes, class_names, image_size: linked from the data module by the CLI (``image_size`` = the
            training crop) and kept in the checkpoint.
        backbone_weights: with ``freeze_backbone``, ``backbone_lr_scale``, ``optimizer``, ``lr``, ``momentum``,
            ``weight_decay``, ``warmup``, ``min_lr_ratio``, ``ema_decay``, ``channels_last`` and ``eval_folded``: as in
            :class:`~mobilevision.tasks.ClassificationTask` (the ImageNet classifier's weights go into the backbone's
            blocks up to the tap).
        ignore_index: label left out of the loss and the metrics (255, VOC's "void").
        eval_scales, eval_flip: multi-scale (e.g. ``[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]``) and left-right flip testing
            in validation / test / predict: softmax probabilities averaged (the papers' "MF"); the loss is the
            scale-1 logits'.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        num_classes: int = 21,
        image_size: int = 513,
        head: HeadName = "deeplabv3",
        output_stride: int = 16,
        aspp: bool = True,
        atrous_rates: list[int] | None = None,
        tap: int = -1,
        head_channels: int | None = None,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup: float = 0.02,
        min_lr_ratio: float = 0.0,
        ema_decay: float | None = None,
        channels_last: bool = False,
        eval_folded: bool = True,
        ignore_index: int = IGNORE_INDEX,
        eval_scales: list[float] | None = None,
        eval_flip: bool = False,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if eval_scales is not None and (not eval_scales or min(eval_scales) <= 0):
            raise ValueError(f"eval_scales must be positive numbers, got {eval_scales}")
        self.save_hyperparameters()
        self.attach_model(SegmentationModel(backbone, num_classes, head, output_stride, aspp, atrous_rates, tap, width,
                                            backbone_kwargs, head_channels))
        self.val_metrics = segmentation_metrics(num_classes, ignore_index)
        self.test_metrics = segmentation_metrics(num_classes, ignore_index)
        self.last_metrics: dict[str, Any] = {}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        check_same_labels(self, checkpoint, ("num_classes", "class_names"))

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        logits = self(images)
        loss = F.cross_entropy(logits, masks, ignore_index=self.hparams.ignore_index)
        check_finite_loss(self, {"loss": loss})
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def segment(self, images: torch.Tensor, targets: Sequence[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: log-probabilities [C, h0, w0] at its original size (of the logits, or of the MF-averaged
        probabilities with ``eval_scales`` / ``eval_flip``) and the label map.

        The network sees each image's own region only (``input_size``; images of one size run as one batch): the
        zero padding of a batch of different sizes never reaches the global pooling of ASPP / LR-ASPP, so the result
        does not depend on the batch size, and equals what an exported model gives on the image alone."""
        net = self.eval_model()
        scales = tuple(self.hparams.eval_scales or (1.0,))
        mf = scales != (1.0,) or bool(self.hparams.eval_flip)
        sizes = [tuple(int(v) for v in t["input_size"]) for t in targets]
        scores: list[torch.Tensor | None] = [None] * len(targets)
        for size in dict.fromkeys(sizes):
            idx = [i for i, s in enumerate(sizes) if s == size]
            x = self._prepare(images[idx, :, : size[0], : size[1]])
            logits = net(x)
            group = multi_scale_probs(net, x, scales, bool(self.hparams.eval_flip), logits) if mf else logits
            for i, s in zip(idx, group):
                scores[i] = s
        out_scores, labels = [], []
        for s, t in zip(scores, targets):
            s = s.float()
            size = tuple(int(v) for v in t["orig_size"])
            if tuple(s.shape[-2:]) != size:
                s = F.interpolate(s[None], size=size, mode="bilinear", align_corners=False)[0]
            s = s.clamp_min(1e-12).log() if mf else s.log_softmax(dim=0)
            out_scores.append(s)
            labels.append(s.argmax(dim=0))
        return out_scores, labels

    def _eval_step(self, batch, metrics, stage: str) -> None:
        images, targets = batch
        ignore = self.hparams.ignore_index
        for log_probs, pred, t in zip(*self.segment(images, targets), targets):
            mask = t["mask"].to(pred.device)
            metrics.update(pred[None], mask[None])
            if (mask != ignore).any():  # the mean loss per image
                self.eval_losses[stage].update(F.nll_loss(log_probs[None], mask[None], ignore_index=ignore), 1)

    def summarize(self, computed: torch.Tensor) -> dict[str, Any]:
        return summarize_confusion(computed, self.hparams.class_names)

    def log_eval(self, stats: dict[str, Any], stage: str) -> None:
        self.log(f"{stage}/miou", stats["miou"], prog_bar=True)
        self.log(f"{stage}/pixel_acc", stats["pixel_acc"])
        self.log(f"{stage}/mean_acc", stats["mean_acc"])

    def predict_step(self, batch, batch_idx: int) -> list[dict[str, Any]]:
        """Per image: ``mask`` (label map [h0, w0] at the original size, uint8 below 256 classes) and ``file_name``."""
        images, targets = batch
        _, labels = self.segment(images, targets)
        dtype = torch.uint8 if self.hparams.num_classes <= 256 else torch.int64
        return [{"mask": m.to(dtype).cpu(), "file_name": t.get("file_name")} for m, t in zip(labels, targets)]
