"""COCO box mAP evaluation: an accumulator around the official COCO API.

pycocotools (or faster-coco-eval's drop-in ``COCO``/``COCOeval_faster``) is used as a library:
``COCO.loadRes`` -> ``COCOeval.evaluate/accumulate/summarize``. Nothing of its matching logic is
re-implemented here; this module only converts predictions into the official results format,
restricts the evaluation to the right image ids, gathers predictions across DDP ranks and reads the
public outputs (``stats`` and ``eval['precision']``).

The ground truth (a file, a dict or a COCO object) is always read by
:func:`mobilevision.coco_format.read_coco`, as training reads it: annotation ids are renumbered 1..N
(the COCO API takes id 0 for "unmatched" and keeps one annotation of a repeated id, so exports that
number from 0 or merge files would silently score below 1.0 with perfect detections), ``area`` and
``iscrowd`` get their defaults (box area, 0), Roboflow's placeholder category is left out. Image and
category ids are the file's.

Prediction format accepted by :meth:`COCOEvaluator.update` (one dict per image)::

    {"image_id": int,               # COCO image id of the ground truth
     "boxes":  Tensor[N, 4],        # x1, y1, x2, y2 in ORIGINAL image pixels
     "scores": Tensor[N],
     "labels": Tensor[N]}           # contiguous labels 0..C-1

Boxes must be in the coordinate frame of the original image (``width``/``height`` of the COCO image
entry). A model that runs on resized inputs must map its boxes back first, e.g. with
:func:`scale_boxes`. Contiguous labels are mapped back to COCO category ids with
``label_to_category_id`` (default: the sorted category ids of the ground truth, which is the usual
contiguous mapping: label ``i`` <-> ``sorted(cat_ids)[i]``).

Return value of ``compute()``/``evaluate_results_file()``: the 12 ``COCOeval.stats`` under
``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` plus ``per_category``
{category name: AP@[.50:.95], area all, maxDets 100}.

Conventions for degenerate cases (these are COCOeval's own conventions):

* images were updated but there are no detections at all: COCOeval runs normally and gives ``0.0``
  for every metric whose area range contains ground truth, ``-1.0`` where it contains none;
* no image was updated (nothing to evaluate): every stat is ``-1.0`` and ``per_category`` is ``-1.0``
  for every category (COCOeval's "no ground truth" value); a warning is emitted;
* a category without ground truth in the evaluated images has ``per_category`` AP ``-1.0``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..coco_format import read_coco
from ..detection.postprocess import scale_boxes

__all__ = [
    "BACKENDS",
    "STAT_KEYS",
    "COCOEvaluator",
    "evaluate_results_file",
    "format_coco_summary",
    "load_coco_gt",
    "scale_boxes",
]

STAT_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS: tuple[str, ...] = ("pycocotools", "faster_coco_eval")

# (kind, IoU, area, maxDets) of the 12 stats, used only to print the standard COCO summary lines.
STAT_DESCRIPTIONS = (
    ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
    ("Average Precision", "(AP)", "0.50", "all", 100),
    ("Average Precision", "(AP)", "0.75", "all", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"unknown COCO backend {backend!r}; choose one of {BACKENDS}")
    if backend == "faster_coco_eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "backend='faster_coco_eval' needs the faster-coco-eval package "
                "(pip install 'mobilevision[fast-coco]')"
            ) from e
    return backend


def _read_json(path: str | os.PathLike, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {str(p)!r}")
    try:
        with open(p) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} file {str(p)!r} is not valid json: {e}") from e


def load_coco_gt(source: Any) -> dict:
    """The sanitized COCO ground-truth *dataset dict* of a path, a dict, or a COCO-like object.

    Read by :func:`mobilevision.coco_format.read_coco`, the reading training uses too: annotation ids
    renumbered 1..N (an id 0 or a repeated id would silently lower AP), ``area`` / ``iscrowd``
    defaulted, Roboflow's placeholder category left out. A COCO-like object is anything with a
    ``dataset`` dict attribute (``pycocotools.coco.COCO``, ``faster_coco_eval.COCO``). A missing file
    raises ``FileNotFoundError`` naming it, a malformed one ``ValueError``.
    """
    return read_coco(source)


def _format_ids(ids: Iterable[Any], limit: int = 10) -> str:
    ids = sorted(ids, key=lambda v: (str(type(v)), v))
    head = ", ".join(repr(i) for i in ids[:limit])
    return head + (f", ... ({len(ids)} in total)" if len(ids) > limit else "")


class _GroundTruth:
    """The sanitized ground truth, with one lazily built COCO object per backend (built once, reused)."""

    def __init__(self, source: Any):
        self.dataset = load_coco_gt(source)
        self._pycoco = None
        self._faster = None
        self.image_ids: list[int] = [img["id"] for img in self.dataset["images"]]
        self.image_id_set = set(self.image_ids)
        cats = sorted(self.dataset["categories"], key=lambda c: c["id"])
        self.category_ids: list[int] = [c["id"] for c in cats]
        self.category_id_set = set(self.category_ids)
        self.category_names: dict[int, str] = {c["id"]: c["name"] for c in cats}

    def coco(self, backend: str):
        if backend == "pycocotools":
            if self._pycoco is None:
                from pycocotools.coco import COCO

                gt = COCO()
                # Own copy: COCOeval annotates ground-truth dicts (e.g. 'ignore') in place.
                gt.dataset = copy.deepcopy(self.dataset)
                with contextlib.redirect_stdout(io.StringIO()):
                    gt.createIndex()
                self._pycoco = gt
            return self._pycoco
        if self._faster is None:
            from faster_coco_eval import COCO as FasterCOCO

            self._faster = FasterCOCO(copy.deepcopy(self.dataset))
        return self._faster


def _validate_results(results: list[dict], gt: _GroundTruth) -> None:
    """Results must be bbox results on known images and categories; else ValueError naming them."""
    if not isinstance(results, list):
        raise UserError(f"COCO results must be a list of detections, got {type(results).__name__}")
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
        if missing:
            raise UserError(f"detection #{i} has no {missing} field(s): {r!r}")
        if len(r["bbox"]) != 4:
            raise UserError(f"detection #{i} bbox must be [x, y, w, h], got {r['bbox']!r}")
    unknown_img = {r["image_id"] for r in results} - gt.image_id_set
    if unknown_img:
        raise UserError(f"results reference image ids not in the ground truth: {_format_ids(unknown_img)}")
    unknown_cat = {r["category_id"] for r in results} - gt.category_id_set
    if unknown_cat:
        raise UserError(f"results reference category ids not in the ground truth: {_format_ids(unknown_cat)}")


def _empty_stats(gt: _GroundTruth) -> dict:
    out: dict[str, Any] = {k: -1.0 for k in STAT_KEYS}
    out["per_category"] = {gt.category_names[c]: -1.0 for c in gt.category_ids}
    return out


def _run_cocoeval(gt: _GroundTruth, results: list[dict], image_ids: Sequence[int], backend: str, verbose: bool) -> dict:
    """loadRes + COCOeval(bbox) restricted to ``image_ids``; returns the 12 stats + per_category."""
    if len(image_ids) == 0:
        warnings.warn("COCO evaluation over zero images: every stat is -1", stacklevel=3)
        return _empty_stats(gt)
    results = [dict(r) for r in results]  # loadRes annotates the dicts in place
    coco_gt = gt.coco(backend)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if backend == "pycocotools":
            from pycocotools.cocoeval import COCOeval

            if results:
                coco_dt = coco_gt.loadRes(results)
            else:  # pycocotools' loadRes indexes results[0]; an empty result set is built directly
                from pycocotools.coco import COCO

                coco_dt = COCO()
                coco_dt.dataset = {
                    "images": list(coco_gt.dataset["images"]),
                    "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                    "annotations": [],
                }
                coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        else:
            from faster_coco_eval import COCOeval_faster

            coco_dt = coco_gt.loadRes(results)
            kwargs = {"print_function": print} if verbose else {}
            ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", **kwargs)
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in np.asarray(ev.stats).reshape(-1)[: len(STAT_KEYS)]]
    out: dict[str, Any] = dict(zip(STAT_KEYS, stats))

    # Per-category AP from the public accumulate() output: precision[T, R, K, A, M];
    # IoU .50:.95, all recall points, area 'all', maxDets 100 (the last); -1 = no ground truth.
    precision = np.asarray(ev.eval["precision"])
    area_all = list(ev.params.areaRngLbl).index("all")
    per_category: dict[str, float] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, area_all, -1]
        p = p[p > -1]
        per_category[gt.category_names[cat_id]] = float(p.mean()) if p.size else -1.0
    out["per_category"] = per_category
    return out


def format_coco_summary(stats: Mapping[str, float]) -> str:
    """The 12 stats as the standard COCO summary lines (what ``COCOeval.summarize`` prints)."""
    lines = []
    for key, (title, short, iou, area, max_dets) in zip(STAT_KEYS, STAT_DESCRIPTIONS):
        iou_str = f"{iou:<9}"
        lines.append(
            f" {title:<18} {short} @[ IoU={iou_str} | area={area:>6s} | maxDets={max_dets:>3d} ] = {stats[key]:0.3f}"
        )
    return "\n".join(lines)


def evaluate_results_file(
    annotations_path: str | os.PathLike,
    results_path: str | os.PathLike,
    backend: str = "pycocotools",
    image_ids: Iterable[int] | None = None,
    verbose: bool = False,
) -> dict:
    """Evaluate an existing COCO bbox results JSON against an annotation file.

    ``image_ids=None`` evaluates over *all* ground-truth images (the official protocol: an image
    without detections counts as all-missed). Unknown image/category ids in the results raise
    ``ValueError``; missing files raise ``FileNotFoundError``.
    """
    _check_backend(backend)
    gt = _GroundTruth(annotations_path)
    results = _read_json(results_path, "COCO results")
    _validate_results(results, gt)
    if image_ids is None:
        ids = gt.image_ids
    else:
        ids = [int(i) for i in image_ids]
        unknown = set(ids) - gt.image_id_set
        if unknown:
            raise UserError(f"image_ids not in the ground truth: {_format_ids(unknown)}")
    return _run_cocoeval(gt, results, ids, backend, verbose)


# ----------------------------------------------------------------------------------------------
# the accumulator
# ----------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _dist_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _dist_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class COCOEvaluator:
    """Accumulates per-image box predictions and computes COCO mAP with the official COCO API.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` ground truth (or any object with a ``dataset`` dict,
            a dataset dict, or the path to an annotation JSON); read by :func:`load_coco_gt`.
        label_to_category_id: contiguous label -> COCO category id, as a list (``lst[label]``) or
            a dict. ``None``: ``sorted(category ids of coco_gt)``.
        backend: ``"pycocotools"`` (reference) or ``"faster_coco_eval"`` (same numbers, faster).
        evaluate_all_images: ``False`` (default) evaluates only the images passed to
            :meth:`update` (so a partial run over a subset is scored on that subset); ``True``
            evaluates every ground-truth image, images never updated counting as all-missed.
        dist_sync: under ``torch.distributed`` with world size > 1, :meth:`compute`,
            :meth:`results` and :meth:`results_json` gather predictions from all ranks (collective
            calls: every rank must call them) and keep one entry per image id (the first by rank,
            so padding duplicates of ``DistributedSampler`` are dropped). The result equals a
            single-process run over the union of the images.
        verbose: let pycocotools print its progress and summary.

    Boxes given to :meth:`update` are xyxy in original image pixels (see :func:`scale_boxes`).
    An image id updated twice keeps its first predictions (counted in ``num_duplicates``).
    """

    def __init__(
        self,
        coco_gt: Any,
        label_to_category_id: Sequence[int] | Mapping[int, int] | None = None,
        backend: str = "pycocotools",
        evaluate_all_images: bool = False,
        dist_sync: bool = True,
        verbose: bool = False,
    ):
        self.backend = _check_backend(backend)
        self._gt = _GroundTruth(coco_gt)
        self.evaluate_all_images = bool(evaluate_all_images)
        self.dist_sync = bool(dist_sync)
        self.verbose = bool(verbose)
        self.label_to_category_id = self._build_label_map(label_to_category_id)
        self.reset()

    # -- mapping ---------------------------------------------------------------------------------
    def _build_label_map(self, mapping: Sequence[int] | Mapping[int, int] | None) -> dict[int, int]:
        if mapping is None:
            mapping = self._gt.category_ids
        if isinstance(mapping, Mapping):
            label_map = {int(k): int(v) for k, v in mapping.items()}
        else:
            label_map = {i: int(v) for i, v in enumerate(mapping)}
        unknown = set(label_map.values()) - self._gt.category_id_set
        if unknown:
            raise UserError(
                f"label_to_category_id maps to category ids not in the ground truth: {_format_ids(unknown)}"
            )
        return label_map

    @property
    def category_ids(self) -> list[int]:
        return list(self._gt.category_ids)

    @property
    def category_names(self) -> dict[int, str]:
        return dict(self._gt.category_names)

    # -- accumulation ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every prediction (start of a new evaluation)."""
        # image_id -> (xywh float64 [N, 4], scores float64 [N], category ids int64 [N])
        self._predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._local_duplicates = 0
        self.num_duplicates = 0  # repeated image ids dropped (all ranks, after gathering)
        self._gathered: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._last: dict | None = None

    def __len__(self) -> int:
        return len(self._predictions)

    def update(self, predictions: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        """Add predictions: one per-image dict or an iterable of them (see the module docstring)."""
        if isinstance(predictions, Mapping):
            predictions = [predictions]
        lut = self.label_to_category_id
        for pred in predictions:
            for key in ("image_id", "boxes", "scores", "labels"):
                if key not in pred:
                    raise UserError(f"prediction has no {key!r} entry (keys: {sorted(pred)})")
            image_id = int(_to_numpy(pred["image_id"]).reshape(-1)[0])
            if image_id not in self._gt.image_id_set:
                raise UserError(f"prediction for image id {image_id} which is not in the ground truth")
            boxes = _to_numpy(pred["boxes"]).astype(np.float64)
            if boxes.size == 0:
                boxes = boxes.reshape(0, 4)
            scores = _to_numpy(pred["scores"]).astype(np.float64).reshape(-1)
            labels_raw = _to_numpy(pred["labels"]).reshape(-1)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise UserError(f"image {image_id}: boxes must have shape [N, 4], got {boxes.shape}")
            n = boxes.shape[0]
            if scores.shape[0] != n or labels_raw.shape[0] != n:
                raise UserError(
                    f"image {image_id}: {n} boxes but {scores.shape[0]} scores and {labels_raw.shape[0]} labels"
                )
            if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
                raise UserError(f"image {image_id}: non-finite boxes or scores")
            if labels_raw.size and not np.array_equal(labels_raw, np.round(labels_raw)):
                raise UserError(f"image {image_id}: labels must be integers")
            labels = labels_raw.astype(np.int64)
            unknown = {int(v) for v in np.unique(labels)} - lut.keys()
            if unknown:
                raise UserError(
                    f"image {image_id}: labels {_format_ids(unknown)} have no entry in label_to_category_id "
                    f"(known labels: {min(lut)}..{max(lut)})"
                )
            if image_id in self._predictions:
                self._local_duplicates += 1
                continue
            cat_ids = np.array([lut[int(v)] for v in labels], dtype=np.int64)
            xywh = boxes.copy()
            xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
            self._predictions[image_id] = (xywh, scores.copy(), cat_ids)
        self._gathered = None
        self._last = None

    # -- gathering -------------------------------------------------------------------------------
    def _all_predictions(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._gathered is not None:
            return self._gathered
        if not self.dist_sync or _dist_world_size() == 1:
            merged = self._predictions
            self.num_duplicates = self._local_duplicates
        else:
            parts: list[Any] = [None] * _dist_world_size()
            torch.distributed.all_gather_object(parts, (self._predictions, self._local_duplicates))
            merged = {}
            dups = 0
            for part, part_dups in parts:  # rank order: the first rank's entry of an image wins
                dups += part_dups
                for image_id, value in part.items():
                    if image_id in merged:
                        dups += 1
                    else:
                        merged[image_id] = value
            self.num_duplicates = dups
        self._gathered = merged
        return merged

    def results(self) -> list[dict]:
        """All predictions (gathered under DDP) in the official COCO results format."""
        out = []
        preds = self._all_predictions()
        for image_id in sorted(preds):
            xywh, scores, cat_ids = preds[image_id]
            for box, score, cat in zip(xywh.tolist(), scores.tolist(), cat_ids.tolist()):
                out.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": score})
        return out

    def results_json(self, path: str | os.PathLike) -> Path | None:
        """Write :meth:`results` as a COCO results JSON (only rank 0 writes under DDP).

        Full float precision is kept, so evaluating the file reproduces :meth:`compute`.
        Returns the path on the writing rank, ``None`` on the others.
        """
        results = self.results()
        if self.dist_sync and _dist_rank() != 0:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f)
        return path

    # -- evaluation ------------------------------------------------------------------------------
    def compute(self) -> dict:
        """Run COCOeval and return the 12 stats plus ``per_category`` (see the module docstring)."""
        preds = self._all_predictions()
        if self.num_duplicates:
            warnings.warn(
                f"{self.num_duplicates} repeated image id(s) were dropped (first kept); expected with "
                "DistributedSampler padding",
                stacklevel=2,
            )
        image_ids = self._gt.image_ids if self.evaluate_all_images else sorted(preds)
        self._last = _run_cocoeval(self._gt, self.results(), image_ids, self.backend, self.verbose)
        return copy.deepcopy(self._last)

    def summary_table(self, per_category: bool = False) -> str:
        """COCO summary lines of the last :meth:`compute` (computed now if needed)."""
        stats = self._last if self._last is not None else self.compute()
        text = format_coco_summary(stats)
        if per_category:
            width = max((len(n) for n in stats["per_category"]), default=8)
            rows = [f" {name:<{width}}  {ap:0.3f}" for name, ap in stats["per_category"].items()]
            text += "\n Per-category AP @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]\n" + "\n".join(rows)
        return text
