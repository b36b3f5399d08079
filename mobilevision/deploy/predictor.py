"""Predictions of a checkpoint or of an exported file on decoded images, with one preprocessing and one
postprocessing for all: the runtimes (torch, ONNX Runtime, ExecuTorch) differ only in what computes the network's
outputs.

    predictor = Predictor("model.pte")           # .onnx, .pte, or a .ckpt (torch, on --device)
    results = predictor([rgb_uint8_image, ...])  # one dict per image, in the image's own pixels
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..detection.postprocess import scale_boxes, select_detections
from ..errors import UserError
from ..geo.distance import locations_from_logits
from .formats import FORMATS, load_exported
from .preprocess import letterbox, letterbox_shape, resize_for

__all__ = ["Predictor", "letterbox", "letterbox_shape", "resize_for"]


class Predictor:
    """Run a mobilevision checkpoint (``.ckpt``, torch on ``device``) or exported file (``.onnx`` under ONNX Runtime,
    ``.pte`` under ExecuTorch) on images. A file with a fixed batch size gets batches of exactly that size (the
    last one padded), whatever the caller passes.

    ``predictor(images)`` takes RGB uint8 HxWx3 arrays of any size and returns one dict per image:

    * detection: ``boxes`` [D, 4] xyxy in the image's pixels, ``scores`` [D], ``labels`` [D] (0-based),
      ``category_ids`` [D] (the dataset's ids) and ``names``; ``score_thresh`` overrides the model's threshold
      (an ONNX file exported with ``--nms`` has its threshold inside: a lower value cannot be applied there);
    * classification: ``probs`` [C], ``label``, ``name``, ``score`` and the ``top5`` (label, name, score);
    * geolocalization: ``latitude``, ``longitude`` (the checkpoint's rule: best cell or top-k mean), the best
      ``cell`` (index and S2 ``cell_token``) and its ``prob``;
    * segmentation: ``mask``, the label map [H, W] at the image's own size (uint8 up to 256 classes), and
      ``fractions``, each class's share of the pixels. As validation scores: the image at its own size and aspect
      (shorter side resized to the data's ``eval_size`` when it had one), each image alone (no padding reaches the
      network's global pooling), the logits resized back bilinearly before the argmax.
    """

    def __init__(self, model: str | os.PathLike, device: str = "cpu", score_thresh: float | None = None,
                 threads: int | None = None) -> None:
        path = Path(model)
        if not path.exists():  # a file, or a package folder (.mlpackage)
            raise FileNotFoundError(f"model {path} does not exist")
        self.path, self.device = path, torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available on this machine")
        if path.suffix.lower() in {f.suffix for f in FORMATS.values()}:
            onnx = path.suffix.lower() == ".onnx"
            if not onnx and self.device.type != "cpu":
                raise UserError(f"--device {device}: {path.suffix} files run on the CPU here (XNNPACK kernels)")
            self.exported = load_exported(path, threads=threads, providers=self._onnx_providers() if onnx else None)
            self.meta = self.exported.meta
            self.network = self.decoder = None
        else:
            from .graph import deployable, load_any_task, metadata_of  # torch inference: the tasks and Lightning

            self.exported = None
            task, ckpt = load_any_task(path)
            self.meta = metadata_of(task, ckpt)
            network, decoder = deployable(task)
            self.network = network.to(self.device)
            self.decoder = decoder.to(self.device) if decoder is not None else None
        self.kind: str = self.meta["task"]
        self.image_size: tuple[int, int] = tuple(self.meta["image_size"])  # type: ignore[assignment]
        self.score_thresh = float(self.meta.get("score_thresh", 0.0) if score_thresh is None else score_thresh)
        self._transform = resize_for(self.meta)
        self.names: list[str] = list(self.meta.get("class_names") or [])
        self._locations = (torch.tensor(self.meta["cell_locations"], dtype=torch.float64)
                           if self.kind == "geolocalization" else None)

    def _onnx_providers(self) -> list | None:
        """ONNX Runtime's execution providers for ``self.device`` (None: CPU)."""
        if self.device.type != "cuda":
            return None
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError(f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider "
                             "(install onnxruntime-gpu), or run the ONNX file with --device cpu")
        return [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]

    @property
    def runtime(self) -> str:
        if self.exported is None:
            return f"torch ({self.device})"
        if hasattr(self.exported, "session"):
            return f"onnxruntime ({self.exported.session.get_providers()[0]})"
        return "executorch (XNNPACK)"

    # -- steps ----------------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> float32 3xHxW in [0, 1] at the model's input size (as the validation pipeline)."""
        image = self._transform(image)
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0

    @torch.no_grad()
    def outputs(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
        """The model's outputs for a preprocessed batch [B, 3, H, W] (as named in the exported file), on the CPU."""
        if self.exported is not None:
            size = self.exported.batch
            if size is None or len(batch) == size:
                return {k: torch.from_numpy(v) for k, v in self.exported(batch).items()}
            parts = []
            for start in range(0, len(batch), size):  # a fixed-batch file: chunks of its size, the last one padded
                part = batch[start:start + size]
                n = len(part)
                if n < size:
                    part = np.concatenate([part, np.zeros((size - n, *part.shape[1:]), part.dtype)])
                parts.append({k: v[:n] for k, v in self.exported(part).items()})
            return {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
        x = torch.from_numpy(batch).to(self.device)
        raw = self.network(x)
        if self.decoder is None:
            return {"logits": raw.float().cpu()}
        boxes, scores = self.decoder(*raw)
        return {"boxes": boxes.cpu(), "scores": scores.cpu()}

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        if not len(images):
            return []
        inputs = [self.preprocess(img) for img in images]
        sizes = [img.shape[:2] for img in images]
        results: list[dict[str, Any] | None] = [None] * len(images)
        shapes = [x.shape for x in inputs]
        for shape in dict.fromkeys(shapes):  # one batch per input size (segmentation keeps each image's own size)
            idx = [i for i, s in enumerate(shapes) if s == shape]
            for i, result in zip(idx, self.run(np.stack([inputs[i] for i in idx]), [sizes[i] for i in idx])):
                results[i] = result
        return results  # type: ignore[return-value]

    def run(self, batch: np.ndarray, sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """Predictions for a preprocessed batch [B, 3, H, W] of images whose original sizes are ``sizes``
        (``(height, width)`` each: detections and masks are mapped back to them)."""
        out = self.outputs(batch)
        if self.kind == "detection":
            return self._detections(out, sizes)
        if self.kind == "classification":
            return self._classes(out["logits"])
        if self.kind == "segmentation":
            return self._masks(out["logits"], sizes)
        return self._locations_of(out["logits"])

    # -- postprocessing -------------------------------------------------------------------------------
    def _detections(self, out: dict[str, torch.Tensor], sizes) -> list[dict[str, Any]]:
        m = self.meta
        if "detections" in out:  # NMS inside the graph: fixed-size rows, the first num_detections valid
            dets = []
            for rows, n in zip(out["detections"], out["num_detections"]):
                rows = rows[: int(n)]
                rows = rows[rows[:, 4] > self.score_thresh]
                dets.append({"boxes": rows[:, :4], "scores": rows[:, 4], "labels": rows[:, 5].round().long()})
        else:
            dets = select_detections(out["boxes"], out["scores"], self.score_thresh, m["topk_candidates"],
                                     m["nms_thresh"], m["detections_per_img"])
        lut = m.get("label_to_category_id")
        results = []
        for det, (h, w) in zip(dets, sizes):
            labels = det["labels"].numpy()
            results.append({
                "boxes": scale_boxes(det["boxes"], self.image_size, (h, w), clip=True).numpy(),
                "scores": det["scores"].numpy(), "labels": labels,
                "category_ids": np.asarray([lut[i] for i in labels] if lut else labels, dtype=np.int64),
                "names": [self._name(i) for i in labels]})
        return results

    def _name(self, label: int) -> str:
        return self.names[int(label)] if int(label) < len(self.names) else str(int(label))

    def _classes(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        probs = logits.float().softmax(dim=1)
        k = min(5, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        results = []
        for p, ps, idx in zip(probs, top_p, top_i):
            top = [(int(i), self._name(i), float(s)) for i, s in zip(idx, ps)]
            results.append({"probs": p.numpy(), "label": top[0][0], "name": top[0][1], "score": top[0][2],
                            "top5": top})
        return results

    def _masks(self, logits: torch.Tensor, sizes) -> list[dict[str, Any]]:
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
            results.append({"mask": mask, "fractions": {self._name(i): float(f) for i, f in enumerate(counts) if f}})
        return results

    def _locations_of(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        m = self.meta
        pred = locations_from_logits(logits, self._locations, m["predict"], m["top_k"])
        prob, cell = logits.float().softmax(dim=1).max(dim=1)
        tokens = m["cell_tokens"]
        return [{"latitude": float(lat), "longitude": float(lon), "cell": int(c), "cell_token": tokens[int(c)],
                 "prob": float(p)} for (lat, lon), c, p in zip(pred.tolist(), cell, prob)]
