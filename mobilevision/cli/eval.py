"""``mobilevision eval``: evaluation entry point, one subcommand per task.

    mobilevision eval coco --annotations GT.json --results DT.json [--json-out stats.json]
                              [--backend pycocotools|faster_coco_eval] [--per-category]
    mobilevision eval classification --checkpoint CKPT [--data-dataset NAME] [--data-root DIR]
                              [--json-out stats.json] [--confusion-png cm.png] [--per-class]
    mobilevision eval geolocalization --predictions P.csv --ground-truth G.csv [--json-out stats.json]
                              [--error-map map.png] [--no-reference]
    mobilevision eval geolocalization --checkpoint CKPT [--data-file LIST.csv] [--json-out stats.json]
                              [--error-map map.png] [--predictions-out P.csv] [--cell-location center|mean]
    mobilevision eval segmentation --predictions PRED_DIR --ground-truth GT_DIR --num-classes N
                              [--ignore-index 255] [--class-names a,b,...] [--json-out stats.json]
    mobilevision eval segmentation --checkpoint CKPT [--data-dataset NAME] [--data-root DIR]
                              [--eval-scales 0.5,0.75,1,1.25,1.5,1.75] [--flip] [--json-out stats.json]
                              [--draw grid.png]
    mobilevision eval attributes --checkpoint CKPT | --predictions P.csv --ground-truth G.csv
                              [--thresholds STATS.json] [--json-out stats.json] [--ap-png ap.png]

Each subcommand is registered by an ``_add_<task>_parser(subparsers)`` function that sets
``func`` to its handler ``(args) -> int``; to add a task write those two functions and list the
adder in ``_SUBCOMMANDS`` (``attributes`` lives in :mod:`mobilevision.cli.eval_attributes`). The input source of ``coco`` (``--results`` or ``--checkpoint``), of
``geolocalization`` and ``segmentation`` (``--predictions`` or ``--checkpoint``) is a required mutually exclusive
group named ``source``; ``--checkpoint`` runs the model, then evaluates.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import UserError
from . import report_errors
from .eval_attributes import add_attributes_parser

__all__ = ["build_parser", "main"]


# ------------------------------------------------------------------------------------ shared ----
def _checkpoint_data_args(ckpt: dict, args: argparse.Namespace) -> dict:
    """The checkpoint's data module arguments with the command line's batch size, and its workers, ``--data-dataset``
    and ``--data-root`` where the subcommand has those options and they are given."""
    from ..deploy.evaluate import checkpoint_data_args

    data_args = checkpoint_data_args(ckpt, args.batch_size, getattr(args, "num_workers", None))
    if getattr(args, "data_dataset", None) is not None:
        data_args["dataset"] = args.data_dataset
    if getattr(args, "data_root", None) is not None:
        data_args["root"] = str(args.data_root)
    return data_args


def _eval_trainer():
    """A one-device Trainer for evaluation: no logger, no checkpoints, a progress bar."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import RichProgressBar

    return pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                      callbacks=[RichProgressBar()])


# ------------------------------------------------------------------------------------ coco ----
def _add_coco_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation.coco_map import BACKENDS

    p = subparsers.add_parser(
        "coco",
        help="COCO box mAP of a results JSON",
        description="Evaluate a COCO bbox results JSON (list of {image_id, category_id, bbox [x,y,w,h], score}) "
        "against COCO annotations with the official COCO API; every ground-truth image is evaluated.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", type=Path, help="COCO bbox results JSON (detections) to evaluate")
    source.add_argument("--checkpoint", type=Path, help="DetectionTask checkpoint to run on the annotated images")
    p.add_argument("--annotations", type=Path, help="COCO instances annotation JSON (ground truth); with "
                   "--checkpoint, default: the validation set the checkpoint was trained with")
    p.add_argument("--images", type=Path, help="with --checkpoint: image folder of --annotations")
    p.add_argument("--results-out", type=Path, help="with --checkpoint: write the detections as a COCO results JSON")
    p.add_argument("--draw", type=Path, help="with --checkpoint: save a PNG of detections on validation images")
    p.add_argument("--draw-count", type=int, default=8, help="images in the --draw picture")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json-out", type=Path, default=None, help="write the 12 stats + per_category here")
    p.add_argument("--backend", choices=BACKENDS, default="pycocotools", help="COCO API implementation")
    p.add_argument("--per-category", action="store_true", help="also print the per-category AP table")
    p.set_defaults(func=_run_coco)


def _print_coco(stats: dict, per_category: bool, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.coco_map import STAT_DESCRIPTIONS, STAT_KEYS

    console = Console()
    table = Table(title=title)
    for col in ("metric", "IoU", "area"):
        table.add_column(col)
    for col in ("maxDets", "value"):
        table.add_column(col, justify="right")
    for key, (_, _, iou, area, max_dets) in zip(STAT_KEYS, STAT_DESCRIPTIONS):
        table.add_row(key, iou, area, str(max_dets), f"{stats[key]:.3f}")
    console.print(table)
    if per_category:
        cat_table = Table(title="per-category AP @[.50:.95], area all, maxDets 100")
        cat_table.add_column("category")
        cat_table.add_column("AP", justify="right")
        for name, ap in stats["per_category"].items():
            cat_table.add_row(name, f"{ap:.3f}")
        console.print(cat_table)


def _evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Run a DetectionTask checkpoint over a COCO-format set with Lightning's validate loop.

    The classes are the checkpoint's own (``label_to_category_id``, ``category_names``); the evaluated
    file's categories are matched to them by name, so it may number them differently."""
    from ..data import CocoDetectionDataModule
    from ..tasks import DetectionTask, load_task

    task, ckpt = load_task(args.checkpoint, DetectionTask)
    data_args = _checkpoint_data_args(ckpt, args)
    if (args.annotations is None) != (args.images is None):
        raise UserError("give both --annotations and --images (or neither, for the checkpoint's own validation set)")
    if args.annotations is not None:  # evaluate on another set; the training paths are not read
        data_args.update(train_images=str(args.images), train_annotations=str(args.annotations),
                         val_images=str(args.images), val_annotations=str(args.annotations))
    dm = CocoDetectionDataModule(**data_args)
    hp = task.hparams
    if hp.label_to_category_id:
        dm.use_categories(list(hp.label_to_category_id), hp.category_names)
    if dm.num_classes != hp.num_classes:
        raise UserError(f"{args.checkpoint} predicts {hp.num_classes} classes, but {dm.train_annotations} "
                         f"has {dm.num_classes}")
    task.hparams.eval_backend = args.backend
    trainer = _eval_trainer()
    trainer.validate(task, datamodule=dm, verbose=False)
    stats = task.last_metrics
    print(f"COCO bbox evaluation of {args.checkpoint} on {dm.val_annotations} [{args.backend}]")
    if args.results_out is not None:
        # in the evaluated file's category ids, so that `--annotations FILE --results OUT` gives these numbers
        in_file = dm.val_dataset.category_id_in_file
        results = [dict(r, category_id=in_file[r["category_id"]]) for r in task.evaluator.results()
                   if r["category_id"] in in_file]
        args.results_out.parent.mkdir(parents=True, exist_ok=True)
        args.results_out.write_text(json.dumps(results))
        print(f"wrote {args.results_out}")
    if args.draw is not None:
        _draw_predictions(task, dm, args.draw, args.draw_count)
        print(f"wrote {args.draw}")
    return stats


def _draw_predictions(task, dm, path: Path, count: int) -> None:
    import torch

    from ..evaluation.coco_map import scale_boxes
    from ..evaluation.visualize import draw_detections

    dataset = dm.val_dataset
    count = min(count, len(dataset))
    images, targets = zip(*(dataset[i] for i in range(count)))
    with torch.no_grad():
        outputs = task(torch.stack(images))
        detections = task.model.postprocess(outputs)
    originals = [dataset.load_image(i) for i in range(count)]
    scaled = []
    for tgt, det in zip(targets, detections):
        scaled.append({**det, "boxes": scale_boxes(det["boxes"], outputs["image_size"], tgt["orig_size"], clip=True)})
    draw_detections(originals, scaled, dm.category_names, path)


def _run_coco(args: argparse.Namespace) -> int:
    from ..evaluation.coco_map import evaluate_results_file

    if args.checkpoint is not None:
        stats = _evaluate_checkpoint(args)
    else:
        if args.annotations is None:
            raise UserError("--results needs --annotations")
        stats = evaluate_results_file(args.annotations, args.results, backend=args.backend)
        print(f"COCO bbox evaluation of {args.results} against {args.annotations} [{args.backend}]")
    _print_coco(stats, args.per_category, title="COCO bbox mAP")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(stats, f, indent=2)
        print(f"wrote {args.json_out}")
    return 0


# --------------------------------------------------------------------------- classification ----
def _add_classification_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classification",
        help="top-1 / top-5 / per-class accuracy and confusion matrix of a checkpoint",
        description="Run a ClassificationTask checkpoint over a validation set with Lightning's validate loop. "
        "The data module is rebuilt from the checkpoint's datamodule_hyper_parameters (the data it was "
        "trained with); --data-dataset / --data-root evaluate on another copy or another set with the same classes.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="ClassificationTask checkpoint (.ckpt)")
    p.add_argument("--data-dataset", help="dataset name of ClassificationDataModule (default: the checkpoint's)")
    p.add_argument("--data-root", type=Path, help="dataset root folder (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers (default: the checkpoint's)")
    p.add_argument("--no-fold", action="store_true", help="evaluate MobileOne with its train-time branches "
                   "(default: re-parameterized, same accuracy)")
    p.add_argument("--json-out", type=Path, default=None,
                   help="write acc1, acc5, acc_mean_class, per_class, support, confusion_matrix here")
    p.add_argument("--confusion-png", type=Path, default=None, help="save the confusion matrix as a PNG")
    p.add_argument("--per-class", action="store_true",
                   help="print the per-class table (printed anyway for up to 30 classes)")
    p.set_defaults(func=_run_classification)


def _print_classification(stats: dict, per_class: bool, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("acc1 (top-1)", f"{stats['acc1']:.4f}")
    table.add_row(f"acc5 (top-{stats['top_k']})", f"{stats['acc5']:.4f}")
    table.add_row("mean per-class accuracy", f"{stats['acc_mean_class']:.4f}")
    table.add_row("samples", str(stats["num_samples"]))
    table.add_row("classes", str(stats["num_classes"]))
    console.print(table)
    if per_class or stats["num_classes"] <= 30:
        cls_table = Table(title="per-class accuracy")
        cls_table.add_column("class")
        cls_table.add_column("accuracy", justify="right")
        cls_table.add_column("samples", justify="right")
        for name, acc in stats["per_class"].items():
            cls_table.add_row(name, "-" if acc is None else f"{acc:.4f}", str(stats["support"][name]))
        console.print(cls_table)


def _evaluate_classification_checkpoint(args: argparse.Namespace) -> tuple[dict, str]:
    from ..data.classification import ClassificationDataModule
    from ..tasks import ClassificationTask, load_task

    task, ckpt = load_task(args.checkpoint, ClassificationTask)
    data_args = _checkpoint_data_args(ckpt, args)
    data_args.setdefault("image_size", task.hparams.image_size)
    dm = ClassificationDataModule(**data_args)
    hp = task.hparams
    if dm.num_classes != hp.num_classes:
        raise UserError(f"{args.checkpoint} predicts {hp.num_classes} classes, but dataset "
                         f"{data_args.get('dataset')!r} ({data_args.get('root')}) has {dm.num_classes}")
    names = list(dm.class_names) if dm.class_names is not None else None
    if hp.class_names and names and list(hp.class_names) != names:
        raise UserError(f"{args.checkpoint} was trained on classes {list(hp.class_names)[:5]}..., but the dataset "
                         f"has {names[:5]}... (another order or another label set)")
    if hp.class_names is None and names:
        hp.class_names = names
    hp.eval_folded = not args.no_fold
    trainer = _eval_trainer()
    trainer.validate(task, datamodule=dm, verbose=False)
    where = str(data_args.get("dataset", "the default dataset"))
    if data_args.get("root"):
        where += f" at {data_args['root']}"
    return task.last_metrics, f"{where} (validation split)"


def _run_classification(args: argparse.Namespace) -> int:
    from ..evaluation.classification import save_confusion_matrix_png, save_metrics_json

    stats, where = _evaluate_classification_checkpoint(args)
    print(f"classification evaluation of {args.checkpoint} on {where}")
    _print_classification(stats, args.per_class, title="classification accuracy")
    if args.json_out is not None:
        save_metrics_json(stats, args.json_out)
        print(f"wrote {args.json_out}")
    if args.confusion_png is not None:
        save_confusion_matrix_png(stats["confusion_matrix"], stats["class_names"], args.confusion_png)
        print(f"wrote {args.confusion_png}")
    return 0


# -------------------------------------------------------------------------- geolocalization ----
def _add_geolocalization_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "geolocalization",
        help="Im2GPS accuracy at 1 / 25 / 200 / 750 / 2500 km of predicted photo locations",
        description="Evaluate predicted photo locations against true ones with the Im2GPS protocol: the "
        "fraction of images whose great-circle error is within 1 km (street), 25 km (city), 200 km (region), "
        "750 km (country) and 2500 km (continent), and the median error, next to the PlaNet figures of the "
        "MobileNetV1 paper. CSV files have a header with image_id,latitude,longitude (degrees, any column "
        "order, other columns ignored); every ground-truth image needs exactly one prediction.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="CSV of predicted locations (image_id,latitude,longitude)")
    source.add_argument("--checkpoint", type=Path, help="GeolocalizationTask checkpoint to run on a photo list")
    p.add_argument("--ground-truth", type=Path,
                   help="CSV of true locations (image_id,latitude,longitude); needed with --predictions")
    p.add_argument("--data-file", type=Path, help="with --checkpoint: CSV / JSONL list (image_path,latitude,"
                   "longitude) to evaluate; default: the validation list the checkpoint was trained with")
    p.add_argument("--image-root", type=Path, help="with --data-file: folder its image paths are relative to "
                   "(default: the list's folder)")
    p.add_argument("--cell-location", choices=("center", "mean"), default=None,
                   help="with --checkpoint: a cell's location, its S2 center or the mean of its training photos "
                   "(default: the checkpoint's)")
    p.add_argument("--predict", choices=("argmax", "topk"), default=None,
                   help="with --checkpoint: the most probable cell, or the probability-weighted mean of the top-k")
    p.add_argument("--top-k", type=int, default=None, help="with --predict topk: cells averaged")
    p.add_argument("--predictions-out", type=Path, help="with --checkpoint: write the predicted locations as a CSV "
                   "(image_id,latitude,longitude,cell,prob)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--no-fold", action="store_true", help="with --checkpoint: evaluate MobileOne unfolded")
    p.add_argument("--json-out", type=Path, default=None,
                   help="write acc_1km ... acc_2500km, median_km, mean_km, num_samples here")
    p.add_argument("--error-map", type=Path, default=None,
                   help="save a world map PNG of the errors (truth -> prediction lines)")
    p.add_argument("--no-reference", action="store_true", help="leave the PlaNet reference columns out of the table")
    p.set_defaults(func=_run_geolocalization)


def _evaluate_geolocalization_checkpoint(args: argparse.Namespace):
    """Run a checkpoint over a photo list; returns the matched locations, the biggest-cell baseline's metrics
    on the same photos and a description of the data."""
    import csv

    import numpy as np
    import torch

    from ..data.geolocalization import GeolocalizationDataModule
    from ..evaluation.geolocalization import MatchedLocations, geo_metrics
    from ..geo.distance import haversine_km
    from ..tasks import GeolocalizationTask, load_task

    if args.ground_truth is not None:
        raise UserError("--ground-truth goes with --predictions; with --checkpoint use --data-file")
    task, ckpt = load_task(args.checkpoint, GeolocalizationTask)
    data_args = _checkpoint_data_args(ckpt, args)
    if args.data_file is not None:
        data_args.update(dataset="files", train_file=str(args.data_file), val_file=str(args.data_file),
                         root=None, image_root=None if args.image_root is None else str(args.image_root))
    data_args.setdefault("image_size", task.hparams.image_size)
    dm = GeolocalizationDataModule(**data_args)
    dm.use_partition(task.partition)  # the checkpoint's cells, not ones built from the evaluation list
    for name in ("cell_location", "predict", "top_k"):
        if getattr(args, name) is not None:
            setattr(task.hparams, name, getattr(args, name))
    task.hparams.eval_folded = not args.no_fold
    dm.setup("validate")
    trainer = _eval_trainer()
    outputs = trainer.predict(task, dataloaders=dm.val_dataloader())
    cat = {k: torch.cat([o[k] for o in outputs]).cpu().numpy() for k in outputs[0]}
    samples = dm.val_dataset.samples
    matched = MatchedLocations(list(samples.image_ids), cat["latitude"], cat["longitude"], samples.latitude,
                               samples.longitude)
    biggest = int(np.argmax(task.partition.counts))
    loc = task.cell_locations().cpu().numpy()[biggest]
    baseline = geo_metrics(haversine_km(loc[0], loc[1], samples.latitude, samples.longitude))
    if args.predictions_out is not None:
        args.predictions_out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.predictions_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "latitude", "longitude", "cell", "prob"])
            tokens = task.partition.tokens
            for i, image_id in enumerate(matched.image_ids):
                w.writerow([image_id, f"{cat['latitude'][i]:.6f}", f"{cat['longitude'][i]:.6f}",
                            tokens[int(cat["cell"][i])], f"{cat['prob'][i]:.4f}"])
        print(f"wrote {args.predictions_out}")
    return matched, baseline, f"{dm.val_file} ({len(matched)} photos, {len(task.partition)} cells)"


def _run_geolocalization(args: argparse.Namespace) -> int:
    from ..evaluation.geolocalization import (
        match_prediction_csvs,
        print_geo_table,
        save_error_map,
        save_geo_json,
    )

    others: dict[str, dict] = {}
    if args.predictions is not None:
        if args.ground_truth is None:
            raise UserError("--predictions needs --ground-truth")
        matched = match_prediction_csvs(args.predictions, args.ground_truth)
        print(f"geolocalization evaluation of {args.predictions} against {args.ground_truth}")
    else:
        matched, baseline, where = _evaluate_geolocalization_checkpoint(args)
        print(f"geolocalization evaluation of {args.checkpoint} on {where}")
        others["biggest cell"] = baseline
    stats = matched.metrics()
    print_geo_table(stats, title="geolocalization accuracy (Im2GPS protocol)", reference=not args.no_reference,
                    others=others)
    if args.json_out is not None:
        extra = {"baseline_biggest_cell": others["biggest cell"]} if others else None
        save_geo_json(stats, args.json_out, extra=extra)
        print(f"wrote {args.json_out}")
    if args.error_map is not None:
        save_error_map(matched.pred_lat, matched.pred_lon, matched.true_lat, matched.true_lon, args.error_map)
        print(f"wrote {args.error_map}")
    return 0


# ----------------------------------------------------------------------------- segmentation ----
def _add_segmentation_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segmentation",
        help="mIoU, pixel accuracy and mean class accuracy of predicted index masks or of a checkpoint",
        description="Score a folder of predicted index masks (PNG, palette PNGs read as indices) against a folder "
        "of ground-truth masks, matched by file stem, or run a SegmentationTask checkpoint on its validation data "
        "(or --data-*): a confusion matrix over every labelled pixel (the ignore index left out) at each image's "
        "original size, per-class IoU, mean IoU over the classes present, pixel accuracy, mean class accuracy.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="folder of predicted index masks")
    source.add_argument("--checkpoint", type=Path, help="SegmentationTask checkpoint to run on validation data")
    p.add_argument("--ground-truth", type=Path, help="with --predictions: folder of ground-truth index masks")
    p.add_argument("--num-classes", type=int, help="with --predictions: number of classes (labels 0..N-1)")
    p.add_argument("--ignore-index", type=int, default=255, help="ground-truth label left out of the scores")
    p.add_argument("--class-names", default=None, help="comma-separated class names, in label order")
    p.add_argument("--data-dataset", default=None, help="with --checkpoint: shapes, folder, voc, ade20k or "
                   "cityscapes (default: the checkpoint's)")
    p.add_argument("--data-root", type=Path, default=None, help="with --checkpoint: the dataset's root folder")
    p.add_argument("--eval-scales", default=None, metavar="S1,S2,...",
                   help="with --checkpoint: multi-scale testing, e.g. 0.5,0.75,1,1.25,1.5,1.75 (the papers' MF)")
    p.add_argument("--flip", action="store_true", help="with --checkpoint: add left-right flipped inputs")
    p.add_argument("--batch-size", type=int, default=1, help="with --checkpoint: images per batch (default 1)")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--no-fold", action="store_true", help="with --checkpoint: evaluate MobileOne unfolded")
    p.add_argument("--draw", type=Path, help="with --checkpoint: save a PNG of validation images, ground truth next "
                   "to prediction")
    p.add_argument("--draw-count", type=int, default=8, help="images in the --draw picture")
    p.add_argument("--json-out", type=Path, default=None,
                   help="write miou, pixel_acc, mean_acc, per_class_iou (and per_class_acc) here")
    p.set_defaults(func=_run_segmentation)


def _evaluate_segmentation_checkpoint(args: argparse.Namespace) -> tuple[dict, str]:
    from ..data.segmentation import SegmentationDataModule
    from ..tasks import SegmentationTask, load_task

    if args.ground_truth is not None or args.num_classes is not None:
        raise UserError("--ground-truth / --num-classes go with --predictions; a checkpoint knows its classes")
    if args.draw is not None and args.draw_count < 1:
        raise UserError(f"--draw-count must be >= 1, got {args.draw_count}")
    task, ckpt = load_task(args.checkpoint, SegmentationTask)
    data_args = _checkpoint_data_args(ckpt, args)
    data_args["eval_batch_size"] = args.batch_size
    dm = SegmentationDataModule(**data_args)
    hp = task.hparams
    if dm.num_classes != hp.num_classes or (hp.class_names and list(dm.class_names) != list(hp.class_names)):
        raise UserError(f"{args.checkpoint} predicts {hp.num_classes} classes {list(hp.class_names or [])[:6]}..., "
                         f"but the dataset has {dm.num_classes}: {list(dm.class_names)[:6]}...")
    if args.eval_scales:
        hp.eval_scales = [float(v) for v in args.eval_scales.split(",")]
    hp.eval_flip = bool(args.flip) or bool(hp.eval_flip)
    hp.eval_folded = not args.no_fold
    _eval_trainer().validate(task, datamodule=dm, verbose=False)
    if args.draw is not None:
        _draw_segmentation(task, dm, args.draw, args.draw_count)
        print(f"wrote {args.draw}")
    where = str(data_args.get("dataset", "shapes")) + (f" at {data_args['root']}" if data_args.get("root") else "")
    mf = f", scales {hp.eval_scales}" if hp.eval_scales else ""
    return task.last_metrics, f"{where} (validation split{mf}{', flip' if hp.eval_flip else ''})"


def _draw_segmentation(task, dm, path: Path, count: int) -> None:
    """The first ``count`` validation images: ground truth (left) and prediction (right) blended in."""
    import numpy as np
    import torch

    from ..data.segmentation import segmentation_collate
    from ..evaluation.visualize import overlay_mask, save_image_grid

    dataset, tiles = dm.val_dataset, []
    task.eval()
    for i in range(min(count, len(dataset))):
        image, target = segmentation_collate([dataset[i]])
        with torch.no_grad():
            label = task.segment(image, target)[1][0].cpu().numpy()
        rgb, mask = dataset.load(i)
        tiles += [overlay_mask(rgb, mask, task.hparams.class_names), overlay_mask(rgb, label, task.hparams.class_names)]
    save_image_grid([np.asarray(t) for t in tiles], path, nrow=4)


def _run_segmentation(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.segmentation import evaluate_mask_folders, save_segmentation_json

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    if args.predictions is not None:
        if args.ground_truth is None or args.num_classes is None:
            raise UserError("--predictions needs --ground-truth and --num-classes")
        if args.draw is not None:
            raise UserError("--draw goes with --checkpoint")
        stats = evaluate_mask_folders(args.predictions, args.ground_truth, args.num_classes, args.ignore_index, names)
        title = f"segmentation: {args.predictions} vs {args.ground_truth} ({stats['num_images']} masks)"
    else:
        stats, where = _evaluate_segmentation_checkpoint(args)
        title = f"segmentation: {args.checkpoint} on {where}"
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("accuracy", justify="right")
    for name, iou in stats["per_class_iou"].items():
        acc = stats["per_class_acc"][name]
        table.add_row(name, "-" if iou is None else f"{iou:.4f}", "-" if acc is None else f"{acc:.4f}")
    console = Console()
    console.print(table)
    console.print(f"mIoU {stats['miou']:.4f}   pixel accuracy {stats['pixel_acc']:.4f}   "
                  f"mean class accuracy {stats['mean_acc']:.4f}", markup=False)
    if stats.get("extra_predictions"):
        console.print(f"note: {stats['extra_predictions']} prediction(s) without ground truth were not scored",
                      markup=False)
    if args.json_out is not None:
        print(f"wrote {save_segmentation_json(stats, args.json_out)}")
    return 0


# -------------------------------------------------------------------------------- parser ----
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_coco_parser, _add_classification_parser, _add_geolocalization_parser, _add_segmentation_parser,
    add_attributes_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilevision eval", description="mobilevision evaluation")
    subparsers = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit code.

    Missing files and invalid inputs (unknown image/category ids, ...) print ``error: ...`` to
    stderr and return 2.
    """
    args = build_parser().parse_args(argv)
    return report_errors(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
