"""``mobilevision predict``: run a checkpoint or an ONNX file on images, folders, glob patterns and videos.

    mobilevision predict --model CKPT_OR_ONNX --source PATH [PATH ...] --output DIR [--batch-size 8]
                         [--score-thresh 0.25] [--vid-stride 1] [--device cpu|cuda[:N]] [--threads N] [--quiet]

Sources (:mod:`mobilevision.data.sources`): image files, folders (recursive; hidden files and folders skipped),
glob patterns (quote them: expanded here, ``**`` included) and videos (OpenCV, streamed; ``--vid-stride K`` keeps
frames 0, K, 2K, ...). Each file is known by its path relative to the folder (or fixed part of the pattern) it was
found under. What is written under ``DIR`` depends on the model's task:

* detection: ``predictions.json``, COCO results (``image_id``, ``category_id`` the dataset's id, ``bbox`` [x, y, w,
  h] in the original image's pixels, ``score``) plus ``file_name``, ``category_name`` and for video frames
  ``frame``; image ids are 1, 2, ... in source order (one per image or kept frame), or with ``--annotations GT.json``
  the ids of the user's COCO file (images matched by file name, categories by name), so that
  ``mobilevision eval coco --annotations GT.json --results DIR/predictions.json`` scores them. ``images.json``: those ids
  with ``file_name``, ``width``, ``height`` (displayed orientation) and ``frame``, and the categories: a COCO
  skeleton for ``COCO().loadRes``. The drawn images under ``DIR/images/<name>``, a drawn video as
  ``DIR/<name without extension>_pred.mp4`` (mp4v, at the kept frames' rate; where two sources differ only in their
  extension, such as ``clip.mp4`` and ``clip.avi``, each keeps its extension: ``clip.mp4_pred.mp4``). Only detections scoring at least
  ``--score-thresh`` (default 0.25) are written and drawn;
* classification: ``predictions.csv`` with ``file,frame,label,score,top1,top1_score,...,top5,top5_score`` (class
  names; ``frame`` empty for images);
* geolocalization: ``predictions.csv`` with ``image_id,latitude,longitude,cell,prob,frame`` (``image_id`` the file's
  name, ``name#frame`` for a video frame; ``cell`` the S2 token of the best cell and ``prob`` its probability),
  readable by ``mobilevision eval geolocalization --predictions``, and ``map.png``, the predicted points;
* segmentation: ``masks/<name without extension>.png`` (``x.jpg`` and ``x.png`` side by side: ``masks/x.jpg.png`` and
  ``masks/x.png.png``), the label map at the image's own size as a palette PNG (pixel values are class
  indices, shown in VOC's colours; readable by ``mobilevision eval segmentation --predictions``), ``overlays/<name>``
  the image with the classes blended in and a legend (videos: ``<name>_pred.mp4``; their masks are not written), and
  ``predictions.csv`` with ``file,frame,mask,classes`` (the classes present with their share of the pixels);
* attributes: ``predictions.csv`` with ``file,frame`` and one column per attribute holding its probability, readable
  by ``mobilevision eval attributes --predictions`` against a ground-truth CSV.

Files that cannot be read or decoded are skipped and named in the summary at the end (also in ``DIR/skipped.txt``);
the exit code stays 0 as long as something was predicted. A missing source, sources without any image or video,
a missing model or ``--device cuda`` without CUDA print ``error: ...`` before any work and return 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, first_few
from . import report_errors

__all__ = ["DEFAULT_SCORE_THRESH", "build_parser", "main"]

#: Detections scoring below this are neither written nor drawn (``--score-thresh``).
DEFAULT_SCORE_THRESH = 0.25


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mobilevision predict",
        description="Run a mobilevision checkpoint (.ckpt, PyTorch) or ONNX file (ONNX Runtime) on images, folders, "
        "glob patterns and videos, and write the predictions (detection: COCO results JSON and drawn images / "
        "videos; classification: CSV; geolocalization: CSV and a world map; segmentation: index-PNG masks, "
        "overlays and a CSV; attributes: a CSV of probabilities) under --output.")
    p.add_argument("--model", type=Path, required=True, help="checkpoint (.ckpt) or exported model (.onnx, .pte)")
    p.add_argument("--source", nargs="+", required=True, metavar="PATH",
                   help="images, folders (recursive), quoted glob patterns or videos")
    p.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for the outputs (created)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--score-thresh", type=float, default=DEFAULT_SCORE_THRESH,
                   help=f"detection: lowest score written and drawn (default: {DEFAULT_SCORE_THRESH}); an ONNX "
                   "file exported with --nms cannot go below its own threshold")
    p.add_argument("--vid-stride", type=int, default=1, metavar="K", help="videos: every K-th frame (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the runtime (default: its choice)")
    p.add_argument("--annotations", type=Path, metavar="GT.json",
                   help="detection: your COCO file of these images; predictions.json then takes its image ids "
                   "(matched by file name) and category ids (matched by name), so that `mobilevision eval coco "
                   "--annotations GT.json --results DIR/predictions.json` scores them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.vid_stride < 1:
        raise UserError(f"--vid-stride must be >= 1, got {args.vid_stride}")
    if not 0.0 <= args.score_thresh <= 1.0:
        raise UserError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); use --device cpu")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if not args.model.is_file():
        raise FileNotFoundError(f"--model {args.model} does not exist")
    if args.annotations is not None and not args.annotations.is_file():
        raise FileNotFoundError(f"--annotations {args.annotations} does not exist")


# ------------------------------------------------------------------------------------ writers ----
class _VideoSink:
    """Drawn frames -> ``DIR/<name>_pred.mp4``, one open writer at a time (the sources come file by file)."""

    def __init__(self, out: Path, stride: int) -> None:
        self.out, self.stride = out, stride
        self.file: Any = None
        self.writer: Any = None
        self.size: tuple[int, int] = (0, 0)
        self.paths: list[Path] = []

    def write(self, file: Any, rgb: np.ndarray) -> None:
        import cv2

        from ..data.sources import probe_video

        if file != self.file:
            self.close()
            info = probe_video(file.path)
            fps = (info.fps if info and info.fps > 0 else 25.0) / self.stride
            path = self.out / f"{file.stem}_pred.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (rgb.shape[1], rgb.shape[0])
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"OpenCV cannot write {path} (mp4v)")
            self.file = file
            self.paths.append(path)
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.file = self.writer = None


class _GroundTruthIds:
    """Image and category ids of a user's COCO file for the sources (``--annotations``): an image by its file name
    (the source's relative name, else its base name when that is unique in the file), a category by its name."""

    def __init__(self, path: Path, files: Sequence[Any], class_names: Sequence[str]) -> None:
        from ..coco_format import read_coco

        data = read_coco(str(path))
        by_name = {im["file_name"].replace("\\", "/"): im["id"] for im in data["images"]}
        base: dict[str, list[int]] = {}
        for name, image_id in by_name.items():
            base.setdefault(name.rsplit("/", 1)[-1], []).append(image_id)
        videos = [f.name for f in files if f.video]
        if videos:
            raise UserError(f"--annotations {path}: videos have no entry in a COCO file ({', '.join(videos[:3])}); "
                             "predict them without --annotations")
        self.image_ids: dict[str, int] = {}
        missing = []
        for f in files:
            found = by_name.get(f.name)
            if found is None and len(base.get(f.name.rsplit("/", 1)[-1], [])) == 1:
                found = base[f.name.rsplit("/", 1)[-1]][0]
            if found is None:
                missing.append(f.name)
            else:
                self.image_ids[f.name] = found
        if missing:
            raise UserError(f"--annotations {path}: {len(missing)} of {len(files)} images are not in the file "
                             f"(matched by file name): {first_few(missing)}")
        categories = {c["name"]: c["id"] for c in data["categories"]}
        self.category_ids = {i: categories[n] for i, n in enumerate(class_names) if n in categories}
        if not self.category_ids:
            raise UserError(f"--annotations {path}: none of the model's classes ({', '.join(class_names)}) is a "
                             f"category of the file ({', '.join(categories)})")
        self.unmatched = [n for n in class_names if n not in categories]


class _DetectionWriter:
    def __init__(self, out: Path, predictor: Any, stride: int, gt: _GroundTruthIds | None = None) -> None:
        self.out, self.meta = out, predictor.meta
        self.records: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.video = _VideoSink(out, stride)
        self.drawn = 0
        self.gt = gt

    def add(self, item: Any, result: dict[str, Any]) -> None:
        from PIL import Image

        from ..data.image_io import IMAGE_EXTENSIONS
        from ..evaluation.visualize import draw_boxes

        image_id = len(self.images) + 1 if self.gt is None else self.gt.image_ids[item.file.name]
        h, w = item.image.shape[:2]
        entry: dict[str, Any] = {"id": image_id, "file_name": item.file.name, "width": w, "height": h}
        extra = {} if item.frame is None else {"frame": item.frame}
        self.images.append({**entry, **extra})
        boxes, scores = result["boxes"], result["scores"]
        for (x1, y1, x2, y2), s, c, label, name in zip(boxes.tolist(), scores.tolist(),
                                                       result["category_ids"].tolist(), result["labels"].tolist(),
                                                       result["names"]):
            if self.gt is not None:
                if label not in self.gt.category_ids:
                    continue  # a class the user's file does not have: nothing to score it against
                c = self.gt.category_ids[label]
            self.records.append({"image_id": image_id, "category_id": int(c),
                                 "bbox": [round(x1, 4), round(y1, 4), round(x2 - x1, 4), round(y2 - y1, 4)],
                                 "score": round(s, 5), "category_name": name, "file_name": item.file.name, **extra})
        drawn = draw_boxes(item.image, boxes, result["labels"],
                           [f"{n} {s:.2f}" for n, s in zip(result["names"], scores.tolist())])
        if item.frame is not None:
            self.video.write(item.file, drawn)
            return
        path = self.out / "images" / item.file.name
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            path = path.with_name(path.name + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(drawn).save(path, quality=95)
        self.drawn += 1

    def close(self) -> list[str]:
        self.video.close()
        names, lut = self.meta.get("class_names") or [], self.meta.get("label_to_category_id")
        categories = [{"id": int(lut[i]) if lut else i, "name": n} for i, n in enumerate(names)]
        if self.gt is not None:
            categories = [{"id": self.gt.category_ids[i], "name": n} for i, n in enumerate(names)
                          if i in self.gt.category_ids]
        (self.out / "predictions.json").write_text(json.dumps(self.records) + "\n")
        (self.out / "images.json").write_text(json.dumps({"images": self.images, "categories": categories}) + "\n")
        wrote = [f"{self.out / 'predictions.json'} ({len(self.records)} detections)", str(self.out / "images.json")]
        if self.drawn:
            wrote.append(f"{self.drawn} drawn image(s) under {self.out / 'images'}")
        return wrote + [str(p) for p in self.video.paths]


class _CsvWriter:
    """Rows streamed to ``DIR/predictions.csv`` (the csv module quotes names with commas)."""

    def __init__(self, out: Path, header: list[str]) -> None:
        self.path = out / "predictions.csv"
        self.f = open(self.path, "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.f)
        self.csv.writerow(header)
        self.rows = 0

    def row(self, values: list[Any]) -> None:
        self.csv.writerow(values)
        self.rows += 1

    def close(self) -> list[str]:
        self.f.close()
        return [f"{self.path} ({self.rows} rows)"]


class _ClassificationWriter(_CsvWriter):
    def __init__(self, out: Path, predictor: Any, stride: int) -> None:
        self.k = min(5, max(1, len(predictor.meta.get("class_names") or [])))
        top = [c for i in range(1, self.k + 1) for c in (f"top{i}", f"top{i}_score")]
        super().__init__(out, ["file", "frame", "label", "score", *top])

    def add(self, item: Any, result: dict[str, Any]) -> None:
        top = [v for _, name, score in result["top5"][: self.k] for v in (name, f"{score:.6f}")]
        self.row([item.file.name, "" if item.frame is None else item.frame, result["name"],
                  f"{result['score']:.6f}", *top])


class _GeolocalizationWriter(_CsvWriter):
    def __init__(self, out: Path, predictor: Any, stride: int) -> None:
        super().__init__(out, ["image_id", "latitude", "longitude", "cell", "prob", "frame"])
        self.out, self.points = out, []

    def add(self, item: Any, result: dict[str, Any]) -> None:
        name = item.file.name if item.frame is None else f"{item.file.name}#{item.frame}"
        self.row([name, f"{result['latitude']:.6f}", f"{result['longitude']:.6f}", result["cell_token"],
                  f"{result['prob']:.6f}", "" if item.frame is None else item.frame])
        self.points.append((result["latitude"], result["longitude"], result["prob"]))

    def close(self) -> list[str]:
        from ..evaluation.visualize import save_location_map

        wrote = super().close()
        if self.points:
            lat, lon, prob = np.asarray(self.points).T
            wrote.append(str(save_location_map(lat, lon, self.out / "map.png", prob=prob)))
        return wrote


class _SegmentationWriter(_CsvWriter):
    def __init__(self, out: Path, predictor: Any, stride: int) -> None:
        super().__init__(out, ["file", "frame", "mask", "classes"])
        self.out, self.names = out, list(predictor.meta.get("class_names") or [])
        self.video = _VideoSink(out, stride)
        self.masks = 0

    def add(self, item: Any, result: dict[str, Any]) -> None:
        from PIL import Image

        from ..masks import save_index_mask
        from ..evaluation.visualize import overlay_mask

        overlay = overlay_mask(item.image, result["mask"], self.names)
        classes = ";".join(f"{n}:{f:.4f}" for n, f in sorted(result["fractions"].items(), key=lambda kv: -kv[1]))
        if item.frame is not None:
            self.video.write(item.file, overlay)
            self.row([item.file.name, item.frame, "", classes])
            return
        stem = item.file.stem
        save_index_mask(result["mask"], self.out / "masks" / f"{stem}.png")
        path = self.out / "overlays" / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay).save(path)
        self.masks += 1
        self.row([item.file.name, "", f"masks/{stem}.png", classes])

    def close(self) -> list[str]:
        self.video.close()
        wrote = super().close()
        if self.masks:
            wrote += [f"{self.masks} mask(s) under {self.out / 'masks'}, overlays under {self.out / 'overlays'}"]
        return wrote + [str(p) for p in self.video.paths]


class _AttributesWriter(_CsvWriter):
    def __init__(self, out: Path, predictor: Any, stride: int) -> None:
        super().__init__(out, ["file", "frame", *(predictor.meta.get("class_names") or [])])

    def add(self, item: Any, result: dict[str, Any]) -> None:
        self.row([item.file.name, "" if item.frame is None else item.frame, *(f"{p:.6f}" for p in result["probs"])])


_WRITERS = {"detection": _DetectionWriter, "classification": _ClassificationWriter,
            "geolocalization": _GeolocalizationWriter, "segmentation": _SegmentationWriter,
            "attributes": _AttributesWriter}


# ---------------------------------------------------------------------------------------- run ----
def _expected_items(files: Sequence[Any], stride: int) -> int:
    """Images plus the kept frames of the videos (as their containers count them), for the progress bar."""
    from ..data.sources import probe_video

    total = 0
    for f in files:
        info = probe_video(f.path) if f.video else None
        total += math.ceil(info.frames / stride) if info and info.frames else 1
    return total


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..data.sources import iter_sources, resolve_sources
    from ..deploy.predictor import Predictor

    _check_args(args)
    files = resolve_sources(args.source, exclude=[args.output])  # not the outputs of an earlier run
    console = Console(stderr=True, soft_wrap=True)
    start = time.perf_counter()
    predictor = Predictor(args.model, device=args.device, score_thresh=args.score_thresh, threads=args.threads)
    if args.threads and predictor.exported is None:
        import torch

        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.annotations is not None:
        if predictor.kind != "detection":
            raise UserError(f"--annotations is for detection models; {args.model} is a {predictor.kind} model")
        gt = _GroundTruthIds(args.annotations, files, predictor.meta.get("class_names") or [])
        if gt.unmatched:
            console.print(f"[yellow]--annotations {args.annotations} has no category {', '.join(gt.unmatched)}: "
                          "those detections are left out of predictions.json")
        writer: Any = _DetectionWriter(args.output, predictor, args.vid_stride, gt)
    else:
        writer = _WRITERS[predictor.kind](args.output, predictor, args.vid_stride)
    skipped: list[tuple[str, str]] = []
    counts = {"images": 0, "frames": 0}
    batch: list[Any] = []

    def flush() -> None:
        for item, result in zip(batch, predictor([it.image for it in batch])):
            writer.add(item, result)
            counts["images" if item.frame is None else "frames"] += 1
        progress.advance(task, len(batch))
        batch.clear()

    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TextColumn("images/frames"),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, disable=args.quiet) as progress:
            task = progress.add_task("predict", total=_expected_items(files, args.vid_stride))
            for item in iter_sources(files, args.vid_stride):
                if item.error is not None:
                    skipped.append((str(item.file.path), item.error))
                    progress.advance(task)
                    continue
                batch.append(item)
                if len(batch) >= args.batch_size:
                    flush()
            if batch:
                flush()
    finally:
        wrote = writer.close()
    seconds = time.perf_counter() - start
    done = counts["images"] + counts["frames"]
    videos = sum(f.video for f in files)
    what = f"{counts['images']} image(s)" + (f" and {counts['frames']} frame(s) of {videos} video(s)" if videos else "")
    lines = [f"predicted {what} with {args.model} [{predictor.kind}, {predictor.runtime}] in {seconds:.1f} s"]
    if predictor.kind == "detection":
        lines[0] += f", score >= {predictor.score_thresh:g}"
        if predictor.meta.get("nms") and args.score_thresh < float(predictor.meta.get("score_thresh", 0.0)):
            lines.append(f"note: {args.model} has NMS inside with score threshold {predictor.meta['score_thresh']:g}; "
                         f"--score-thresh {args.score_thresh:g} cannot go below it")
    lines += [f"wrote {w}" for w in wrote]
    if skipped:
        path = args.output / "skipped.txt"
        path.write_text("".join(f"{f}\t{why}\n" for f, why in skipped))
        lines.append(f"skipped {len(skipped)} file(s) that could not be read (listed in {path}):")
        lines += [f"  {why}" if f in why else f"  {f}: {why}" for f, why in skipped[:20]]
        if len(skipped) > 20:
            lines.append(f"  ... and {len(skipped) - 20} more")
    console.print("\n".join(lines), markup=False, highlight=False)
    if not done:
        raise UserError(f"none of the {len(files)} file(s) could be read: nothing was predicted")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), predict, return the exit code (2 after ``error: ...``)."""
    args = build_parser().parse_args(argv)
    return report_errors(run, args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
