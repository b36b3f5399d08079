"""Geolocalization as cell classification (PlaNet, Weyand et al. 2016; re-trained on MobileNet in the MobileNetV1
paper): a backbone + linear head scores the cells of an adaptive S2 partition, and the predicted location is a
cell's location. Validation reports the Im2GPS accuracies within 1 / 25 / 200 / 750 / 2500 km."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..evaluation.geolocalization import GEO_THRESHOLDS_KM, GeoAccuracy
from ..geo.cells import CellPartition
from ..geo.distance import locations_from_logits
from ..errors import UserError
from ._backbone import BackboneTask
from ._optim import OptimizerName
from .checkpoint import check_finite_loss
from .distill import DistillationMixin, soft_cross_entropy

__all__ = ["GeolocalizationTask"]

PredictMode = Literal["argmax", "topk"]
CellLocationMode = Literal["center", "mean"]



class GeolocalizationTask(DistillationMixin, BackboneTask):
    """Classify photos into the cells of a :class:`~mobilevision.geo.CellPartition` and predict coordinates.

    Args:
        backbone: with ``width``, ``backbone_kwargs``, ``backbone_weights``, ``dropout``, ``freeze_backbone``,
            ``backbone_lr_scale``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``warmup``, ``min_lr_ratio``,
            ``ema_decay``, ``channels_last`` and ``eval_folded``: as in :class:`~mobilevision.tasks.ClassificationTask`.
        partition: the cells (a :class:`CellPartition` or its ``to_state()``), linked from the data module by the
            CLI. It lives in the module's buffers (``cell_ids``, ``cell_centers``, ``cell_means``,
            ``cell_counts``), so every checkpoint carries it and prediction needs no training data. Optional when
            ``num_cells`` is given (the buffers are then filled by ``load_state_dict``, as :func:`load_task` does).
        num_cells: size of the linear head (recorded from ``partition``).
        image_size: the training resolution (recorded; linked from the data module).
        neighbour_smoothing: label smoothing over neighbouring cells: this share of the target moves from the
            photo's cell to the cells touching it (uniformly), so mistakes into adjacent cells cost less.
        predict: ``"argmax"`` (the most probable cell's location, PlaNet) or ``"topk"`` (the probability-weighted
            spherical mean of the ``top_k`` most probable cells' locations).
        cell_location: a cell's location: its S2 ``"center"`` or the ``"mean"`` of its training photos.
        teacher, teacher_weights, teacher_image_size, distill_temperature, distill_weight: knowledge distillation
            (:mod:`mobilevision.tasks.distill`) from a geolocalization checkpoint with the same cells, or a
            torchvision / timm network with one output per cell.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v1",
        partition: dict | None = None,
        num_cells: int | None = None,
        image_size: int = 224,
        width: float | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_weights: str | None = None,
        dropout: float | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        neighbour_smoothing: float = 0.0,
        predict: PredictMode = "argmax",
        top_k: int = 5,
        cell_location: CellLocationMode = "center",
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        warmup: float = 0.02,
        min_lr_ratio: float = 0.0,
        ema_decay: float | None = None,
        channels_last: bool = False,
        eval_folded: bool = True,
        teacher: str | None = None,
        teacher_weights: str | None = None,
        teacher_image_size: int | None = None,
        distill_temperature: float = 4.0,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if isinstance(partition, dict):
            partition = CellPartition.from_state(partition)
        if partition is not None:
            if num_cells is not None and num_cells != len(partition):
                raise ValueError(f"num_cells={num_cells} but the partition has {len(partition)} cells")
            num_cells = len(partition)
        if num_cells is None or num_cells < 1:
            raise ValueError("GeolocalizationTask needs the cell partition (or num_cells when loading a checkpoint)")
        if not 0.0 <= neighbour_smoothing < 1.0:
            raise ValueError(f"neighbour_smoothing must be in [0, 1), got {neighbour_smoothing}")
        if predict not in ("argmax", "topk"):
            raise ValueError(f"predict must be 'argmax' or 'topk', got {predict!r}")
        if cell_location not in ("center", "mean"):
            raise ValueError(f"cell_location must be 'center' or 'mean', got {cell_location!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.save_hyperparameters(ignore=["partition"])  # the partition is in the buffers
        self.hparams.num_cells = num_cells
        self.init_distillation()
        self.build_model(num_cells, dropout)
        self.register_buffer("cell_ids", torch.zeros(num_cells, dtype=torch.int64))
        self.register_buffer("cell_centers", torch.zeros(num_cells, 2, dtype=torch.float64))
        self.register_buffer("cell_means", torch.zeros(num_cells, 2, dtype=torch.float64))
        self.register_buffer("cell_counts", torch.zeros(num_cells, dtype=torch.int64))
        self._partition: CellPartition | None = None
        self._pending_params: dict[str, int] = {}  # how a checkpoint's partition was built
        self._neighbours: tuple[torch.Tensor, torch.Tensor] | None = None
        if partition is not None:
            self.set_partition(partition)
        self.val_metrics = GeoAccuracy()
        self.test_metrics = GeoAccuracy()
        self.last_metrics: dict[str, float] = {}

    def check_teacher(self, teacher) -> None:
        """A teacher checkpoint must predict the student's cells."""
        if teacher.task is not None and not torch.equal(teacher.task.cell_ids.cpu(), self.cell_ids.cpu()):
            raise UserError(f"teacher {teacher.source} predicts other cells than the student (a partition built "
                            "from other photos or with other options): distillation needs the same cells")

    # -- the partition ---------------------------------------------------------------------------------
    def set_partition(self, partition: CellPartition) -> None:
        if len(partition) != self.hparams.num_cells:
            raise ValueError(f"the model has {self.hparams.num_cells} cells, the partition {len(partition)}")
        state = partition.to_state()
        self.cell_ids.copy_(state["cell_ids"])
        self.cell_centers.copy_(state["centers"])
        self.cell_means.copy_(state["means"])
        self.cell_counts.copy_(state["counts"])
        self._partition, self._neighbours = partition, None

    @property
    def partition(self) -> CellPartition:
        """The cells, rebuilt from the buffers (after ``load_state_dict`` they are the checkpoint's)."""
        if self._partition is None or not torch.equal(
                torch.from_numpy(self._partition.cell_ids.view("int64")), self.cell_ids.cpu()):
            if int(self.cell_counts.sum()) == 0:
                raise RuntimeError("the model holds no cell partition yet (pass partition= or load a checkpoint)")
            self._partition = CellPartition.from_state({
                "cell_ids": self.cell_ids, "centers": self.cell_centers, "means": self.cell_means,
                "counts": self.cell_counts, "params": self._pending_params})
            self._neighbours = None
        return self._partition

    def cell_locations(self, mode: CellLocationMode | None = None) -> torch.Tensor:
        """(latitude, longitude) per cell [C, 2], float64: centers or training-photo means."""
        mode = mode or self.hparams.cell_location
        if mode not in ("center", "mean"):
            raise ValueError(f"cell location must be 'center' or 'mean', got {mode!r}")
        return self.cell_centers if mode == "center" else self.cell_means

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the cells readably: S2 tokens and how the partition was built (the buffers hold the rest)."""
        super().on_save_checkpoint(checkpoint)
        partition = self.partition
        checkpoint["cell_partition"] = {"tokens": partition.tokens, "params": dict(partition.params)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to resume on data whose partition differs from the checkpoint's (labels would be shuffled)."""
        super().on_load_checkpoint(checkpoint)
        self._pending_params = dict(checkpoint.get("cell_partition", {}).get("params", {}))
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        ids = checkpoint.get("state_dict", {}).get("cell_ids")
        if dm is not None and ids is not None and hasattr(dm, "partition"):
            mine = torch.from_numpy(dm.partition.cell_ids.view("int64"))
            if not torch.equal(mine, ids.cpu()):
                raise ValueError(f"the checkpoint's {len(ids)} cells differ from the {len(mine)} cells the data module "
                                 f"built from {getattr(dm, 'train_file', 'its training list')}")

    # -- loss and prediction ----------------------------------------------------------------------------
    def _neighbour_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._neighbours is None or self._neighbours[0].device != self.device:
            index, mask = self.partition.neighbour_table()
            self._neighbours = (index.to(self.device), mask.to(self.device))
        return self._neighbours

    def loss(self, logits: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the photo's cell, with ``neighbour_smoothing`` of the target spread over its neighbours;
        photos in no cell (``-1``) are ignored."""
        logits = logits.float()
        valid = cells >= 0
        if not valid.any():
            return logits.sum() * 0.0
        logits, cells = logits[valid], cells[valid]
        eps = self.hparams.neighbour_smoothing
        nll = F.cross_entropy(logits, cells, reduction="none")
        if eps > 0:
            index, mask = self._neighbour_table()
            nb, mk = index[cells], mask[cells].float()
            logp = logits.log_softmax(dim=1).gather(1, nb)
            count = mk.sum(1)
            nb_nll = -(logp * mk).sum(1) / count.clamp(min=1)
            w = eps * (count > 0).float()  # a cell without neighbours keeps the whole target
            nll = (1 - w) * nll + w * nb_nll
        return nll.mean()

    def predict_locations(self, logits: torch.Tensor) -> torch.Tensor:
        """Predicted (latitude, longitude) [B, 2] float64 from cell logits [B, C]."""
        locations = self.cell_locations().to(logits.device)
        return locations_from_logits(logits, locations, self.hparams.predict, self.hparams.top_k)

    # -- steps ------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, cells, _ = batch
        logits = self(images)
        loss = self.loss(logits, cells)
        if self.hparams.teacher:
            soft = soft_cross_entropy(logits, self.teacher_logits(images, logits), self.hparams.distill_temperature)
            self.log("train/loss_soft", soft, batch_size=len(images))
            loss = self.mix(loss, soft)
        check_finite_loss(self, {"loss": loss})
        valid = cells >= 0
        acc = (logits.detach().argmax(dim=1)[valid] == cells[valid]).float().mean() if valid.any() else loss * 0
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        self.log("train/acc_cell", acc, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def _eval_step(self, batch, metrics: GeoAccuracy, stage: str) -> None:
        images, cells, coords = batch
        logits = self.eval_model()(self._prepare(images))
        self.eval_losses[stage].update(self.loss(logits, cells), len(images))
        pred = self.predict_locations(logits)
        metrics.update(pred[:, 0], pred[:, 1], coords[:, 0], coords[:, 1])

    def summarize(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in computed.items()}

    def log_eval(self, stats: dict[str, float], stage: str) -> None:
        for km in GEO_THRESHOLDS_KM:
            self.log(f"{stage}/acc_{km}km", stats[f"acc_{km}km"], prog_bar=km in (750, 2500))
        self.log(f"{stage}/median_km", stats["median_km"])

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``latitude`` / ``longitude`` [B] (float64), the top ``cell`` [B] and its ``prob``; with ground truth in the
        batch also ``true_latitude`` / ``true_longitude``."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        logits = self.eval_model()(self._prepare(images))
        pred = self.predict_locations(logits)
        prob, cell = logits.float().softmax(dim=1).max(dim=1)
        out = {"latitude": pred[:, 0], "longitude": pred[:, 1], "cell": cell, "prob": prob}
        if isinstance(batch, (tuple, list)) and len(batch) == 3:
            out["true_latitude"], out["true_longitude"] = batch[2][:, 0], batch[2][:, 1]
        return out

