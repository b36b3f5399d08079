"""What a trained task becomes on a device: a network that takes float32 NCHW RGB in [0, 1] at the training
resolution (normalization inside), for detection followed by the box decoder, and the metadata that makes the
result self-describing (task, input size and preprocessing, class names, category ids, cell locations).

The same torch modules are what :func:`~mobilevision.deploy.export_onnx` exports and what
:class:`~mobilevision.deploy.Predictor` runs for a checkpoint, so a checkpoint and its ONNX file give the same
predictions by construction (and the tests check that ONNX Runtime agrees).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn
from torchvision.ops import clip_boxes_to_image

from ..imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..detection import BoxCoder
from ..tasks import AttributesTask, ClassificationTask, DetectionTask, GeolocalizationTask, SegmentationTask
from ..tasks.checkpoint import load_checkpoint, load_task
from .adapters import ADAPTERS

__all__ = ["DecodedNetwork", "Deployable", "DetectionDecoder", "NormalizedNetwork", "TASK_CLASSES", "deployable", "load_any_task", "metadata_of",
           "static_metadata", "task_kind"]

FORMAT_VERSION = 1

#: task kind (as written in the metadata and the output files) -> LightningModule class
TASK_CLASSES = {"detection": DetectionTask, "classification": ClassificationTask,
                "geolocalization": GeolocalizationTask, "segmentation": SegmentationTask, "attributes": AttributesTask}


def task_kind(task: nn.Module) -> str:
    for kind, cls in TASK_CLASSES.items():
        if isinstance(task, cls):
            return kind
    raise TypeError(f"not a mobilevision task: {type(task).__name__}")


def load_any_task(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The task of any mobilevision checkpoint (its class read from the checkpoint), in eval mode, and the
    checkpoint dict; loaded with ``weights_only=True``."""
    ckpt = load_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    class_name = str(hp.get("_class_path", "")).rsplit(".", 1)[-1]
    by_name = {cls.__name__: cls for cls in TASK_CLASSES.values()}
    if class_name in by_name:
        cls = by_name[class_name]
    elif "num_attributes" in hp:
        cls = AttributesTask
    elif "num_cells" in hp or "cell_location" in hp:  # checkpoints written without LightningCLI
        cls = GeolocalizationTask
    elif "output_stride" in hp and "head" in hp:
        cls = SegmentationTask
    elif "min_ratio" in hp or "label_to_category_id" in hp:
        cls = DetectionTask
    else:
        cls = ClassificationTask
    return load_task(path, cls)


class NormalizedNetwork(nn.Module):
    """``images`` float32 [B, 3, H, W] RGB in [0, 1] -> the network's raw outputs: logits [B, C]
    (classification, geolocalization cells), [B, C, H, W] (segmentation) or ``(cls_logits [B, A, C + 1],
    bbox_regression [B, A, 4])``."""

    def __init__(self, network: nn.Module, detection: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.network, self.detection = network, detection
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = (images - self.mean) / self.std
        if not self.detection:
            return self.network(x)
        out = self.network(x)
        return out["cls_logits"], out["bbox_regression"]


class DetectionDecoder(nn.Module):
    """``(cls_logits, bbox_regression)`` -> ``boxes`` [B, A, 4] xyxy input pixels (clipped to the input) and
    ``scores`` [B, A, C] (softmax without the background): everything of SSD's post-processing except the
    selection (:func:`~mobilevision.detection.postprocess.select_detections`, or NMS inside an exported graph)."""

    def __init__(self, anchors: torch.Tensor, image_size: tuple[int, int], box_coder: BoxCoder) -> None:
        super().__init__()
        self.register_buffer("anchors", anchors.float())
        self.image_size, self.box_coder = tuple(image_size), box_coder

    def forward(self, cls_logits: torch.Tensor, bbox_regression: torch.Tensor):
        scores = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]
        boxes = self.box_coder.decode(bbox_regression.float(), self.anchors)
        return clip_boxes_to_image(boxes, self.image_size), scores


class DecodedNetwork(nn.Module):
    """``decoder(*network(images))``: a deployable detector end to end, ``images`` -> ``(boxes, scores)``, as one
    module (one program for the exporters that write one)."""

    def __init__(self, network: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.network, self.decoder = network, decoder

    def forward(self, images: torch.Tensor):
        return self.decoder(*self.network(images))


def _square(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


class Deployable(NamedTuple):
    """What an export traces: the network behind its normalization, and for detection the box decoder (None for the
    other tasks). Unpacks as ``network, decoder = deployable(task)``."""

    network: "NormalizedNetwork"
    decoder: "DetectionDecoder | None"


def deployable(task: nn.Module, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> Deployable:
    """The eval-mode network of ``task`` (MobileOne folded) behind normalization by ``mean`` / ``std`` (those it
    was trained with: ``metadata_of(task, ckpt)["mean"]`` / ``["std"]``), and for detection the decoder at the
    training resolution. Copies: the task is left as it is."""
    kind = task_kind(task)
    network = task.export_model() if hasattr(task, "export_model") else task.model
    # weights in the standard layout: a task trained with channels_last keeps its weights so, which exporters (XNNPACK's
    # layout pass, Core ML) do not take
    network = network.float().to(memory_format=torch.contiguous_format).eval()
    net = NormalizedNetwork(network, detection=kind == "detection", mean=mean, std=std).eval()
    if kind != "detection":
        return Deployable(net, None)
    size = _square(task.hparams.image_size)
    anchors = network.anchors_for(size).cpu()
    return Deployable(net, DetectionDecoder(anchors, size, network.box_coder).eval())


def metadata_of(task: nn.Module, ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
    """What prediction needs besides the network: written into ONNX files as JSON (key ``mobilevision``)."""
    kind, hp = task_kind(task), task.hparams
    data_hp = (ckpt or {}).get("datamodule_hyper_parameters") or {}
    size = _square(hp.image_size)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "task": kind, "backbone": hp.backbone, "image_size": list(size),
        "input": "float32 NCHW RGB in [0, 1]; normalization is inside the model",
        # the normalization the data module trained with (None or absent: ImageNet's)
        "mean": [float(m) for m in data_hp.get("mean") or IMAGENET_MEAN],
        "std": [float(v) for v in data_hp.get("std") or IMAGENET_STD],
    }
    meta.update(ADAPTERS[kind].metadata(task, data_hp))
    return meta


def static_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` for a file with a static input shape (ExecuTorch, Core ML): a segmentation model, which validates at
    any image size, takes the training resolution instead (the image fitted and padded, ``"longer_side_pad"``)."""
    meta = dict(meta)
    if meta.pop("input_size", None) == "dynamic":
        meta["preprocess"] = {"resize": "longer_side_pad"}
    return meta
