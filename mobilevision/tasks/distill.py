"""Knowledge distillation (Hinton et al., arXiv 1503.02531): a frozen teacher's softened outputs as extra targets.

The teacher is one of:

* a mobilevision checkpoint (``.ckpt``) of the student's own task: its network, its input size and the
  normalization it was trained with (the checkpoint's data options);
* ``torchvision:<name>`` or ``timm:<name>`` with ``teacher_weights`` (a state dict file, read with
  ``weights_only=True``): the library's architecture with as many outputs as the weights' last layer, ImageNet's
  normalization (timm: the model's ``pretrained_cfg``), at ``teacher_image_size`` (default: the student's).

It is frozen and runs in eval mode under ``torch.no_grad()`` on the student's augmented batch: the images are
un-normalized by the student's mean / std, resized (bilinear, antialiased) to the teacher's input size when it
differs, and normalized by the teacher's. It is not a submodule: it is not saved in the student's checkpoint,
not wrapped by DDP, and is loaded again from its options when a fit (or a resumed fit) starts.

Losses, each weighted ``distill_weight`` against ``1 - distill_weight`` for the task's own loss:

* classification, geolocalization: ``T^2 KL(softmax(t / T) || softmax(s / T))`` (Hinton's soft targets);
* attributes: ``T^2`` times the binary cross-entropy of ``sigmoid(s / T)`` against ``sigmoid(t / T)`` per
  attribute, on every label (the teacher also speaks for attributes without a label);
* SSDLite: see :func:`detection_distillation_loss`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DistillationMixin", "Teacher", "check_distillation_options", "detection_distillation_loss", "load_teacher",
           "soft_binary_loss", "soft_cross_entropy"]


@dataclass
class Teacher:
    """A frozen network and the input it expects."""

    network: nn.Module
    image_size: int | None  # None: the student's
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    task: nn.Module | None = None  # the teacher's task, when it is a mobilevision checkpoint

    def __call__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
        """The teacher's outputs for the student's normalized ``images``."""
        x = images.float()
        if tuple(mean) != tuple(self.mean) or tuple(std) != tuple(self.std):
            m, s = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
            tm, ts = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (self.mean, self.std))
            x = (x * s + m - tm) / ts
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        with torch.no_grad():
            return self.network(x)


def check_distillation_options(teacher: str | None, teacher_weights: str | None, temperature: float,
                               weight: float) -> None:
    """Errors for options that cannot work, before any data is read."""
    if not temperature > 0:
        raise UserError(f"distill_temperature must be positive, got {temperature}")
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"distill_weight must be in [0, 1], got {weight}")
    if teacher is None:
        if teacher_weights is not None:
            raise UserError("teacher_weights is given without a teacher")
        return
    library = teacher.split(":", 1)[0] if ":" in teacher and not os.path.exists(teacher) else None
    if library is None:
        if not os.path.isfile(teacher):
            raise FileNotFoundError(f"teacher checkpoint not found: {teacher} (or give torchvision:<name> / "
                                    "timm:<name> with teacher_weights)")
    elif library not in ("torchvision", "timm"):
        raise UserError(f"teacher {teacher!r}: expected a mobilevision .ckpt, torchvision:<name> or timm:<name>")
    elif teacher_weights is None or not os.path.isfile(teacher_weights):
        raise FileNotFoundError(f"teacher {teacher} needs teacher_weights, a state dict file of that architecture "
                                f"(got {teacher_weights!r})")


def _state_dict(path: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's
        raise UserError(f"{path}: cannot be read as a state dict with torch.load(weights_only=True) ({e})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def load_teacher(spec: str, weights: str | None, task_cls: type, image_size: int | None,
                 num_outputs: int) -> Teacher:
    """The teacher of a ``task_cls`` student with ``num_outputs`` outputs (see the module docstring)."""
    if os.path.isfile(spec):
        from .checkpoint import load_task

        task, ckpt = load_task(spec, task_cls)
        data_hp = ckpt.get("datamodule_hyper_parameters") or {}
        network = task.export_model() if hasattr(task, "export_model") else task.model
        size = task.hparams.get("image_size")
        size = image_size or (int(size) if isinstance(size, (int, float)) else None)
        return Teacher(network.float().eval().requires_grad_(False), size,
                       tuple(data_hp.get("mean") or IMAGENET_MEAN), tuple(data_hp.get("std") or IMAGENET_STD), spec,
                       task)
    library, name = spec.split(":", 1)
    state = _state_dict(weights)
    classes = [v.shape[0] for v in state.values() if v.ndim == 2]
    if not classes:
        raise UserError(f"{weights}: no linear layer in the state dict (the teacher's classifier)")
    if classes[-1] != num_outputs:
        raise UserError(f"{weights}: the teacher's last layer has {classes[-1]} outputs, the student {num_outputs}")
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if library == "torchvision":
        import torchvision

        try:
            network = torchvision.models.get_model(name, weights=None, num_classes=num_outputs)
        except ValueError as e:
            raise UserError(f"teacher {spec}: {e}") from e
    else:
        import timm

        if not timm.is_model(name.split(".")[0]):
            raise UserError(f"teacher {spec}: timm has no model {name!r}")
        network = timm.create_model(name, pretrained=False, num_classes=num_outputs)
        mean, std = tuple(network.pretrained_cfg.get("mean", mean)), tuple(network.pretrained_cfg.get("std", std))
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{weights} does not fit {spec}: {str(e)[:400]}") from e
    return Teacher(network.float().eval().requires_grad_(False), image_size, tuple(mean), tuple(std), spec)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (rows)."""
    t = float(temperature)
    s_log = F.log_softmax(student.float() / t, dim=-1).reshape(-1, student.shape[-1])
    t_log = F.log_softmax(teacher.float() / t, dim=-1).reshape(-1, teacher.shape[-1])
    return F.kl_div(s_log, t_log, log_target=True, reduction="batchmean") * t * t


def soft_binary_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2`` x the mean binary cross-entropy of ``sigmoid(student / T)`` against ``sigmoid(teacher / T)``."""
    t = float(temperature)
    return F.binary_cross_entropy_with_logits(student.float() / t, torch.sigmoid(teacher.float() / t)) * t * t


def detection_distillation_loss(student: dict[str, Any], teacher: dict[str, Any], targets: Sequence[dict],
                                box_coder, temperature: float, iou_threshold: float = 0.5,
                                margin: float = 0.0) -> dict[str, torch.Tensor]:
    """SSDLite from an SSDLite teacher on the same default boxes, after Chen et al., NeurIPS 2017 ("Learning
    Efficient Object Detection Models with Knowledge Distillation"):

    * ``loss_soft``: ``T^2 KL(softmax(t / T) || softmax(s / T))`` over the classes (background included) of every
      default box, averaged over the boxes (their class-weighted cross-entropy without the background weight);
    * ``loss_bounded``: their teacher-bounded regression loss on the default boxes matched to ground truth:
      ``||s - y||^2`` where the student's L2 error exceeds the teacher's by more than ``margin`` (0 otherwise), in
      the box coder's encoding, summed over the matched boxes and divided by their number.

    Raises ``UserError`` when the teacher's default boxes are not the student's."""
    from ..detection.matcher import match_anchors

    anchors, t_anchors = student["anchors"], teacher["anchors"]
    if anchors.shape != t_anchors.shape or not torch.allclose(anchors.float(), t_anchors.float(), atol=1e-3):
        raise UserError(f"the teacher's default boxes ({tuple(t_anchors.shape[:1])}) are not the student's "
                        f"({tuple(anchors.shape[:1])}): train the teacher with the student's image_size and anchor "
                        "options")
    loss_soft = soft_cross_entropy(student["cls_logits"], teacher["cls_logits"], temperature)
    bounded = student["bbox_regression"].new_zeros((), dtype=torch.float32)
    matched_total = 0
    for i, target in enumerate(targets):
        boxes = target["boxes"].reshape(-1, 4).to(anchors)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[valid]
        matched = match_anchors(boxes, anchors, iou_threshold)
        pos = matched >= 0
        if not pos.any():
            continue
        y = box_coder.encode(boxes[matched[pos]], anchors[pos]).float()
        s_err = (student["bbox_regression"][i, pos].float() - y).pow(2).sum(-1)
        t_err = (teacher["bbox_regression"][i, pos].float() - y).pow(2).sum(-1)
        bounded = bounded + torch.where(s_err + margin > t_err, s_err, torch.zeros_like(s_err)).sum()
        matched_total += int(pos.sum())
    return {"loss_soft": loss_soft, "loss_bounded": bounded / max(1, matched_total)}


class DistillationMixin:
    """For a task with the hyper-parameters ``teacher``, ``teacher_weights``, ``teacher_image_size``,
    ``distill_temperature`` and ``distill_weight``: the teacher, loaded once per fit on the batch's device, and its
    outputs for a batch."""

    _teachers: list[Teacher]

    def init_distillation(self) -> None:
        hp = self.hparams
        check_distillation_options(hp.teacher, hp.teacher_weights, hp.distill_temperature, hp.distill_weight)
        self._teachers = []  # a plain list: the teacher is no submodule (not saved, not wrapped by DDP)

    def distillation_outputs(self) -> int:
        """How many outputs the teacher must have: the student's (its classifier's width; SSDLite: its classes)."""
        fc = getattr(self.model, "fc", None)
        return int(fc.out_features) if fc is not None else int(self.hparams.num_classes)

    @property
    def teacher(self) -> Teacher | None:
        hp = self.hparams
        if not hp.teacher:
            return None
        if not self._teachers:
            teacher = load_teacher(hp.teacher, hp.teacher_weights, type(self), hp.teacher_image_size,
                                   self.distillation_outputs())
            self.check_teacher(teacher)
            self._teachers.append(teacher)
        return self._teachers[0]

    def check_teacher(self, teacher: Teacher) -> None:
        """Raise ``UserError`` when ``teacher``'s outputs do not mean what the student's mean (a task's override:
        another cell partition, another label set)."""
        if teacher.task is None:
            return
        for name in ("class_names", "attribute_names", "category_names"):
            mine, theirs = self.hparams.get(name), teacher.task.hparams.get(name)
            if mine is not None and theirs is not None and list(mine) != list(theirs):
                raise UserError(f"teacher {teacher.source} was trained on {name} {list(theirs)[:5]}..., the student "
                                f"has {list(mine)[:5]}...")

    def teacher_outputs(self, images: torch.Tensor):
        """The teacher's outputs for the student's (normalized, augmented) ``images``."""
        teacher = self.teacher
        teacher.network.to(images.device)
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        mean, std = getattr(dm, "mean", IMAGENET_MEAN), getattr(dm, "std", IMAGENET_STD)
        return teacher(images, mean, std)

    def teacher_logits(self, images: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for ``images``, checked against the student's ``[B, K]``."""
        out = self.teacher_outputs(images)
        if out.shape != student.shape:
            raise UserError(f"teacher {self.hparams.teacher} gives outputs of shape {tuple(out.shape)}, the student "
                            f"{tuple(student.shape)}: the teacher must predict the student's classes")
        return out

    def mix(self, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        w = float(self.hparams.distill_weight)
        return (1.0 - w) * hard + w * soft
