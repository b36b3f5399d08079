"""One adapter per task: what deployment does differently for detection, classification, geolocalization,
segmentation and attributes, in one class each. The metadata a model file carries, the results a prediction gives, the validation
data of a checkpoint, the metrics an exported file is scored with and the figures a command prints all come from the
adapter of the model's task (``ADAPTERS[meta["task"]]``); a new task is one more class here (and its writer in
``mobilevision predict``).

Running a model needs only :meth:`TaskAdapter.results`, which uses torch and numpy alone; the other methods import the
task, data and evaluation modules when called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..detection.postprocess import scale_boxes, select_detections
from ..geo.distance import locations_from_logits
from ..imagenet import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION
from .preprocess import letterbox_shape

__all__ = ["ADAPTERS", "AttributesAdapter", "ClassificationAdapter", "DetectionAdapter", "GeolocalizationAdapter",
           "SegmentationAdapter", "TaskAdapter", "adapter_for"]


class TaskAdapter(ABC):
    """The deployment side of one task. ``meta``: the model's metadata (:func:`~mobilevision.deploy.metadata_of`)."""

    kind = ""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.names: list[str] = list(meta.get("class_names") or [])
        self.image_size: tuple[int, int] = tuple(meta["image_size"])  # type: ignore[assignment]

    def name(self, label: int) -> str:
        return self.names[int(label)] if int(label) < len(self.names) else str(int(label))

    # -- the model file -------------------------------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def metadata(task, data_hp: dict[str, Any]) -> dict[str, Any]:
        """The task's part of the metadata (preprocessing, outputs, classes, ...)."""
        ...

    # -- prediction -----------------------------------------------------------------------------------------------
    @abstractmethod
    def results(self, outputs: dict[str, torch.Tensor], sizes: Sequence[tuple[int, int]],
                score_thresh: float) -> list[dict[str, Any]]:
        """One result dict per image of a batch (``outputs``: the model's named outputs; ``sizes``: each image's
        original (height, width))."""
        ...

    # -- scoring on the validation data ---------------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def datamodule(task, args: dict[str, Any]):
        """The task's data module built from a checkpoint's data arguments (not set up)."""
        ...

    @abstractmethod
    def metrics(self, dm):
        ...

    @abstractmethod
    def update(self, metrics, predictor, batch, images: np.ndarray) -> None:
        """Predict one validation batch (``images``: the loader's images back in [0, 1]) and update ``metrics``."""
        ...

    @abstractmethod
    def summarize(self, metrics) -> dict[str, Any]:
        ...

    @staticmethod
    @abstractmethod
    def headline(stats: dict[str, Any]) -> dict[str, float]:
        """The figures a command prints for a scored model."""
        ...


class DetectionAdapter(TaskAdapter):
    kind = "detection"

    @staticmethod
    def metadata(task, data_hp):
        hp, net = task.hparams, task.model
        return dict(
            preprocess={"resize": "square"},
            class_names=list(hp.category_names) if hp.category_names else [str(i) for i in range(hp.num_classes)],
            label_to_category_id=list(hp.label_to_category_id) if hp.label_to_category_id else None,
            outputs=["boxes", "scores"], score_thresh=float(net.score_thresh), nms_thresh=float(net.nms_thresh),
            topk_candidates=int(net.topk_candidates), detections_per_img=int(net.detections_per_img))

    def results(self, outputs, sizes, score_thresh):
        m = self.meta
        if "detections" in outputs:  # NMS inside the graph: fixed-size rows, the first num_detections valid
            dets = []
            for rows, n in zip(outputs["detections"], outputs["num_detections"]):
                rows = rows[: int(n)]
                rows = rows[rows[:, 4] > score_thresh]
                dets.append({"boxes": rows[:, :4], "scores": rows[:, 4], "labels": rows[:, 5].round().long()})
        else:
            dets = select_detections(outputs["boxes"], outputs["scores"], score_thresh, m["topk_candidates"],
                                     m["nms_thresh"], m["detections_per_img"])
        lut = m.get("label_to_category_id")
        results = []
        for det, (h, w) in zip(dets, sizes):
            labels = det["labels"].numpy()
            results.append({
                "boxes": scale_boxes(det["boxes"], self.image_size, (h, w), clip=True).numpy(),
                "scores": det["scores"].numpy(), "labels": labels,
                "category_ids": np.asarray([lut[i] for i in labels] if lut else labels, dtype=np.int64),
                "names": [self.name(i) for i in labels]})
        return results

    @staticmethod
    def datamodule(task, args):
        from ..data.detection_datamodule import CocoDetectionDataModule

        dm = CocoDetectionDataModule(**args)
        if task.hparams.label_to_category_id:
            dm.use_categories(list(task.hparams.label_to_category_id), task.hparams.category_names)
        return dm

    def metrics(self, dm):
        from ..evaluation.coco_map import COCOEvaluator

        return COCOEvaluator(dm.val_coco, label_to_category_id=list(dm.label_to_category_id))

    def update(self, metrics, predictor, batch, images):
        targets = batch[1]
        sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        results = predictor.run(images, sizes)
        metrics.update([{"image_id": int(t["image_id"]), "boxes": torch.as_tensor(r["boxes"]),
                         "scores": torch.as_tensor(r["scores"]), "labels": torch.as_tensor(r["labels"])}
                        for t, r in zip(targets, results)])

    def summarize(self, metrics):
        return metrics.compute()

    @staticmethod
    def headline(stats):
        return {"AP": stats["AP"], "AP50": stats["AP50"]}


class _CenterCropAdapter(TaskAdapter):
    """Classification and geolocalization: one image, one logits vector, validated center-cropped."""

    @staticmethod
    def _crop_metadata(data_hp, names: Sequence[str] | None = None, count: int | None = None) -> dict[str, Any]:
        """The center-crop preprocessing of the data options, and with ``count`` the output names (``names``, or
        "0", "1", ... without)."""
        ratio = float(data_hp.get("resize_ratio") or DEFAULT_CROP_PCT)
        interpolation = data_hp.get("interpolation") or DEFAULT_INTERPOLATION
        meta: dict[str, Any] = {"preprocess": {"resize": "short_side_center_crop", "resize_ratio": ratio,
                                               "interpolation": interpolation}, "outputs": ["logits"]}
        if count is not None:
            meta["class_names"] = list(names) if names else [str(i) for i in range(count)]
        return meta


class ClassificationAdapter(_CenterCropAdapter):
    kind = "classification"

    @staticmethod
    def metadata(task, data_hp):
        return ClassificationAdapter._crop_metadata(data_hp, task.hparams.class_names, task.hparams.num_classes)

    def results(self, outputs, sizes, score_thresh):
        probs = outputs["logits"].float().softmax(dim=1)
        k = min(5, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        results = []
        for p, ps, idx in zip(probs, top_p, top_i):
            top = [(int(i), self.name(i), float(s)) for i, s in zip(idx, ps)]
            results.append({"probs": p.numpy(), "label": top[0][0], "name": top[0][1], "score": top[0][2],
                            "top5": top})
        return results

    @staticmethod
    def datamodule(task, args):
        from ..data.classification import ClassificationDataModule

        return ClassificationDataModule(**args)

    def metrics(self, dm):
        from ..evaluation.classification import classification_metrics

        return classification_metrics(len(self.names))

    def update(self, metrics, predictor, batch, images):
        results = predictor.run(images, [images.shape[-2:]] * len(images))
        metrics.update(torch.from_numpy(np.stack([r["probs"] for r in results])), batch[1])

    def summarize(self, metrics):
        from ..evaluation.classification import summarize_metrics

        return summarize_metrics(metrics.compute(), self.names)

    @staticmethod
    def headline(stats):
        return {"top1": stats["acc1"], "top5": stats["acc5"]}


class AttributesAdapter(_CenterCropAdapter):
    """Multi-label attributes: one logit per attribute, a sigmoid each."""

    kind = "attributes"

    @staticmethod
    def metadata(task, data_hp):
        return AttributesAdapter._crop_metadata(data_hp, task.hparams.attribute_names, task.hparams.num_attributes)

    def results(self, outputs, sizes, score_thresh):
        probs = outputs["logits"].float().sigmoid()
        return [{"probs": p.numpy(), "present": [self.name(i) for i, v in enumerate(p) if v >= 0.5]}
                for p in probs]

    @staticmethod
    def datamodule(task, args):
        from ..data.attributes import AttributesDataModule

        return AttributesDataModule(**args)

    def metrics(self, dm):
        from ..evaluation.attributes import AttributeMetrics

        return AttributeMetrics(self.names)

    update = ClassificationAdapter.update  # the probabilities against the batch's labels

    def summarize(self, metrics):
        return metrics.compute()

    @staticmethod
    def headline(stats):
        return {"mAP": stats["mean_ap"], "acc@0.5": stats["mean_acc_at_0.5"]}


class GeolocalizationAdapter(_CenterCropAdapter):
    kind = "geolocalization"

    def __init__(self, meta):
        super().__init__(meta)
        self.locations = torch.tensor(meta["cell_locations"], dtype=torch.float64)

    @staticmethod
    def metadata(task, data_hp):
        hp = task.hparams
        meta = GeolocalizationAdapter._crop_metadata(data_hp)
        meta.update(cell_tokens=list(task.partition.tokens), cell_location=hp.cell_location,
                    cell_locations=task.cell_locations().tolist(), predict=hp.predict, top_k=int(hp.top_k))
        return meta

    def results(self, outputs, sizes, score_thresh):
        m, logits = self.meta, outputs["logits"]
        pred = locations_from_logits(logits, self.locations, m["predict"], m["top_k"])
        prob, cell = logits.float().softmax(dim=1).max(dim=1)
        tokens = m["cell_tokens"]
        return [{"latitude": float(lat), "longitude": float(lon), "cell": int(c), "cell_token": tokens[int(c)],
                 "prob": float(p)} for (lat, lon), c, p in zip(pred.tolist(), cell, prob)]

    @staticmethod
    def datamodule(task, args):
        from ..data.geolocalization import GeolocalizationDataModule

        dm = GeolocalizationDataModule(**args)
        dm.use_partition(task.partition)
        return dm

    def metrics(self, dm):
        from ..evaluation.geolocalization import GeoAccuracy

        return GeoAccuracy()

    def update(self, metrics, predictor, batch, images):
        results = predictor.run(images, [images.shape[-2:]] * len(images))
        coords = batch[2]
        metrics.update(torch.tensor([r["latitude"] for r in results], dtype=torch.float64),
                       torch.tensor([r["longitude"] for r in results], dtype=torch.float64),
                       coords[:, 0], coords[:, 1])

    def summarize(self, metrics):
        return {k: float(v) for k, v in metrics.compute().items()}

    @staticmethod
    def headline(stats):
        return {"acc_750km": stats["acc_750km"], "acc_2500km": stats["acc_2500km"], "median_km": stats["median_km"]}


class SegmentationAdapter(TaskAdapter):
    kind = "segmentation"

    @staticmethod
    def metadata(task, data_hp):
        hp = task.hparams
        eval_size = data_hp.get("eval_size")  # the validation protocol: any size, shorter side to eval_size
        return dict(preprocess={"resize": "short_side", "eval_size": None if eval_size is None else int(eval_size)},
                    input_size="dynamic", outputs=["logits"], ignore_index=int(hp.ignore_index),
                    class_names=list(hp.class_names) if hp.class_names else [str(i) for i in range(hp.num_classes)])

    def results(self, outputs, sizes, score_thresh):
        logits = outputs["logits"]
        results = []
        dtype = np.uint8 if logits.shape[1] <= 256 else np.int64
        padded = self.meta["preprocess"]["resize"] == "longer_side_pad"
        for scores, (h, w) in zip(logits, sizes):
            nh, nw = letterbox_shape(h, w, self.image_size) if padded else scores.shape[-2:]
            scores = scores[:, :nh, :nw].float()
            if (nh, nw) != (h, w):
                scores = F.interpolate(scores[None], size=(int(h), int(w)), mode="bilinear", align_corners=False)[0]
            mask = scores.argmax(dim=0).numpy().astype(dtype)
            counts = np.bincount(mask.ravel(), minlength=scores.shape[0]) / mask.size
            results.append({"mask": mask, "fractions": {self.name(i): float(f) for i, f in enumerate(counts) if f}})
        return results

    @staticmethod
    def datamodule(task, args):
        from ..data.segmentation import SegmentationDataModule

        return SegmentationDataModule(**args)

    def metrics(self, dm):
        from ..evaluation.segmentation import segmentation_metrics

        return segmentation_metrics(len(self.names), self.meta["ignore_index"])

    def update(self, metrics, predictor, batch, images):
        for image, t in zip(images, batch[1]):
            h, w = (int(v) for v in t["input_size"])
            if self.meta["preprocess"]["resize"] == "short_side":
                # the loader's input is what the predictor's preprocessing gives (the same transform): each
                # image's unpadded part, masks mapped to the original labels' size as validation maps them
                result = predictor.run(np.ascontiguousarray(image[None, :, :h, :w]), [tuple(t["mask"].shape)])[0]
            else:  # a fixed-size file: the image as 8-bit RGB through its letterbox
                rgb = np.clip(np.rint(image[:, :h, :w].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
                result = predictor([rgb])[0]
            mask = torch.from_numpy(result["mask"].astype(np.int64))
            if tuple(mask.shape) != tuple(t["mask"].shape):
                mask = F.interpolate(mask[None, None].float(), size=tuple(t["mask"].shape),
                                     mode="nearest")[0, 0].long()
            metrics.update(mask[None], t["mask"][None])

    def summarize(self, metrics):
        from ..evaluation.segmentation import summarize_confusion

        return summarize_confusion(metrics.compute(), self.names)

    @staticmethod
    def headline(stats):
        return {"mIoU": stats["miou"], "pixel_acc": stats["pixel_acc"]}


#: task kind (as written in the metadata) -> its adapter
ADAPTERS: dict[str, type[TaskAdapter]] = {a.kind: a for a in (DetectionAdapter, ClassificationAdapter,
                                                              GeolocalizationAdapter, SegmentationAdapter,
                                                              AttributesAdapter)}


def adapter_for(meta: dict[str, Any]) -> TaskAdapter:
    """The adapter of a model's metadata."""
    from ..errors import UserError

    if meta.get("task") not in ADAPTERS:
        raise UserError(f"unknown task {meta.get('task')!r} in the model's metadata; tasks: {', '.join(ADAPTERS)}")
    return ADAPTERS[meta["task"]](meta)
