"""SSDLite detection as a LightningModule: training loss, COCO mAP validation, prediction."""

from __future__ import annotations

from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from ..evaluation.coco import COCOEvaluator, scale_boxes
from ..models import SSDLite, create_classifier
from ._backbone import eval_losses
from ._optim import OptimizerName, build_optimizer, param_groups, schedule
from .checkpoint import check_finite_loss, check_finite_weights, check_same_labels

# COCOeval stat key -> logged metric name (torchmetrics' MeanAveragePrecision naming)
METRIC_NAMES = {"AP": "map", "AP50": "map_50", "AP75": "map_75", "APs": "map_small", "APm": "map_medium",
                "APl": "map_large", "AR1": "mar_1", "AR10": "mar_10", "AR100": "mar_100", "ARs": "mar_small",
                "ARm": "mar_medium", "ARl": "mar_large"}


class DetectionTask(pl.LightningModule):
    """Train and evaluate an :class:`~mobilevision.models.SSDLite` detector.

    Args:
        backbone, width, backbone_kwargs, image_size, num_classes: the network (``num_classes`` is
            linked from the data module by the CLI).
        backbone_weights: ImageNet weights for the backbone: a torchvision / timm state dict file of
            the same architecture, or ``"imagenet"`` (see :func:`mobilevision.backbones.load_pretrained`).
            Loaded when a fit starts from scratch, never when resuming (``ckpt_path``), in
            ``load_from_checkpoint`` or :func:`~mobilevision.tasks.load_task`: the checkpoint holds every
            weight, so those work without the file (:meth:`load_backbone_weights` loads them at once).
        min_ratio, max_ratio: default box scales of the first and last feature map, as fractions of the
            input side (SSD: 0.2 and 0.95; lower ``min_ratio`` for datasets of small objects).
        optimizer, lr, momentum, weight_decay: SGD / RMSProp / AdamW; no decay on norms and biases.
        warmup, min_lr_ratio: linear warm-up (fraction of training), then cosine to ``lr * min_lr_ratio``,
            over the optimizer steps of the fit (``trainer.max_time`` is only a safety stop).
        channels_last: NHWC memory format (faster convolutions on CPU and on tensor cores).
        score_thresh, nms_thresh, detections_per_img: postprocessing.
        label_to_category_id: contiguous label -> dataset category id (linked from the data module);
            kept in the checkpoint so predictions can be mapped back without the dataset.
        eval_backend: ``pycocotools`` or ``faster_coco_eval``.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        num_classes: int = 80,
        image_size: int = 320,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        min_ratio: float = 0.2,
        max_ratio: float = 0.95,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.15,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup: float = 0.02,
        min_lr_ratio: float = 0.0,
        channels_last: bool = False,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        label_to_category_id: list[int] | None = None,
        category_names: list[str] | None = None,
        eval_backend: str = "pycocotools",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = SSDLite(backbone, num_classes, image_size, width, backbone_kwargs, min_ratio=min_ratio,
                             max_ratio=max_ratio, score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self._weights_pending = bool(backbone_weights)  # loaded when a fit starts from scratch
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.evaluator: COCOEvaluator | None = None
        self._evaluator_for: tuple | None = None  # (ground truth, label map, backend) of self.evaluator
        self.eval_losses = eval_losses()  # nothing syncs per batch: ranks may run one batch more than others
        self.last_metrics: dict[str, Any] = {}

    def load_backbone_weights(self) -> None:
        """Load ``backbone_weights`` (ImageNet) into the backbone now."""
        hp = self.hparams
        kwargs = dict(hp.backbone_kwargs or {})
        if hp.width is not None:
            kwargs["width"] = hp.width
        classifier = create_classifier(hp.backbone, weights=hp.backbone_weights, **kwargs)
        self.model.backbone.load_state_dict(classifier.backbone.state_dict())
        self._weights_pending = False

    # -- checkpoints ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self._weights_pending:  # a fit from scratch: a resumed one went through on_load_checkpoint
            self.load_backbone_weights()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint holds every weight; refuse to resume (or validate it) on data with other categories."""
        self._weights_pending = False
        check_same_labels(self, checkpoint, ("num_classes", "label_to_category_id", "category_names"))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_weights(checkpoint)

    # -- steps ------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model.compute_loss(self(images), targets)
        check_finite_loss(self, losses)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(images))
        return losses["loss"]

    def _detections(self, outputs: dict[str, Any], targets: Sequence[dict]) -> list[dict]:
        """Postprocessed detections in each image's original pixels, with labels as given."""
        detections = self.model.postprocess(outputs)
        size = outputs["image_size"]
        out = []
        for det, tgt in zip(detections, targets):
            h, w = (int(v) for v in tgt["orig_size"])
            out.append({"image_id": int(tgt["image_id"]), "boxes": scale_boxes(det["boxes"], size, (h, w), clip=True),
                        "scores": det["scores"], "labels": det["labels"]})
        return out

    def _start_eval(self) -> None:
        """A cleared evaluator; the ground truth is read and indexed once, not at every validation."""
        dm = self.trainer.datamodule
        gt, mapping, backend = dm.val_coco, list(dm.label_to_category_id), self.hparams.eval_backend
        if self.evaluator is not None and self._evaluator_for == (gt, mapping, backend):
            self.evaluator.reset()
            return
        self.evaluator = COCOEvaluator(gt, label_to_category_id=mapping, backend=backend)
        self._evaluator_for = (gt, mapping, backend)

    def _eval_step(self, batch, stage: str) -> None:
        images, targets = batch
        outputs = self(images)
        self.evaluator.update(self._detections(outputs, targets))
        self.eval_losses[stage].update(self.model.compute_loss(outputs, targets)["loss"], len(images))

    def _end_eval(self, stage: str) -> None:
        stats = self.evaluator.compute()  # gathers predictions from every process under DDP
        loss = self.eval_losses[stage].compute()  # synced
        with torch.inference_mode(False):  # fresh states as normal tensors (see BackboneTask._end_eval)
            self.eval_losses[stage].reset()
        self.last_metrics = stats
        # every process holds the same gathered stats, so no sync_dist
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/map", float(stats["AP"]), prog_bar=True)
        self.log_dict({f"{stage}/{METRIC_NAMES[k]}": float(stats[k]) for k in METRIC_NAMES if k != "AP"})

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def predict_step(self, batch, batch_idx: int) -> list[dict]:
        """Detections in original image pixels, with dataset category ids (``category_id``)."""
        images, targets = batch
        lut = self.hparams.label_to_category_id
        out = self._detections(self(images), targets)
        for det in out:
            det["category_ids"] = (torch.as_tensor(lut, device=det["labels"].device)[det["labels"]]
                                   if lut else det["labels"])
        return out

    # -- optimization ---------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups([(self.model, 1.0)], hp.weight_decay)
        return schedule(build_optimizer(groups, hp.optimizer, hp.lr, hp.momentum), self, hp.warmup, hp.min_lr_ratio)
