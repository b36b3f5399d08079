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
    p.add_argument("--annotations", required=True, type=Path, help="COCO instances annotation JSON (ground truth)")
    p.add_argument("--results", required=True, type=Path, help="COCO bbox results JSON (detections)")
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


def _run_coco(args: argparse.Namespace) -> int:
    from .evaluation.coco import evaluate_results_file

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
