"""``mobilevision export``: a checkpoint as a file that phones and servers load: ONNX, ExecuTorch (XNNPACK) or
Core ML; ``mobilevision predict`` runs the ONNX and ExecuTorch files.

    mobilevision export --checkpoint CKPT --output model.onnx|model.pte|model.mlpackage [--format F]
                        [--batch dynamic|N] [--opset N] [--nms]
                        [--int8 --calibration DIR [--calibration-size N] [--qat-steps N]] [--eval-batches N]

The model takes RGB in [0, 1] (Core ML: an RGB image) at the training resolution (normalization inside;
MobileOne folded) and carries its metadata (task, preprocessing, classes, category ids, cell locations) inside the
file. After writing, a file this machine can run is run next to the checkpoint under torch and the largest
differences are printed (a failed check is an error); a Core ML file is checked against its spec (it executes on
Apple devices only). With ``--int8`` the output is the int8 model (static quantization calibrated on images
sampled from ``DIR``: ONNX QDQ through ONNX Runtime, ExecuTorch PT2E with the XNNPACK quantizer), the float one is
written next to it (``NAME_fp32.<suffix>``), and both are scored on the checkpoint's validation data (top-1, mAP,
mIoU or km accuracy) and timed. ``--qat-steps N`` (ExecuTorch) fine-tunes the int8 network with fake quantization
for N steps on the calibration images, taught by the float network (no labels needed), before converting; the
post-training int8 file is then written too (``NAME_ptq.pte``) and scored beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from . import report_errors

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from ..deploy.formats import FORMATS

    p = argparse.ArgumentParser(prog="mobilevision export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a mobilevision training checkpoint (.ckpt)")
    p.add_argument("--output", type=Path, required=True, help="the file to write (.onnx, .pte or .mlpackage)")
    p.add_argument("--format", choices=list(FORMATS), default=None,
                   help="onnx, executorch or coreml (default: from the output's suffix)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--batch", default=None,
                   help="a fixed batch size, or 'dynamic' (ONNX only; its default). ExecuTorch and Core ML files "
                        "have a static batch, default 1")
    p.add_argument("--nms", action="store_true",
                   help="detection: NMS inside the model. ONNX: class-wise NMS in the graph, outputs detections "
                        "[B, max_det, 6] (x1, y1, x2, y2, score, label) and num_detections [B]; Core ML: the pipeline "
                        "Vision runs as an object detector (Core ML NMS; confidence [N, C], coordinates [N, 4])")
    p.add_argument("--int8", action="store_true", help="int8 static quantization (QDQ, per-channel weights)")
    p.add_argument("--calibration", type=Path, help="with --int8: folder of representative images")
    p.add_argument("--calibration-size", type=int, default=256,
                   help="with --int8: images used for calibration (sampled at random over the folder's sub-folders; "
                        "videos give frames spread over their length)")
    p.add_argument("--calibration-seed", type=int, default=0, help="with --int8: the seed of that sample")
    p.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="with --int8, ONNX: ONNX Runtime's calibration method (ExecuTorch: the XNNPACK quantizer's "
                        "observers: histogram for activations, min-max for weights)")
    p.add_argument("--reduce-range", action="store_true",
                   help="with --int8, ONNX: 7-bit weights, for x86 CPUs without VNNI (AVX2 only), where 8-bit can "
                        "saturate")
    p.add_argument("--qat-steps", type=int, default=0,
                   help="with --int8, ExecuTorch: quantization-aware fine-tuning steps (batches of --batch-size "
                        "calibration images, the float model as teacher); 0: post-training int8 only")
    p.add_argument("--qat-lr", type=float, default=1e-5, help="with --qat-steps: AdamW learning rate (cosine to 0)")
    p.add_argument("--eval-batches", type=int, default=None,
                   help="with --int8: validation batches scored (default: the whole validation split)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of calibration and evaluation")
    return p


def _calibration_batches(meta: dict, folder: Path, count: int, batch_size: int, seed: int):
    """Preprocessed batches (the exported model's own preprocessing, ``meta``) of up to ``count`` images sampled
    from ``folder`` (:func:`~mobilevision.data.sources.sample_images`)."""
    import numpy as np

    from ..data.sources import sample_images
    from ..deploy.preprocess import resize_for

    resize = resize_for(meta)
    batch = []
    for _, image in sample_images(folder, count, seed):
        x = np.ascontiguousarray(resize(image).transpose(2, 0, 1), dtype=np.float32) / 255.0
        if batch and x.shape != batch[0].shape:  # segmentation inputs keep their size: a batch per size run
            yield np.stack(batch)
            batch = []
        batch.append(x)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _check_parity(predictor, exported, nms: bool) -> str:
    """Run the checkpoint (torch) and the exported file (both :class:`~mobilevision.deploy.Predictor`) on the same
    random batch of 3 (a fixed-batch file gets it in batches of its size); raise if they disagree."""
    import numpy as np

    h, w = predictor.image_size
    x = np.random.default_rng(0).random((3, 3, h, w), dtype=np.float32)
    if nms:  # compare the final detections
        sizes = [(h, w)] * 3
        worst = 0.0
        for da, db in zip(predictor.run(x, sizes), exported.run(x, sizes)):
            if len(da["scores"]) != len(db["scores"]):
                raise UserError(f"{exported.runtime} finds {len(db['scores'])} detections, torch {len(da['scores'])}")
            if len(da["scores"]):
                worst = max(worst, float(np.abs(np.sort(da["scores"]) - np.sort(db["scores"])).max()))
        if worst > 1e-3:
            raise UserError(f"{exported.runtime} and torch disagree: scores differ by up to {worst:.2e}")
        return f"{exported.runtime} vs torch on 3 random inputs: same detection counts, scores within {worst:.1e}"
    inputs = [x]
    if exported.meta.get("input_size") == "dynamic":  # any size: also another aspect, not a multiple of 32
        inputs.append(np.random.default_rng(1).random((1, 3, h + 7, w + w // 2 + 3), dtype=np.float32))
    parts = []
    for x in inputs:
        ours, theirs = predictor.outputs(x), exported.outputs(x)
        for name, ref in ours.items():
            ref = ref.numpy()
            diff = float(np.abs(theirs[name].numpy() - ref).max())
            scale = float(np.abs(ref).max()) or 1.0
            parts.append(f"{name} {'x'.join(map(str, x.shape[2:]))} max |diff| {diff:.1e} (scale {scale:.2g})")
            if diff > 1e-3 * max(scale, 1.0):
                raise UserError(f"{exported.runtime} and torch disagree on {name} at {x.shape[2]}x{x.shape[3]}: max |diff| "
                                f"{diff:.3g} at scale {scale:.3g}")
    return f"{exported.runtime} vs torch on {len(inputs) + 2} random inputs: " + ", ".join(parts)


def _compare_int8(task, ckpt, files: dict[str, Path], args) -> list[dict]:
    """Score and time the float32 and int8 files (``{row name: file}``); print and return one row each."""
    from rich.console import Console
    from rich.table import Table

    from ..deploy import Predictor, task_kind
    from ..deploy.adapters import ADAPTERS
    from ..deploy.evaluate import datamodule_of, evaluate_predictor, latency_ms
    from ..deploy.formats import load_exported

    console = Console()
    try:
        dm = datamodule_of(task, ckpt, args.batch_size)
    except (FileNotFoundError, ValueError, OSError) as e:
        console.print(f"accuracy not measured: the checkpoint's validation data is not available ({e})",
                      markup=False)
        dm = None
    rows = []
    for name, path in files.items():
        median, p90 = latency_ms(load_exported(path))
        row = {"model": name, "latency_ms": median, "latency_p90_ms": p90, "size_mb": path.stat().st_size / 1e6}
        if dm is not None:
            t = time.perf_counter()
            row.update(ADAPTERS[task_kind(task)].headline(evaluate_predictor(Predictor(path), dm, args.eval_batches)))
            console.print(f"scored {name} on the validation split in {time.perf_counter() - t:.0f} s", markup=False)
        rows.append(row)
    int8_path = files[list(files)[-1]]
    runtime = Predictor(int8_path).runtime
    table = Table(title=f"{' vs '.join(files)} (accuracy: validation split; latency: {runtime}, batch "
                        f"{load_exported(int8_path).batch or 1})")
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "model" else "right")
    for row in rows:
        table.add_row(*(v if isinstance(v, str) else f"{v:.4g}" for v in row.values()))
    console.print(table)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    from ..deploy import Predictor, load_any_task, metadata_of
    from ..deploy.formats import export_model, format_of
    from ..deploy.graph import static_metadata

    fmt = format_of(args.output, args.format)
    if args.output.suffix.lower() != fmt.suffix:
        raise UserError(f"--output of a {fmt.name} model must end in {fmt.suffix}, got {args.output}")
    if args.int8 and args.calibration is None:
        raise UserError("--int8 needs --calibration DIR (representative images)")
    if args.int8 and not fmt.int8:
        raise UserError(f"--int8 is not available for {fmt.name} files")
    if args.qat_steps < 0:
        raise UserError(f"--qat-steps must be 0 or more, got {args.qat_steps}")
    if args.qat_steps and not args.int8:
        raise UserError("--qat-steps fine-tunes the int8 model: add --int8 --calibration DIR")
    if args.qat_steps and not fmt.qat:
        raise UserError(f"--qat-steps is available for ExecuTorch files (.pte), not {fmt.name}")
    if args.calibration is not None and not args.calibration.is_dir():
        raise FileNotFoundError(f"calibration folder {args.calibration} does not exist")
    if args.batch is not None and args.batch != "dynamic" and (not args.batch.isdigit() or int(args.batch) < 1):
        raise UserError(f"--batch must be 'dynamic' or a positive integer, got {args.batch!r}")
    if args.batch == "dynamic" and fmt.static_batch:
        raise UserError(f"{fmt.name} files have a static batch size: --batch N (default 1)")
    task, ckpt = load_any_task(args.checkpoint)
    predictor = Predictor(args.checkpoint)
    kind = predictor.kind
    print(f"exporting {kind} model ({task.hparams.backbone}, input {predictor.image_size[0]}x"
          f"{predictor.image_size[1]}) from {args.checkpoint} as {fmt.name}")
    options = {"opset": args.opset} if fmt.name == "onnx" else {}
    t = time.perf_counter()
    float_path = args.output.with_name(args.output.stem + "_fp32" + fmt.suffix) if args.int8 else args.output
    export_model(task, float_path, fmt.name, ckpt=ckpt, batch=args.batch, nms=args.nms, **options)
    print(f"wrote {float_path} in {time.perf_counter() - t:.1f} s")
    if fmt.runs_here:
        print(_check_parity(predictor, Predictor(float_path, score_thresh=predictor.score_thresh), args.nms))
    else:
        from ..deploy.coreml import check_coreml

        summary = check_coreml(float_path)
        print(f"spec check passed ({fmt.runtime}; it cannot execute here): input {summary['input'][0]} "
              f"{summary['input'][1]}, outputs {', '.join(summary['outputs'])}"
              + (f", {len(summary['labels'])} class labels" if summary["labels"] else ""))
    if not args.int8:
        return 0
    meta = static_metadata(metadata_of(task, ckpt)) if fmt.static_batch else metadata_of(task, ckpt)
    batches = list(_calibration_batches(meta, args.calibration, args.calibration_size, args.batch_size,
                                        args.calibration_seed))
    if not batches:
        raise UserError(f"no readable image in calibration folder {args.calibration}")
    print(f"calibrating int8 on {sum(len(b) for b in batches)} images sampled from {args.calibration}")
    if fmt.name == "onnx":
        options.update(method=args.calibration_method, reduce_range=args.reduce_range)
    files = {"float32": float_path}
    if args.qat_steps:
        ptq_path = args.output.with_name(args.output.stem + "_ptq" + fmt.suffix)
        t = time.perf_counter()
        export_model(task, ptq_path, fmt.name, ckpt=ckpt, batch=args.batch, calibration=batches, **options)
        print(f"wrote {ptq_path} (int8, post-training) in {time.perf_counter() - t:.1f} s")
        files["int8 PTQ"] = ptq_path
        options.update(qat_steps=args.qat_steps, qat_lr=args.qat_lr, qat_batch=args.batch_size,
                       qat_seed=args.calibration_seed)
        print(f"quantization-aware training: {args.qat_steps} steps of {args.batch_size} images, AdamW lr "
              f"{args.qat_lr:g}, the float model as teacher")
    t = time.perf_counter()
    export_model(task, args.output, fmt.name, ckpt=ckpt, batch=args.batch, nms=args.nms, calibration=batches,
                 **options)
    label = "int8 QAT" if args.qat_steps else "int8"
    print(f"wrote {args.output} ({label}) in {time.perf_counter() - t:.1f} s")
    files[label] = args.output
    _compare_int8(task, ckpt, files, args)
    return 0
