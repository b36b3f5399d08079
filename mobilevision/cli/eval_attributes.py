"""``mobilevision eval attributes``: average precision per attribute and its mean, accuracy at 0.5 and at tuned
thresholds, of a checkpoint on its validation data or of a predictions CSV against a ground-truth CSV.

    mobilevision eval attributes --checkpoint CKPT [--data-dataset NAME] [--data-root DIR] [--val-csv G.csv]
                                 [--thresholds STATS.json] [--json-out stats.json] [--ap-png ap.png]
    mobilevision eval attributes --predictions P.csv --ground-truth G.csv [--thresholds STATS.json]
                                 [--json-out stats.json] [--ap-png ap.png]

``--thresholds`` takes the per-attribute thresholds of an earlier ``--json-out`` (chosen on validation) and reports
the accuracy at them; without it each attribute's threshold is the best one on the data evaluated.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..errors import UserError, first_few

__all__ = ["add_attributes_parser"]


def add_attributes_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attributes",
        help="mean average precision over attributes of a checkpoint, or of a predictions CSV against a ground truth",
        description="Average precision per attribute (scikit-learn's definition) and its mean, accuracy at 0.5 and "
        "at per-attribute thresholds. --checkpoint runs an AttributesTask checkpoint over the validation data it was "
        "trained with (or --data-dataset / --data-root / --val-csv); --predictions scores a CSV written by "
        "`mobilevision predict` (file + one probability per attribute) against a CSV of file + 1 / 0 / empty.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="AttributesTask checkpoint (.ckpt)")
    source.add_argument("--predictions", type=Path, help="predictions CSV (file, [frame,] one column per attribute)")
    p.add_argument("--ground-truth", type=Path, help="with --predictions: CSV of file + one 1 / 0 / empty column per "
                   "attribute")
    p.add_argument("--data-dataset", help="with --checkpoint: dataset of AttributesDataModule (default: the "
                   "checkpoint's)")
    p.add_argument("--data-root", type=Path, help="with --checkpoint: dataset root (default: the checkpoint's)")
    p.add_argument("--val-csv", type=Path, help="with --checkpoint: a CSV of images to evaluate on (dataset csv)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--thresholds", type=Path, help="stats JSON of an earlier evaluation: accuracy at its thresholds")
    p.add_argument("--json-out", type=Path, help="write every figure and the per-attribute table here")
    p.add_argument("--ap-png", type=Path, help="save the per-attribute average precisions as a bar chart")
    p.set_defaults(func=_run)


def _thresholds(path: Path | None, names: list[str]) -> list[float] | None:
    if path is None:
        return None
    try:
        per = json.loads(Path(path).read_text())["per_attribute"]
        return [float(per[n]["threshold"]) for n in names]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not the stats JSON of an attributes evaluation with a threshold for each of "
                        f"{first_few(names)} ({type(e).__name__}: {e})") from e


def _from_checkpoint(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    import pytorch_lightning as pl

    from ..data.attributes import AttributesDataModule
    from ..deploy.evaluate import checkpoint_data_args
    from ..tasks import AttributesTask, load_task

    task, ckpt = load_task(args.checkpoint, AttributesTask)
    data_args = checkpoint_data_args(ckpt, args.batch_size)
    if args.data_dataset is not None:
        data_args["dataset"] = args.data_dataset
    if args.data_root is not None:
        data_args["root"] = str(args.data_root)
    if args.val_csv is not None:
        data_args.update(dataset="csv", val_csv=str(args.val_csv), train_csv=str(args.val_csv))
    data_args.setdefault("image_size", task.hparams.image_size)
    dm = AttributesDataModule(**data_args)
    names = list(task.hparams.attribute_names or [])
    if names and dm.attribute_names != names:
        raise UserError(f"{args.checkpoint} predicts the attributes {first_few(names)}, the data has "
                        f"{first_few(dm.attribute_names)}")
    dm.setup("validate")
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=True, enable_model_summary=False)
    out = trainer.predict(task, dataloaders=dm.val_dataloader())
    scores = torch.cat([o["probs"] for o in out])
    labels = torch.cat([o["targets"] for o in out])
    where = args.val_csv or data_args.get("val_csv") or data_args.get("root") or data_args.get("dataset")
    return scores, labels, names or dm.attribute_names, f"{where} ({len(labels)} images)"


def _from_files(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    from ..data.attributes import read_attribute_csv
    from ..evaluation.attributes import read_attribute_scores

    if args.ground_truth is None:
        raise UserError("--predictions needs --ground-truth (a CSV of file + one 1 / 0 / empty column per attribute)")
    files, pred_names, scores = read_attribute_scores(args.predictions)
    gt = read_attribute_csv(args.ground_truth, image_root="")
    missing = [n for n in gt.names if n not in pred_names]
    if missing:
        raise UserError(f"{args.predictions}: no column for the attribute(s) {first_few(missing)} of "
                        f"{args.ground_truth}")
    columns = [pred_names.index(n) for n in gt.names]
    by_name = {f: i for i, f in enumerate(files)}
    by_base: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_base.setdefault(os.path.basename(f), []).append(i)
    rows, unmatched = [], []
    for f in gt.files:
        i = by_name.get(f)
        if i is None and len(by_base.get(os.path.basename(f), [])) == 1:
            i = by_base[os.path.basename(f)][0]
        if i is None:
            unmatched.append(f)
        rows.append(i)
    if unmatched:
        raise UserError(f"{args.predictions}: no prediction for {len(unmatched)} of the {len(gt.files)} images of "
                        f"{args.ground_truth}: {first_few(unmatched)}")
    labels = torch.as_tensor(gt.labels.astype("float32"))  # UNKNOWN (-1) stays -1: left out of the metrics
    return scores[rows][:, columns], labels, list(gt.names), f"{args.ground_truth} ({len(rows)} images)"


def _print(stats: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    console = Console()
    table = Table(title=title)
    for col in ("attribute", "AP", "acc@0.5", "threshold", "acc@thr", "pos", "neg", "unknown"):
        table.add_column(col, justify="left" if col == "attribute" else "right")
    for name, e in stats["per_attribute"].items():
        table.add_row(name, f(e["ap"]), f(e["acc_at_0.5"]), f(e["threshold"]), f(e["acc_at_threshold"]),
                      str(e["positives"]), str(e["negatives"]), str(e["unknown"]))
    table.add_row("[bold]mean[/]", f"[bold]{stats['mean_ap']:.4f}[/]", f(stats["mean_acc_at_0.5"]), "",
                  f(stats["mean_acc_at_threshold"]), "", "", "")
    console.print(table)


def _run(args: argparse.Namespace) -> int:
    from ..evaluation.attributes import attribute_stats, save_attribute_ap_png, save_stats_json

    if args.predictions is not None:
        scores, labels, names, where = _from_files(args)
        source = args.predictions
    else:
        scores, labels, names, where = _from_checkpoint(args)
        source = args.checkpoint
    stats = attribute_stats(scores, labels, names, _thresholds(args.thresholds, names))
    print(f"attributes evaluation of {source} on {where}")
    _print(stats, "average precision per attribute")
    print(f"mean AP {stats['mean_ap']:.4f}")
    if args.json_out is not None:
        print(f"wrote {save_stats_json(stats, args.json_out)}")
    if args.ap_png is not None:
        print(f"wrote {save_attribute_ap_png(stats, args.ap_png, title=f'AP per attribute: {Path(source).name}')}")
    return 0
