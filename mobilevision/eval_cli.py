"""``tools/eval.py``: evaluation entry point, one subcommand per task.

    python tools/eval.py coco --annotations GT.json --results DT.json [--json-out stats.json]
                              [--backend pycocotools|faster_coco_eval] [--per-category]

Each subcommand is registered by an ``_add_<task>_parser(subparsers)`` function that sets
``func`` to its handler ``(args) -> int``; to add a task (``classification``,
``geolocalization``) write those two functions and list the adder in ``_SUBCOMMANDS``. A
checkpoint-evaluation mode for ``coco`` (run a model, then evaluate) would add ``--checkpoint``
etc. to the coco parser, in a mutually exclusive group with ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


# ------------------------------------------------------------------------------------ coco ----
def _add_coco_parser(subparsers: argparse._SubParsersAction) -> None:
    from .evaluation.coco import BACKENDS

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

    from .evaluation.coco import STAT_DESCRIPTIONS, STAT_KEYS

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
    """Run a DetectionTask checkpoint over a COCO-format set with Lightning's validate loop."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import RichProgressBar

    from .data import CocoDetectionDataModule
    from .tasks import DetectionTask, load_task

    task, ckpt = load_task(args.checkpoint, DetectionTask)
    data_args = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    if (args.annotations is None) != (args.images is None):
        raise ValueError("give both --annotations and --images (or neither, for the checkpoint's own validation set)")
    if args.annotations is not None:  # evaluate on another set; training paths only feed the category list
        data_args.update(train_images=str(args.images), train_annotations=str(args.annotations),
                         val_images=str(args.images), val_annotations=str(args.annotations))
    data_args.update(batch_size=args.batch_size, cache_images=False)
    dm = CocoDetectionDataModule(**data_args)
    if task.hparams.label_to_category_id and list(task.hparams.label_to_category_id) != dm.label_to_category_id:
        raise ValueError(f"{args.checkpoint} predicts category ids {task.hparams.label_to_category_id}, but "
                         f"{dm.val_annotations} has {dm.label_to_category_id}")
    task.hparams.eval_backend = args.backend
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         callbacks=[RichProgressBar()])
    trainer.validate(task, datamodule=dm, verbose=False)
    stats = task.last_metrics
    print(f"COCO bbox evaluation of {args.checkpoint} on {dm.val_annotations} [{args.backend}]")
    if args.results_out is not None:
        task.evaluator.results_json(args.results_out)
        print(f"wrote {args.results_out}")
    if args.draw is not None:
        _draw_predictions(task, dm, args.draw, args.draw_count)
        print(f"wrote {args.draw}")
    return stats


def _draw_predictions(task, dm, path: Path, count: int) -> None:
    import torch

    from .evaluation.coco import scale_boxes
    from .evaluation.visualize import draw_detections

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
    from .evaluation.coco import evaluate_results_file

    if args.checkpoint is not None:
        stats = _evaluate_checkpoint(args)
    else:
        if args.annotations is None:
            raise ValueError("--results needs --annotations")
        stats = evaluate_results_file(args.annotations, args.results, backend=args.backend)
        print(f"COCO bbox evaluation of {args.results} against {args.annotations} [{args.backend}]")
    _print_coco(stats, args.per_category, title="COCO bbox mAP")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(stats, f, indent=2)
        print(f"wrote {args.json_out}")
    return 0


# -------------------------------------------------------------------------------- parser ----
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_coco_parser,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/eval.py", description="mobilevision evaluation")
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
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
