"""SSDLite detection as a LightningModule: training loss, COCO mAP validation, prediction."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import UserError
from ..evaluation.coco_map import COCOEvaluator, scale_boxes
from ..models import SSDLite
from ._backbone import BackboneTask
from ._optim import OptimizerName
from .checkpoint import check_finite_loss, check_same_labels
from .distill import DistillationMixin, detection_distillation_loss

# COCOeval stat key -> logged metric name (torchmetrics' MeanAveragePrecision naming)
METRIC_NAMES = {"AP": "map", "AP50": "map_50", "AP75": "map_75", "APs": "map_small", "APm": "map_medium",
                "APl": "map_large", "AR1": "mar_1", "AR10": "mar_10", "AR100": "mar_100", "ARs": "mar_small",
                "ARm": "mar_medium", "ARl": "mar_large"}


class DetectionTask(DistillationMixin, BackboneTask):
    """Train and evaluate an :class:`~mobilevision.models.SSDLite` detector.

    Args:
        backbone, width, backbone_kwargs, image_size, num_classes: the network (``num_classes`` is
            linked from the data module by the CLI).
        backbone_weights: ImageNet weights for the backbone: a torchvision / timm state dict file of
            the same architecture, or ``"imagenet"`` (see :func:`mobilevision.models.load_pretrained`).
            Loaded when a fit starts from scratch, never when resuming (``ckpt_path``), in
            ``load_from_checkpoint`` or :func:`~mobilevision.tasks.load_task`: the checkpoint holds every
            weight, so those work without the file (:meth:`load_backbone_weights` loads them at once).
        freeze_backbone: train only the extra layers and the prediction head; the backbone keeps its
            weights and its BatchNorm statistics (it stays in eval mode).
        backbone_lr_scale: the backbone's learning rate as a fraction of ``lr`` (fine-tuning: e.g. 0.1);
            the extra layers and the head train at ``lr``.
        first_stride: stride of the finest map predicted from: 16 (the paper) or 8 (adds the backbone's
            stride-8 map, for small objects); see :class:`~mobilevision.models.SSDLite`.
        min_ratio, max_ratio: default box scales of the first and last feature map, as fractions of the
            input side (SSD: 0.2 and 0.95; lower ``min_ratio`` for datasets of small objects).
        optimizer, lr, momentum, weight_decay: SGD / RMSProp / AdamW; no decay on norms and biases.
        warmup, min_lr_ratio: linear warm-up (fraction of training), then cosine to ``lr * min_lr_ratio``,
            over the optimizer steps of the fit (``trainer.max_time`` is only a safety stop).
        ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.9998);
            validation, checkpoints and the weights left after ``fit`` are the average (as in
            :class:`~mobilevision.tasks.ClassificationTask`).
        channels_last: NHWC memory format (faster convolutions on CPU and on tensor cores).
        eval_folded: validate / test / predict with a re-parameterized copy of the network (MobileOne's
            branches folded into one conv per layer: the same detections up to float rounding, faster).
            No effect on backbones without branches.
        score_thresh, nms_thresh, detections_per_img: postprocessing.
        label_to_category_id: contiguous label -> dataset category id (linked from the data module);
            kept in the checkpoint so predictions can be mapped back without the dataset.
        eval_backend: ``pycocotools`` or ``faster_coco_eval``.
        teacher, teacher_image_size, distill_temperature, distill_weight: knowledge distillation from an SSDLite
            checkpoint with the student's default boxes (the same ``image_size``, ``first_stride``, ``min_ratio``
            and ``max_ratio``; any backbone), after Chen et al. 2017
            (:func:`~mobilevision.tasks.distill.detection_distillation_loss`): the loss is
            ``(1 - w) loss_cls + w loss_soft + loss_box + w loss_bounded`` with ``w = distill_weight``.
            ``teacher_weights`` is for torchvision / timm teachers, which detection does not take.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        num_classes: int = 80,
        image_size: int = 320,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        first_stride: int = 16,
        min_ratio: float = 0.2,
        max_ratio: float = 0.95,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.15,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup: float = 0.02,
        min_lr_ratio: float = 0.0,
        ema_decay: float | None = None,
        channels_last: bool = False,
        eval_folded: bool = True,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        label_to_category_id: list[int] | None = None,
        category_names: list[str] | None = None,
        eval_backend: str = "pycocotools",
        teacher: str | None = None,
        teacher_weights: str | None = None,
        teacher_image_size: int | None = None,
        distill_temperature: float = 1.0,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if teacher is not None and not os.path.isfile(teacher):
            raise UserError(f"a detection teacher is an SSDLite checkpoint file (.ckpt); got {teacher!r}")
        self.init_distillation()
        self.attach_model(SSDLite(backbone, num_classes, image_size, width, backbone_kwargs, first_stride=first_stride,
                                  min_ratio=min_ratio, max_ratio=max_ratio, score_thresh=score_thresh, nms_thresh=nms_thresh,
                                  detections_per_img=detections_per_img))
        self.evaluator: COCOEvaluator | None = None
        self._evaluator_for: tuple | None = None  # (ground truth, label map, backend) of self.evaluator
        self.last_metrics: dict[str, Any] = {}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint holds every weight; refuse to resume (or validate it) on data with other categories."""
        super().on_load_checkpoint(checkpoint)
        check_same_labels(self, checkpoint, ("num_classes", "label_to_category_id", "category_names"))

    def optimizer_modules(self) -> list[tuple[nn.Module, float]]:
        if self.hparams.backbone_lr_scale == 1.0:  # the whole network in one pair of groups: older checkpoints resume
            return [(self.model, 1.0)]
        return super().optimizer_modules()

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        outputs = self(images)
        losses = self.model.compute_loss(outputs, targets)
        if self.hparams.teacher:
            kd = detection_distillation_loss(outputs, self.teacher_outputs(images), targets, self.model.box_coder,
                                             self.hparams.distill_temperature, self.model.iou_threshold)
            w = float(self.hparams.distill_weight)
            losses.update(kd)
            losses["loss"] = (1 - w) * losses["loss_cls"] + w * kd["loss_soft"] + losses["loss_box"] + \
                w * kd["loss_bounded"]
        check_finite_loss(self, losses)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(images))
        return losses["loss"]

    def _detections(self, outputs: dict[str, Any], targets: Sequence[dict]) -> list[dict]:
        """Postprocessed detections in each image's original pixels, with labels as given."""
        detections = self.eval_model().postprocess(outputs)
        size = outputs["image_size"]
        out = []
        for det, tgt in zip(detections, targets):
            h, w = (int(v) for v in tgt["orig_size"])
            out.append({"image_id": int(tgt["image_id"]), "boxes": scale_boxes(det["boxes"], size, (h, w), clip=True),
                        "scores": det["scores"], "labels": det["labels"]})
        return out

    # -- evaluation: one COCO evaluator serves validation and test (BackboneTask runs the loops) -------
    @property
    def val_metrics(self) -> COCOEvaluator | None:
        return self.evaluator

    test_metrics = val_metrics

    def _start_eval(self) -> None:
        """Fold the network, and clear the evaluator; the ground truth is read and indexed once, not at every
        validation."""
        super()._start_eval()
        gt, mapping = self._ground_truth()
        backend = self.hparams.eval_backend
        if self.evaluator is not None and self._evaluator_for == (gt, mapping, backend):
            self.evaluator.reset()
            return
        self.evaluator = COCOEvaluator(gt, label_to_category_id=mapping, backend=backend)
        self._evaluator_for = (gt, mapping, backend)

    def _ground_truth(self) -> tuple[Any, list[int]]:
        """(pycocotools ground truth, label -> category id) of the data being evaluated: the data module's, or,
        for ``trainer.validate(task, dataloaders=...)`` / ``test``, the COCO dataset under the first loader."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "val_coco"):
            return dm.val_coco, list(dm.label_to_category_id)
        loaders = self.trainer.test_dataloaders if self.trainer.testing else self.trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        while isinstance(dataset, torch.utils.data.Subset):
            dataset = dataset.dataset
        coco, categories = getattr(dataset, "coco", None), getattr(dataset, "categories", None)
        if coco is None or categories is None:
            raise ValueError("DetectionTask evaluation scores against COCO ground truth: pass a "
                             "CocoDetectionDataModule, or dataloaders over a CocoDetection dataset (not "
                             f"{type(dataset).__name__})")
        mapping = [int(c["id"]) for c in categories]
        if len(mapping) != self.hparams.num_classes:
            raise ValueError(f"the evaluation dataset has {len(mapping)} categories but the model "
                             f"{self.hparams.num_classes} classes")
        return coco, mapping

    def _eval_step(self, batch, evaluator: COCOEvaluator, stage: str) -> None:
        images, targets = batch
        net = self.eval_model()
        outputs = net(self._prepare(images))
        evaluator.update(self._detections(outputs, targets))
        self.eval_losses[stage].update(net.compute_loss(outputs, targets)["loss"], len(images))

    def summarize(self, computed: dict[str, Any]) -> dict[str, Any]:
        return computed  # COCOEvaluator.compute() gathers the predictions of every process under DDP

    def reset_metrics(self, evaluator: COCOEvaluator) -> None:
        """Keep the predictions until the next evaluation starts: ``evaluator.results()`` stays readable."""

    def log_eval(self, stats: dict[str, Any], stage: str) -> None:
        self.log(f"{stage}/map", float(stats["AP"]), prog_bar=True)
        self.log_dict({f"{stage}/{METRIC_NAMES[k]}": float(stats[k]) for k in METRIC_NAMES if k != "AP"})

    def predict_step(self, batch, batch_idx: int) -> list[dict]:
        """Detections in original image pixels, with dataset category ids (``category_id``)."""
        images, targets = batch
        lut = self.hparams.label_to_category_id
        out = self._detections(self.eval_model()(self._prepare(images)), targets)
        for det in out:
            det["category_ids"] = (torch.as_tensor(lut, device=det["labels"].device)[det["labels"]]
                                   if lut else det["labels"])
        return out
