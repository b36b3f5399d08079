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

from ..errors import UserError
from .adapters import adapter_for
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
      network's global pooling), the logits resized back bilinearly before the argmax;
    * attributes: ``probs`` [A] (one sigmoid per attribute) and the names of those ``present`` (probability >= 0.5).
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
            network, decoder = deployable(task, self.meta["mean"], self.meta["std"])
            self.network = network.to(self.device)
            self.decoder = decoder.to(self.device) if decoder is not None else None
        self.kind: str = self.meta["task"]
        self.image_size: tuple[int, int] = tuple(self.meta["image_size"])  # type: ignore[assignment]
        self.score_thresh = float(self.meta.get("score_thresh", 0.0) if score_thresh is None else score_thresh)
        self._transform = resize_for(self.meta)
        self.adapter = adapter_for(self.meta)
        self.names: list[str] = self.adapter.names

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
        (``(height, width)`` each: detections and masks are mapped back to them), by the task's adapter."""
        return self.adapter.results(self.outputs(batch), sizes, self.score_thresh)
