"""Benchmark every registered backbone: params, MAdds, batch-1 latency, against torchvision / timm.

Usage::

    mobilevision benchmark [--quick] [--sections backbones,detection,segmentation,runtimes] [--backbones a,b,c]
                              [--repeats N] [--warmup N] [--threads N] [--device auto|cpu|cuda|cpu,cuda]
                              [--out outputs/benchmark] [--det-size S] [--det-width W] [--det-batch B]
                              [--det-infer-batch 1,8] [--seg-size S] [--runtime-models a,b] [--runtime-size S]
                              [--runtime-batch 1,8]

Writes ``benchmark.md`` (every section), one CSV per section (``backbones.csv``, ``detection.csv``,
``segmentation.csv``, ``runtimes.csv``) and
``latency_vs_madds.png`` to ``--out``, and prints the same tables with rich.

The report is a list of sections, each built by its own function (:func:`backbone_section`: params,
MAdds, latency of every backbone against torchvision / timm; :func:`detection_section`: images/s of
SSDLite inference and training steps against torchvision's SSD pipeline; :func:`segmentation_section`: DeepLabv3 /
LR-ASPP params and MAdds against the MobileNetV2 paper's Table 7, and latency; :func:`runtime_section`: torch
eager vs ONNX Runtime float32 / int8 on the CPU, with the torchvision / timm architecture exported the same
way) returning a :class:`Section`; a new section is one more function in :data:`SECTIONS`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import functools
import math
import platform
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..backbones import list_backbones
from ..evaluation.complexity import (
    count_madds,
    cpu_name,
    count_params,
    measure_latency_interleaved,
    spearman,
    time_interleaved,
)
from ..layers import reparameterize_model
from ..models import create_classifier

#: registered names that are aliases of another row (``efficientnet`` with phi=0 is B0)
ALIASES = {"efficientnet"}
#: backbones ``--quick`` runs when ``--backbones`` is not given
QUICK_BACKBONES = ("mobilenet_v1", "mobilenet_v2", "mobileone_s0", "efficientnet_b0", "efficientnet_b2")
QUICK_MAX_RESOLUTION = 160


# -- report structure ------------------------------------------------------------------------------

@dataclass
class Column:
    key: str  # CSV header and row key
    title: str  # markdown / console header
    fmt: Callable[[Any], str] = str
    csv_only: bool = False  # kept out of the markdown / console table


@dataclass
class Section:
    """One part of the report: a table (written to ``<csv_name>.csv`` too) plus free-form notes."""

    title: str
    csv_name: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)  # markdown paragraphs printed above the table
    after: list[str] = field(default_factory=list)  # markdown paragraphs printed below the table


def _fmt_float(digits: int) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.{digits}f}"
    return fmt


def _fmt_millions(digits: int) -> Callable[[Any], str]:
    inner = _fmt_float(digits)
    return lambda v: inner(None if v is None else v / 1e6)


def _fmt_str(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


# -- reference implementations ---------------------------------------------------------------------

def reference_model(name: str, folded: bool = False) -> tuple[str, nn.Module] | None:
    """(label, model) of the torchvision / timm implementation of backbone ``name``, random weights.

    ``folded``: the re-parameterized inference form (timm MobileOne via ``timm.utils.reparameterize_model``).
    None when there is no reference (or timm is not installed).
    """
    if name == "mobilenet_v2" or (name.startswith("efficientnet_b") and name[-1].isdigit()):
        import torchvision

        return f"torchvision {name}", getattr(torchvision.models, name)(weights=None)
    timm_name = {"mobilenet_v1": "mobilenetv1_100"}.get(name, name if name.startswith("mobileone_s") else None)
    if timm_name is None:
        return None
    try:
        import timm
        import timm.utils
    except ImportError:
        return None
    model = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    if folded:
        return f"timm {timm_name} (reparameterized)", timm.utils.reparameterize_model(model).eval()
    return f"timm {timm_name}", model.eval()


def _is_reparameterizable(model: nn.Module) -> bool:
    return any(m is not model and hasattr(m, "reparameterize") for m in model.modules())


# -- environment -----------------------------------------------------------------------------------

def environment_lines(devices: Sequence[str]) -> list[str]:
    lines = [
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.system()} {platform.machine()}",
        f"CPU: {cpu_name()}, torch.get_num_threads() = {torch.get_num_threads()}",
    ]
    if "cuda" in devices:
        lines.append(f"GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    return lines


# -- backbones section -----------------------------------------------------------------------------

def backbone_names(args: argparse.Namespace) -> list[str]:
    if args.backbones:
        names = [n.strip() for n in args.backbones.split(",") if n.strip()]
        known = set(list_backbones())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown backbones {unknown}; known: {', '.join(sorted(known))}")
        return names
    if args.quick:
        return list(QUICK_BACKBONES)
    return [n for n in list_backbones() if n not in ALIASES]


def _backbone_columns(devices: Sequence[str]) -> list[Column]:
    cols = [
        Column("backbone", "backbone"),
        Column("form", "form", _fmt_str),
        Column("resolution", "res"),
        Column("params", "params (M)", _fmt_millions(2)),
        Column("madds", "MAdds (M)", _fmt_millions(0)),
        Column("reference", "reference", _fmt_str),
        Column("ref_params", "ref params (M)", _fmt_millions(2)),
        Column("ref_madds", "ref MAdds (M)", _fmt_millions(0)),
    ]
    for dev in devices:
        d = dev.upper() if dev == "cpu" else "GPU"
        cols += [
            Column(f"{dev}_ms", f"{d} ms", _fmt_float(2)),
            Column(f"{dev}_p90_ms", f"{d} p90 ms", _fmt_float(2)),
            Column(f"{dev}_ref_ms", f"ref {d} ms", _fmt_float(2)),
            Column(f"{dev}_ratio", f"{d} ours/ref", _fmt_float(2)),
            Column(f"{dev}_runs", f"{d} runs", _fmt_str),
            Column(f"{dev}_min_ms", f"{d} min ms", _fmt_float(2), csv_only=True),
            Column(f"{dev}_ref_min_ms", f"ref {d} min ms", _fmt_float(2), csv_only=True),
        ]
    return cols


def _measure_row(row: dict[str, Any], ours: nn.Module, ref: nn.Module | None, devices: Sequence[str],
                 args: argparse.Namespace) -> None:
    res = row["resolution"]
    x = torch.randn(1, 3, res, res)
    for dev in devices:
        models = {"ours": ours} if ref is None else {"ours": ours, "ref": ref}
        stats = measure_latency_interleaved(models, x, warmup=args.warmup, repeats=args.repeats, device=dev,
                                            time_budget_s=args.time_budget)
        row[f"{dev}_ms"] = stats["ours"]["median_ms"]
        row[f"{dev}_p90_ms"] = stats["ours"]["p90_ms"]
        row[f"{dev}_runs"] = stats["ours"]["repeats"]
        row[f"{dev}_min_ms"] = stats["ours"]["min_ms"]
        if ref is not None:
            row[f"{dev}_ref_ms"] = stats["ref"]["median_ms"]
            row[f"{dev}_ref_min_ms"] = stats["ref"]["min_ms"]
            row[f"{dev}_ratio"] = stats["ours"]["median_ms"] / stats["ref"]["median_ms"]
        else:
            row[f"{dev}_ref_ms"] = row[f"{dev}_ref_min_ms"] = row[f"{dev}_ratio"] = None
    ours.to("cpu")
    if ref is not None:
        ref.to("cpu")
    if "cuda" in devices:
        torch.cuda.empty_cache()


def benchmark_backbone(name: str, args: argparse.Namespace, devices: Sequence[str],
                       log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows for one backbone: one, or two (unfolded, folded) for re-parameterizable ones."""
    torch.manual_seed(0)
    model = create_classifier(name, num_classes=1000).eval()
    resolution = int(getattr(model.backbone, "default_resolution", 224))
    if args.max_resolution:
        resolution = min(resolution, args.max_resolution)
    forms: list[tuple[str | None, nn.Module, bool]] = [(None, model, False)]
    if _is_reparameterizable(model):
        forms = [("unfolded", model, False), ("folded", reparameterize_model(model), True)]
    rows = []
    for form, ours, folded in forms:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"backbone": name, "form": form, "resolution": resolution,
                               "params": count_params(ours),
                               "madds": count_madds(ours, (1, 3, resolution, resolution))}
        ref_pair = reference_model(name, folded=folded)
        ref = None
        if ref_pair is not None:
            row["reference"], ref = ref_pair
            row["ref_params"] = count_params(ref)
            row["ref_madds"] = count_madds(ref, (1, 3, resolution, resolution))
        else:
            row["reference"] = row["ref_params"] = row["ref_madds"] = None
        _measure_row(row, ours, ref, devices, args)
        rows.append(row)
        lat = ", ".join(f"{d} {row[f'{d}_ms']:.1f} ms" + (f" (ref {row[f'{d}_ref_ms']:.1f})" if ref else "")
                        for d in devices)
        log(f"{name}{' ' + form if form else ''} @ {resolution}: {lat}  [{time.perf_counter() - t0:.0f} s]")
        del ref
    return rows


def _inference_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per backbone, in the form it is deployed in (folded for MobileOne)."""
    return [r for r in rows if r["form"] != "unfolded"]


def correlation_lines(rows: Sequence[dict[str, Any]], devices: Sequence[str]) -> list[str]:
    """Spearman rank correlation of latency with MAdds and with params (MobileOne paper, Sec. 3)."""
    rows = _inference_rows(rows)
    lines = []
    for dev in devices:
        d = "CPU" if dev == "cpu" else "GPU"
        refs = [r for r in rows if r.get(f"{dev}_ref_ms")]
        for who, prefix, subset in (("ours", "", rows), ("reference", "ref_", refs)):
            if len(subset) < 2:
                continue
            lat = [r[f"{dev}_{prefix}ms"] for r in subset]
            rho_m = spearman(lat, [r[f"{prefix}madds"] for r in subset])
            rho_p = spearman(lat, [r[f"{prefix}params"] for r in subset])
            lines.append(f"{d} latency ({who}, {len(subset)} backbones): Spearman rho with MAdds = {rho_m:.3f}, "
                         f"with params = {rho_p:.3f}")
    return lines


def plot_latency_vs_madds(rows: Sequence[dict[str, Any]], devices: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(devices), figsize=(7.5 * len(devices), 6), squeeze=False)
    for ax, dev in zip(axes[0], devices):
        kinds = {
            "ours": [r for r in rows if r["form"] != "unfolded"],
            "ours, MobileOne unfolded": [r for r in rows if r["form"] == "unfolded"],
        }
        styles = {"ours": dict(marker="o", color="C0"), "ours, MobileOne unfolded": dict(marker="x", color="C3")}
        for kind, subset in kinds.items():
            if subset:
                ax.scatter([r["madds"] / 1e6 for r in subset], [r[f"{dev}_ms"] for r in subset], zorder=3,
                           label=kind, **styles[kind])
        refs = [r for r in rows if r.get(f"{dev}_ref_ms")]
        if refs:
            ax.scatter([r["ref_madds"] / 1e6 for r in refs], [r[f"{dev}_ref_ms"] for r in refs], marker="^",
                       facecolors="none", edgecolors="0.5", zorder=2, label="torchvision / timm (same run)")
        for r in rows:
            label = r["backbone"] + (f" ({r['form']})" if r["form"] else "")
            ax.annotate(label, (r["madds"] / 1e6, r[f"{dev}_ms"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        xs = [r["madds"] / 1e6 for r in rows] + [r["ref_madds"] / 1e6 for r in refs]
        ys = [r[f"{dev}_ms"] for r in rows] + [r[f"{dev}_ref_ms"] for r in refs]
        ax.set_xlim(min(xs) / 1.25, max(xs) * 1.6)  # room for the labels on the right
        ax.set_ylim(min(ys) / 1.3, max(ys) * 1.3)
        ax.set_xlabel("MAdds (M, at each row's resolution)")
        ax.set_ylabel(f"{'CPU' if dev == 'cpu' else 'GPU'} latency, batch 1, median (ms)")
        threads = f", {torch.get_num_threads()} threads" if dev == "cpu" else ""
        ax.set_title(f"Latency vs MAdds ({dev}{threads})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def backbone_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                     log: Callable[[str], None] = print) -> Section:
    names = backbone_names(args)
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.extend(benchmark_backbone(name, args, devices, log))
    res_note = (f"Resolution: each backbone's native `default_resolution`, capped at {args.max_resolution} "
                f"(`res` column); MAdds are at that resolution." if args.max_resolution else
                "Resolution: each backbone's native `default_resolution` (`res` column); MAdds are at that resolution.")
    notes = [
        "ImageNet classifiers (backbone + global pool + linear, 1000 classes), random weights, eval mode, "
        "float32, batch 1. Params and MAdds (multiply-accumulates of convs and linears, counted with "
        "`torch.utils.flop_counter.FlopCounterMode` / 2) of ours and of the reference implementation.",
        res_note,
        f"Latency: median (and p90) of up to {args.repeats} timed forward passes after up to {args.warmup} "
        f"warm-up passes, under `torch.inference_mode`. Ours and the reference run alternately, pass by pass, "
        f"so both are measured under the same conditions; each (ours, reference) pair stops after "
        f"{args.time_budget:g} s of timed passes (at least 3 passes, warm-up cut to a fifth of that), so slow "
        f"models (the big EfficientNets) get fewer runs: see the `runs` columns. "
        f"CPU threads: torch.get_num_threads() = {torch.get_num_threads()}"
        + ("; denormals flushed to zero (`torch.set_flush_denormal`), as random-weight activations can "
           "otherwise hit x86's slow denormal path." if getattr(args, "flush_denormal", False) else "."),
        "`ours/ref` = our median latency / the reference's median latency (below 1: ours is faster). "
        "References: torchvision `mobilenet_v2`, `efficientnet_b*`; timm `mobilenetv1_100`, `mobileone_s*` "
        "(the folded row against `timm.utils.reparameterize_model`). MobileOne rows: `unfolded` is the "
        "train-time multi-branch form, `folded` the re-parameterized inference form.",
    ]
    after = []
    corr = correlation_lines(rows, devices)
    if corr:
        after.append("Rank correlation over the backbones in their inference form (MobileOne folded):")
        after.append("\n".join(f"- {line}" for line in corr))
    if rows:
        png = plot_latency_vs_madds(rows, devices, out_dir / "latency_vs_madds.png")
        after.append(f"![latency vs MAdds]({png.name})")
    return Section("Backbones", "backbones", _backbone_columns(devices), rows, notes, after)


# -- detection section -----------------------------------------------------------------------------

#: SSDLite-MobileNetV2 at 320 px, MobileNetV2 paper (arXiv 1801.04381), Table 6
PAPER_SSDLITE = {"params": 4.3e6, "madds": 0.8e9}
DET_MEAN, DET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as in mobilevision.data


class SSDLiteFeatures(nn.Module):
    """Our SSDLite's backbone + extras (deep copies) as the backbone of torchvision's ``SSD``: the six
    maps in an OrderedDict, as torchvision expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.extras = copy.deepcopy(model.backbone), copy.deepcopy(model.extras)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = list(self.backbone(x))
        features += self.extras(features[-1])
        return OrderedDict((str(k), f) for k, f in enumerate(features))


def torchvision_ssd(model: nn.Module, size: int) -> nn.Module:
    """torchvision's own SSD pipeline (``SSD`` + ``SSDLiteHead`` + ``DefaultBoxGenerator``) around a copy of
    ``model``'s feature extractor, with ``model``'s anchors, head layout, initial head weights, matching,
    mining and post-processing settings, and ImageNet normalization in its transform."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    gen = model.anchor_generator
    channels = [f.channels for f in model.backbone.feature_info] + model.extras.out_channels
    norm = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)
    head = SSDLiteHead(channels, gen.num_anchors_per_location(), model.num_classes + 1, norm)
    head.load_state_dict({k.replace("classification.", "classification_head.module_list.")
                          .replace("regression.", "regression_head.module_list."): v
                          for k, v in model.head.state_dict().items()})
    return SSD(SSDLiteFeatures(model), DefaultBoxGenerator(gen.aspect_ratios, scales=gen.scales, clip=gen.clip),
               (size, size), model.num_classes + 1, list(DET_MEAN), list(DET_STD), head,
               score_thresh=model.score_thresh, nms_thresh=model.nms_thresh,
               detections_per_img=model.detections_per_img, iou_thresh=model.iou_threshold,
               topk_candidates=model.topk_candidates, positive_fraction=1 / (1 + model.neg_pos_ratio))


def synthetic_targets(batch: int, size: int, num_classes: int, boxes_per_image: int = 3,
                      seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Random boxes (10-60% of the side) and labels (0..num_classes-1), ``boxes_per_image`` per image."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        wh = (torch.rand(boxes_per_image, 2, generator=g) * 0.5 + 0.1) * size
        xy = torch.rand(boxes_per_image, 2, generator=g) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(num_classes, (boxes_per_image,), generator=g)})
    return targets


def _detection_columns() -> list[Column]:
    return [
        Column("mode", "mode"), Column("device", "device"), Column("batch", "batch"), Column("resolution", "res"),
        Column("ours_ips", "ours img/s", _fmt_float(1)), Column("tv_ips", "torchvision img/s", _fmt_float(1)),
        Column("ratio", "ours/tv", _fmt_float(2)),
        Column("ours_ms", "ours ms", _fmt_float(1)), Column("tv_ms", "tv ms", _fmt_float(1)),
        Column("runs", "runs"),
        Column("width", "width", csv_only=True), Column("num_classes", "classes", csv_only=True),
        Column("params", "params", csv_only=True), Column("madds", "MAdds", csv_only=True),
        Column("ours_min_ms", "ours min ms", _fmt_float(1), csv_only=True),
        Column("tv_min_ms", "tv min ms", _fmt_float(1), csv_only=True),
    ]


def detection_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                      log: Callable[[str], None] = print) -> Section:
    """SSDLite-MobileNetV2: ours against torchvision's SSD pipeline on the same feature extractor,
    images/s of inference (forward + post-processing) and of a training step, interleaved."""
    from ..models import SSDLite

    size, width, classes = args.det_size, args.det_width, args.det_classes
    torch.manual_seed(0)
    ours = SSDLite("mobilenet_v2", num_classes=classes, image_size=size, width=width)
    ref = torchvision_ssd(ours, size)
    mean, std = torch.tensor(DET_MEAN).view(1, 3, 1, 1), torch.tensor(DET_STD).view(1, 3, 1, 1)
    with torch.device("meta"):
        paper_cfg = SSDLite("mobilenet_v2", num_classes=80, image_size=320)
    paper = {"params": count_params(paper_cfg), "madds": count_madds(paper_cfg, (1, 3, 320, 320))}
    common = {"resolution": size, "width": width, "num_classes": classes, "params": count_params(ours),
              "madds": count_madds(ours, (1, 3, size, size))}
    timing = dict(warmup=args.warmup, repeats=args.repeats, time_budget_s=args.time_budget)
    rows: list[dict[str, Any]] = []
    for dev in devices:
        ours.to(dev)
        ref.to(dev)
        m, s = mean.to(dev), std.to(dev)
        for mode, batch in [("inference", b) for b in args.det_infer_batch] + [("train step", args.det_batch)]:
            t0 = time.perf_counter()
            x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(dev)
            images = list(x)
            if mode == "inference":
                ours.eval()
                ref.eval()
                fns = {"ours": lambda: ours.postprocess(ours((x - m) / s)), "tv": lambda: ref(images)}
                with torch.inference_mode():
                    stats = time_interleaved(fns, device=dev, **timing)
            else:
                ours.train()
                ref.train()
                targets = [{k: v.to(dev) for k, v in t.items()} for t in synthetic_targets(batch, size, classes)]
                tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]  # 0 = background
                opt_ours = torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9)
                opt_tv = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)

                def step_ours() -> None:
                    opt_ours.zero_grad(set_to_none=True)
                    ours.compute_loss(ours((x - m) / s), targets)["loss"].backward()
                    opt_ours.step()

                def step_tv() -> None:
                    opt_tv.zero_grad(set_to_none=True)
                    sum(ref(images, tv_targets).values()).backward()
                    opt_tv.step()

                stats = time_interleaved({"ours": step_ours, "tv": step_tv}, device=dev, **timing)
            o, t = stats["ours"], stats["tv"]
            row = {"mode": mode, "device": dev, "batch": batch, **common,
                   "ours_ips": batch / o["median_ms"] * 1e3, "tv_ips": batch / t["median_ms"] * 1e3,
                   "ours_ms": o["median_ms"], "tv_ms": t["median_ms"], "runs": o["repeats"],
                   "ours_min_ms": o["min_ms"], "tv_min_ms": t["min_ms"]}
            row["ratio"] = row["ours_ips"] / row["tv_ips"]
            rows.append(row)
            log(f"SSDLite {mode} {dev} batch {batch} @ {size}: ours {row['ours_ips']:.1f} img/s, torchvision "
                f"{row['tv_ips']:.1f} img/s (ours/tv {row['ratio']:.2f})  [{time.perf_counter() - t0:.0f} s]")
        ours.to("cpu")
        ref.to("cpu")
        if dev == "cuda":
            torch.cuda.empty_cache()
    notes = [
        f"SSDLite-MobileNetV2 (width {width:g}, {size} px, {classes} classes, {common['params'] / 1e6:.2f} M params, "
        f"{common['madds'] / 1e6:.0f} M MAdds), random weights, float32: ours (`mobilevision.models.SSDLite`) "
        "against torchvision's own SSD pipeline (`torchvision.models.detection.SSD` with `SSDLiteHead` and "
        "torchvision's `DefaultBoxGenerator([[2, 3]] * 6, min_ratio 0.2, max_ratio 0.95)`) wired to a copy of "
        "our backbone + extras, with our initial head weights: the same network, anchors (count and layout; "
        "coordinates within float32 rounding), matching (IoU 0.5 + best anchor per box), 3:1 hard negative "
        f"mining and post-processing settings (score > {ours.score_thresh:g}, top {ours.topk_candidates} "
        f"candidates per class, NMS {ours.nms_thresh:g}, {ours.detections_per_img} detections per image).",
        "**Preprocessing: both pipelines time the ImageNet normalization of [0, 1] images** (ours as a "
        "`(x - mean) / std` on the batch inside the timed step, torchvision in its `GeneralizedRCNNTransform`). "
        f"Inputs are already {size} x {size}, so torchvision's resize keeps the size, but it still runs its "
        "(same-size) bilinear resize and batching copy, which are part of its pipeline.",
        "Inference = eval-mode forward + post-processing (ours: `model.postprocess(model(x))`; torchvision: "
        "`ssd(list_of_images)`), under `torch.inference_mode`. With random weights every class score is about "
        f"1/{classes + 1} > {ours.score_thresh:g}, so every class's top {ours.topk_candidates} candidates pass the "
        "score threshold, the heaviest post-processing load (trained weights pass far fewer, which narrows the "
        "inference gap): torchvision runs NMS on all of them, ours only on as many of the best-scoring ones as "
        f"it needs for its {ours.detections_per_img} detections (`mobilevision.detection.postprocess.top_nms`, "
        "same result). Training step = forward + "
        "loss (matching, mining) + backward + SGD step, train mode, on the same synthetic targets (3 random boxes "
        "per image). The two pipelines alternate run by run; median of up to "
        f"{args.repeats} timed runs after up to {args.warmup} warm-up runs, {args.time_budget:g} s of timed runs "
        f"per row. images/s = batch / median time; `ours/tv` = ours images/s / torchvision's (above 1: ours "
        f"is faster). CPU threads: torch.get_num_threads() = {torch.get_num_threads()}.",
    ]
    after = [f"Complexity vs the MobileNetV2 paper (Table 6, SSDLite-MobileNetV2, 320 px, 80 classes): "
             f"{paper['params'] / 1e6:.2f} M params (paper {PAPER_SSDLITE['params'] / 1e6:.1f} M, "
             f"{paper['params'] / PAPER_SSDLITE['params'] - 1:+.1%}), {paper['madds'] / 1e9:.3f} B MAdds "
             f"(paper {PAPER_SSDLITE['madds'] / 1e9:.1f} B, {paper['madds'] / PAPER_SSDLITE['madds'] - 1:+.1%}); "
             "the TF reference predicts 3 boxes instead of 6 on the stride-16 map."]
    return Section("Detection: SSDLite-MobileNetV2 vs torchvision SSD", "detection", _detection_columns(), rows,
                   notes, after)


# -- segmentation section --------------------------------------------------------------------------

#: MobileNetV2 paper (arXiv 1801.04381), Table 7: DeepLabv3 on PASCAL VOC at 513 x 513, 21 classes, output stride 16
#: (network, backbone, aspp, tap) -> (params, MAdds); V2* = heads on the 320-channel map before the last 1x1 conv
PAPER_DEEPLAB = {("MNet V1", "mobilenet_v1", True, -1): (11.15e6, 14.25e9),
                 ("MNet V2*", "mobilenet_v2", True, -2): (4.52e6, 5.8e9),
                 ("MNet V2*", "mobilenet_v2", False, -2): (2.11e6, 2.75e9)}


def _segmentation_columns(devices: Sequence[str]) -> list[Column]:
    cols = [Column("network", "network"), Column("head", "head"), Column("output_stride", "OS"),
            Column("aspp", "ASPP"), Column("params", "params (M)", _fmt_millions(2)),
            Column("paper_params", "paper params (M)", _fmt_millions(2)), Column("madds", "MAdds (B)", _fmt_float(2)),
            Column("paper_madds", "paper MAdds (B)", _fmt_float(2))]
    for dev in devices:
        cols += [Column(f"{dev}_ms", f"{dev} ms", _fmt_float(1)), Column(f"{dev}_runs", f"{dev} runs")]
    return cols


def segmentation_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                         log: Callable[[str], None] = print) -> Section:
    """DeepLabv3 (MobileNetV1 / V2*, with and without ASPP, output stride 16 and 8) and LR-ASPP at 513 x 513, 21
    classes: params and MAdds against Table 7 of the MobileNetV2 paper, and batch-1 latency."""
    from ..models import SegmentationModel

    size = args.seg_size  # latency; params and MAdds at the paper's 513
    configs = [(net, bb, "deeplabv3", os_, aspp, tap) for (net, bb, aspp, tap) in PAPER_DEEPLAB for os_ in (16, 8)]
    configs.append(("MNet V2", "mobilenet_v2", "lraspp", 16, False, -1))
    rows: list[dict[str, Any]] = []
    for net, backbone, head, output_stride, aspp, tap in configs:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = SegmentationModel(backbone, 21, head=head, output_stride=output_stride, aspp=aspp, tap=tap).eval()
        paper = PAPER_DEEPLAB.get((net, backbone, aspp, tap)) if output_stride == 16 and head == "deeplabv3" else None
        row: dict[str, Any] = {"network": net, "head": head, "output_stride": output_stride,
                               "aspp": "yes" if aspp else "", "params": count_params(model),
                               "madds": count_madds(model, (1, 3, 513, 513)) / 1e9,
                               "paper_params": paper[0] if paper else None,
                               "paper_madds": paper[1] / 1e9 if paper else None}
        for dev in devices:
            model.to(dev)
            stats = measure_latency_interleaved({"m": model}, torch.rand(1, 3, size, size, device=dev),
                                                warmup=args.warmup, repeats=args.repeats,
                                                time_budget_s=args.time_budget)["m"]
            row[f"{dev}_ms"], row[f"{dev}_runs"] = stats["median_ms"], stats["repeats"]
            model.to("cpu")
        rows.append(row)
        log(f"{net} {head} OS {output_stride}{' ASPP' if aspp else ''}: {row['params'] / 1e6:.2f} M params, "
            f"{row['madds']:.2f} B MAdds  [{time.perf_counter() - t0:.0f} s]")
    notes = [
        "`mobilevision.models.SegmentationModel`, 21 classes (PASCAL VOC), random weights, eval mode, float32, "
        f"batch 1, logits upsampled to the input size; MAdds at 513 x 513, latency at {size} x {size}. DeepLabv3 = torchvision's ASPP (1x1 + "
        "image pooling, plus 3x3 atrous branches at rates 6 / 12 / 18 at OS 16, 12 / 24 / 36 at OS 8 with ASPP; "
        "256 channels) + 1x1 classifier; MNet V2* taps the 320-channel map before MobileNetV2's last 1x1 conv; "
        "LR-ASPP = torchvision's `LRASPPHead` on MobileNetV2's last map (OS 16) and its last stride-8 map. "
        "Params and MAdds as in the backbones section; the paper's figures are Table 7 of arXiv 1801.04381 "
        "(OS 16 rows; its OS 8 rows are multi-scale + flip totals, not comparable with one pass).",
        f"Latency: median of up to {args.repeats} timed passes after up to {args.warmup} warm-up passes "
        f"({args.time_budget:g} s per model). CPU threads: torch.get_num_threads() = {torch.get_num_threads()}.",
    ]
    return Section("Segmentation: DeepLabv3 / LR-ASPP vs MobileNetV2 paper Table 7", "segmentation",
                   _segmentation_columns(devices), rows, notes)


# -- runtimes section ------------------------------------------------------------------------------

#: models of the runtimes section: name -> label; ``ssdlite`` is SSDLite-MobileNetV2, the rest are classifiers
RUNTIME_MODELS = {"mobilenet_v2": "MobileNetV2", "mobileone_s0": "MobileOne-S0 (folded)",
                  "efficientnet_b0": "EfficientNet-B0", "ssdlite": "SSDLite-MobileNetV2"}
#: CPU flags of the int8 dot-product instructions ONNX Runtime's int8 kernels use when present
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: the issue's aims: ORT float32 / torch eager, and our ORT / the reference's ORT
AIM_ORT_VS_EAGER, AIM_OURS_VS_REF = 0.4, 1.05


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def vnni_line() -> str:
    flags = cpu_flags()
    if not flags:
        return "VNNI: unknown (no /proc/cpuinfo flags)"
    have = [f for f in VNNI_FLAGS if f in flags]
    simd = next((f for f in ("avx512f", "avx2", "sse4_1") if f in flags), "none")
    if have:
        return f"VNNI: yes ({', '.join(have)}; widest SIMD {simd})"
    return (f"VNNI: no (neither avx512_vnni nor avx_vnni in the CPU flags; widest SIMD {simd}): ONNX Runtime's "
            "int8 kernels fall back to multiply-add sequences, so int8 gains less than on a VNNI CPU")


def _ort_runner(path: Path, threads: int) -> Callable[[Any], list]:
    """``x -> outputs`` of an ONNX file on ONNX Runtime's CPU provider: ``threads`` intra-op threads, no thread
    spinning (as :class:`~mobilevision.deploy.OnnxModel`), denormals as zero (as torch here). Works for any file:
    the references carry no mobilevision metadata."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


class _Decoded(nn.Module):
    """``decoder(*network(images))``: a deployable detector end to end (boxes, scores)."""

    def __init__(self, network: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.network, self.decoder = network, decoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(*self.network(images))


class _TorchvisionSSDNetwork(nn.Module):
    """torchvision's ``SSD`` backbone + ``SSDLiteHead`` without its transform and post-processing:
    ``{"cls_logits", "bbox_regression"}``, as our SSDLite's network outputs."""

    def __init__(self, ssd: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(list(self.backbone(x).values()))


def runtime_models(name: str, args: argparse.Namespace) -> tuple[nn.Module, int, nn.Module, str | None,
                                                                   nn.Module | None]:
    """(task, input size, eager module, reference label, reference module) of a runtimes row. The eager module is
    what the ONNX export holds (:func:`~mobilevision.deploy.deployable`: normalization + folded network [+ box
    decoder]); the reference is the torchvision / timm architecture behind the same normalization (detection:
    torchvision's SSD head on a copy of our feature extractor, and our decoder)."""
    from ..deploy import deployable
    from ..deploy.graph import NormalizedNetwork
    from ..tasks import ClassificationTask, DetectionTask

    torch.manual_seed(0)
    if name == "ssdlite":
        size = args.det_size
        task = DetectionTask(backbone="mobilenet_v2", num_classes=args.det_classes, image_size=size,
                             width=args.det_width).eval()
        network, decoder = deployable(task)
        tv = NormalizedNetwork(_TorchvisionSSDNetwork(torchvision_ssd(task.model, size)), detection=True)
        return (task, size, _Decoded(network, decoder).eval(), "torchvision SSD + SSDLiteHead",
                _Decoded(tv, decoder).eval())
    size = args.runtime_size
    task = ClassificationTask(backbone=name, num_classes=1000, image_size=size).eval()
    network, _ = deployable(task)
    ref = reference_model(name, folded=True)
    if ref is None:
        return task, size, network, None, None
    return task, size, network, ref[0], NormalizedNetwork(ref[1].eval(), detection=False).eval()


def export_reference(module: nn.Module, size: int, path: Path, opset: int) -> Path:
    """``torch.onnx.export(dynamo=True)`` of ``module`` with a dynamic batch, as :func:`export_onnx` does ours."""
    import logging
    import warnings

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(module, (torch.rand(2, 3, size, size),), path, dynamo=True, dynamic_shapes=({0: batch},),
                          opset_version=opset, external_data=False, verbose=False)
    return path


def _max_rel_err(got: Sequence[Any], want: Any) -> str:
    """max |got - want| / max |want| over the outputs (ONNX Runtime arrays against torch tensors), as ``1.2e-07``
    (the CSV's 4 decimals would round it to 0)."""
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    err = max(float(abs(g - w.numpy()).max() / max(float(w.abs().max()), 1e-12)) for g, w in zip(got, want))
    return f"{err:.1e}"


def _runtime_columns() -> list[Column]:
    return [
        Column("model", "model"), Column("reference", "reference", _fmt_str), Column("batch", "batch"),
        Column("resolution", "res"),
        Column("eager_ms", "eager ms", _fmt_float(2)), Column("ort_ms", "ORT ms", _fmt_float(2)),
        Column("int8_ms", "ORT int8 ms", _fmt_float(2)),
        Column("ref_eager_ms", "ref eager ms", _fmt_float(2)), Column("ref_ort_ms", "ref ORT ms", _fmt_float(2)),
        Column("ort_vs_eager", "ORT/eager", _fmt_float(2)), Column("int8_vs_ort", "int8/ORT", _fmt_float(2)),
        Column("ours_vs_ref_ort", "ORT ours/ref", _fmt_float(2)),
        Column("ref_ort_vs_eager", "ref ORT/eager", _fmt_float(2)), Column("runs", "runs"),
        Column("threads", "threads", csv_only=True),
        Column("ort_rel_err", "ORT max rel err", _fmt_str, csv_only=True),
        Column("int8_rel_err", "int8 max rel err", _fmt_str, csv_only=True),
        Column("ref_ort_rel_err", "ref ORT max rel err", _fmt_str, csv_only=True),
        *(Column(f"{k}_min_ms", f"{k} min ms", _fmt_float(2), csv_only=True)
          for k in ("eager", "ort", "int8", "ref_eager", "ref_ort")),
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def runtime_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                    log: Callable[[str], None] = print) -> Section:
    """torch eager vs ONNX Runtime float32 vs ONNX Runtime int8 (CPU), and the torchvision / timm architecture
    exported the same way, all timed side by side, for each model of ``--runtime-models`` and batch size."""
    import tempfile

    import numpy as np

    title, columns = "Runtimes: torch eager vs ONNX Runtime float32 / int8 (CPU)", _runtime_columns()
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) needs it

        from ..deploy import export_onnx, read_metadata
        from ..deploy.quantize import quantize_int8
    except ImportError as e:
        log(f"runtimes: skipped ({e}); install onnx, onnxscript and onnxruntime")
        return Section(title, "runtimes", columns, [], [f"Skipped: {e} (install onnx, onnxscript and onnxruntime)."])
    threads = torch.get_num_threads()
    timing = dict(warmup=args.warmup, repeats=args.repeats, time_budget_s=args.time_budget)
    rows: list[dict[str, Any]] = []
    opset = None
    with tempfile.TemporaryDirectory(prefix="mobilevision-runtimes-") as tmp:
        for name in args.runtime_models:
            t0 = time.perf_counter()
            task, size, eager, ref_label, ref = runtime_models(name, args)
            calib = [np.random.default_rng(i).random((2, 3, size, size), dtype=np.float32) for i in range(2)]
            f32 = export_onnx(task, Path(tmp, f"{name}.onnx"))
            int8 = export_onnx(task, Path(tmp, f"{name}_int8.onnx"), quantize=lambda m: quantize_int8(m, calib))
            opset = read_metadata(f32)["opset"]
            runs = {"eager": eager, "ort": _ort_runner(f32, threads), "int8": _ort_runner(int8, threads)}
            if ref is not None:
                runs.update(ref_eager=ref,
                            ref_ort=_ort_runner(export_reference(ref, size, Path(tmp, f"{name}_ref.onnx"), opset),
                                                threads))
            label = RUNTIME_MODELS[name]
            log(f"{label} @ {size}: exported float32, int8{' and reference' if ref is not None else ''} ONNX "
                f"in {time.perf_counter() - t0:.0f} s")
            for i, batch in enumerate(args.runtime_batch):
                t0 = time.perf_counter()
                x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
                xn = x.numpy()
                fns = {k: functools.partial(fn, x if k.endswith("eager") else xn) for k, fn in runs.items()}
                row: dict[str, Any] = {"model": label, "reference": ref_label, "batch": batch, "resolution": size,
                                       "threads": threads}
                if i == 0:  # the runtimes compute the same thing
                    with torch.inference_mode():
                        want = eager(x)
                        row["ort_rel_err"] = _max_rel_err(fns["ort"](), want)
                        row["int8_rel_err"] = _max_rel_err(fns["int8"](), want)
                        if ref is not None:
                            row["ref_ort_rel_err"] = _max_rel_err(fns["ref_ort"](), ref(x))
                with torch.inference_mode():
                    stats = time_interleaved(fns, device="cpu", **timing)
                for k in runs:
                    row[f"{k}_ms"], row[f"{k}_min_ms"] = stats[k]["median_ms"], stats[k]["min_ms"]
                row["runs"] = stats["eager"]["repeats"]
                row["ort_vs_eager"] = _ratio(row["ort_ms"], row["eager_ms"])
                row["int8_vs_ort"] = _ratio(row["int8_ms"], row["ort_ms"])
                row["ours_vs_ref_ort"] = _ratio(row["ort_ms"], row.get("ref_ort_ms"))
                row["ref_ort_vs_eager"] = _ratio(row.get("ref_ort_ms"), row.get("ref_eager_ms"))
                rows.append(row)
                ref_txt = f", ref ORT {row['ref_ort_ms']:.1f} ms" if ref is not None else ""
                log(f"{label} batch {batch} @ {size}: eager {row['eager_ms']:.1f} ms, ORT {row['ort_ms']:.1f} ms, "
                    f"int8 {row['int8_ms']:.1f} ms{ref_txt}  [{time.perf_counter() - t0:.0f} s]")
    sizes = sorted({r["resolution"] for r in rows})
    notes = [
        f"CPU: {cpu_name()}. {vnni_line()}. torch {torch.__version__} with torch.get_num_threads() = {threads}; "
        f"onnxruntime {ort.__version__} (CPUExecutionProvider, intra-op threads = {threads}, thread spinning off, "
        f"graph optimizations all); exported with torch.onnx.export(dynamo=True), opset {opset}.",
        "Random weights, float32 input [B, 3, S, S] in [0, 1]; ImageNet normalization is inside every model. "
        "`eager`: what the ONNX file holds (`mobilevision.deploy.deployable`: normalization + network, MobileOne "
        "folded, + box decoding for SSDLite) under `torch.inference_mode`. `ORT`: `mobilevision.deploy.export_onnx` "
        "of the same task (detection: boxes + scores, no NMS); `ORT int8`: the same with `quantize_int8` (static, "
        "QDQ, per-channel int8 weights, uint8 activations; prediction layers and box decoding stay float), "
        "calibrated on random batches (latency does not depend on calibration values). `ref`: the torchvision / timm "
        "implementation of the same "
        "architecture behind the same normalization (MobileOne: timm's `reparameterize_model`; SSDLite: "
        "torchvision's `SSD` backbone + `SSDLiteHead` around a copy of our feature extractor, then our box "
        "decoder), in eager mode and exported with `torch.onnx.export(dynamo=True)`, same opset, dynamic batch.",
        f"Sizes: {', '.join(map(str, sizes))} px (`res`); classifiers at --runtime-size, SSDLite at --det-size "
        f"(width {args.det_width:g}, {args.det_classes} classes). All runtimes of a row alternate run by run "
        f"(`mobilevision.evaluation.complexity.time_interleaved`), so machine noise hits all alike; median of up "
        f"to {args.repeats} timed runs after up to {args.warmup} warm-up runs, {args.time_budget:g} s of timed runs "
        "per row (`runs`). Denormals flushed to zero in both runtimes (`torch.set_flush_denormal`, ORT "
        "`session.set_denormal_as_zero`), as random-weight activations can otherwise hit x86's slow denormal path.",
        f"Ratios of medians: `ORT/eager` = ORT float32 / torch eager (aim <= {AIM_ORT_VS_EAGER:g}); `int8/ORT` = "
        f"int8 / float32; `ORT ours/ref` = our ORT / the reference's ORT (aim <= {AIM_OURS_VS_REF:g}); "
        "`ref ORT/eager` = the same ratio for the reference. The CSV also has each runtime's max relative "
        "output error against eager (first batch) and the minimum times.",
    ]
    after = []
    if rows:
        fast = [r for r in rows if r["ort_vs_eager"] <= AIM_ORT_VS_EAGER]
        refs = [r for r in rows if r["ours_vs_ref_ort"] is not None]
        close = [r for r in refs if r["ours_vs_ref_ort"] <= AIM_OURS_VS_REF]
        after.append(f"ORT/eager <= {AIM_ORT_VS_EAGER:g} in {len(fast)} of {len(rows)} rows; ORT ours/ref <= "
                     f"{AIM_OURS_VS_REF:g} in {len(close)} of {len(refs)} rows.")
    return Section(title, "runtimes", columns, rows, notes, after)


# -- output ----------------------------------------------------------------------------------------

def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return v


def write_csv(section: Section, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c.key for c in section.columns])
        writer.writeheader()
        for row in section.rows:
            writer.writerow({c.key: _csv_value(row.get(c.key)) for c in section.columns})
    return path


def _shown(section: Section) -> list[Column]:
    return [c for c in section.columns if not c.csv_only]


def markdown_table(section: Section) -> str:
    cols = _shown(section)
    lines = ["| " + " | ".join(c.title for c in cols) + " |",
             "|" + "|".join("---" if i < 2 or c.key == "reference" else "---:" for i, c in enumerate(cols)) + "|"]
    for row in section.rows:
        lines.append("| " + " | ".join(c.fmt(row.get(c.key)) for c in cols) + " |")
    return "\n".join(lines)


def render_markdown(sections: Sequence[Section], env: Sequence[str], runtime_s: float) -> str:
    parts = ["# mobilevision benchmark", "\n".join(f"- {line}" for line in env) + f"\n- Runtime: {runtime_s:.0f} s"]
    for s in sections:
        parts.append(f"## {s.title}")
        parts.extend(s.notes)
        parts.append(markdown_table(s))
        parts.extend(s.after)
    return "\n\n".join(parts) + "\n"


def print_section(section: Section, console) -> None:
    from rich.table import Table

    cols = _shown(section)
    table = Table(title=section.title, show_lines=False)
    for i, c in enumerate(cols):
        table.add_column(c.title, justify="left" if i < 2 or c.key == "reference" else "right")
    for row in section.rows:
        table.add_row(*(c.fmt(row.get(c.key)) for c in cols))
    for note in section.notes:
        console.print(note, markup=False)
    console.print(table)
    for line in section.after:
        console.print(line, markup=False)


# -- CLI -------------------------------------------------------------------------------------------

#: report sections, in report order: name -> function(args, devices, out_dir, log) -> Section
SECTIONS: dict[str, Callable[..., Section]] = {"backbones": backbone_section, "detection": detection_section,
                                              "segmentation": segmentation_section, "runtimes": runtime_section}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mobilevision benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"a few backbones ({', '.join(QUICK_BACKBONES)}, unless --backbones), resolution capped at "
                        f"{QUICK_MAX_RESOLUTION}, detection at 160 px and width 0.5, runtimes' classifiers at "
                        f"{QUICK_MAX_RESOLUTION} px, fewer repeats: a few minutes per section on 2 CPU cores")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated report sections, of {', '.join(SECTIONS)}")
    p.add_argument("--backbones", default=None, help="comma-separated backbone names (default: every registered one)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per model (default 50, --quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per model (default 5, --quick 2)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of timed runs per (ours, reference) pair and device before stopping early "
                        "(default 15, --quick 3)")
    p.add_argument("--max-resolution", type=int, default=None,
                   help=f"cap on the input resolution (default: native; --quick {QUICK_MAX_RESOLUTION})")
    p.add_argument("--det-size", type=int, default=None, help="detection: input size (default 320, --quick 160)")
    p.add_argument("--det-width", type=float, default=None,
                   help="detection: MobileNetV2 width multiplier (default 1.0, --quick 0.5)")
    p.add_argument("--det-classes", type=int, default=80, help="detection: object classes (without background)")
    p.add_argument("--det-batch", type=int, default=8, help="detection: training-step batch size (at least 2)")
    p.add_argument("--det-infer-batch", default="1,8", help="detection: comma-separated inference batch sizes")
    p.add_argument("--seg-size", type=int, default=None,
                   help="segmentation: latency input size (default 513, --quick 257; MAdds are always at 513)")
    p.add_argument("--runtime-models", default=",".join(RUNTIME_MODELS),
                   help=f"runtimes: comma-separated models, of {', '.join(RUNTIME_MODELS)} (SSDLite at --det-size "
                        "and --det-width)")
    p.add_argument("--runtime-size", type=int, default=None,
                   help="runtimes: classifier input size (default 224, --quick 160)")
    p.add_argument("--runtime-batch", default="1,8", help="runtimes: comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, or cpu,cuda; auto = cpu, plus cuda when available")
    p.add_argument("--out", type=Path, default=Path("outputs/benchmark"), help="output directory")
    args = p.parse_args(None if argv is None else [str(a) for a in argv])
    defaults = {"repeats": (50, 10), "warmup": (5, 2), "time_budget": (15.0, 3.0),
                "max_resolution": (None, QUICK_MAX_RESOLUTION), "det_size": (320, 160), "det_width": (1.0, 0.5),
                "seg_size": (513, 257), "runtime_size": (224, QUICK_MAX_RESOLUTION)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if not args.sections or set(args.sections) - set(SECTIONS):
        p.error(f"--sections: expected a comma-separated subset of {', '.join(SECTIONS)}, got {args.sections}")
    args.det_infer_batch = [int(b) for b in str(args.det_infer_batch).split(",") if b.strip()]
    if args.det_batch < 2 or any(b < 1 for b in args.det_infer_batch):
        p.error("--det-batch must be >= 2 (batch norm on the 1x1 extra maps) and --det-infer-batch >= 1")
    args.runtime_models = [x.strip() for x in args.runtime_models.split(",") if x.strip()]
    if not args.runtime_models or set(args.runtime_models) - set(RUNTIME_MODELS):
        p.error(f"--runtime-models: expected a comma-separated subset of {', '.join(RUNTIME_MODELS)}, "
                f"got {args.runtime_models}")
    args.runtime_batch = [int(b) for b in str(args.runtime_batch).split(",") if b.strip()]
    if not args.runtime_batch or any(b < 1 for b in args.runtime_batch) or args.runtime_size < 32:
        p.error("--runtime-batch must be positive batch sizes and --runtime-size >= 32")
    return args


def resolve_devices(spec: str) -> list[str]:
    if spec == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    for d in devices:
        if d not in ("cpu", "cuda"):
            raise SystemExit(f"--device: expected cpu, cuda, cpu,cuda or auto, got {spec!r}")
        if d == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available")
    return devices


def main(argv: Sequence[str] | None = None) -> list[Section]:
    from rich.console import Console

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = resolve_devices(args.device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if Console().is_terminal else 220)
    env = environment_lines(devices)
    for line in env:
        console.print(line, markup=False)

    # Random-weight activations can shrink into the denormal range, where x86 float math is many
    # times slower: an artifact that trained weights do not have, so flush denormals to zero.
    flushed = args.flush_denormal = torch.set_flush_denormal(True)
    start = time.perf_counter()
    log = lambda msg: console.print(msg, markup=False)  # noqa: E731
    try:
        sections = [SECTIONS[name](args, devices, out_dir, log) for name in SECTIONS if name in args.sections]
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    runtime = time.perf_counter() - start

    for section in sections:
        console.print()
        print_section(section, console)
        write_csv(section, out_dir / f"{section.csv_name}.csv")
    md = out_dir / "benchmark.md"
    md.write_text(render_markdown(sections, env, runtime))
    plot = " and latency_vs_madds.png" if "backbones" in args.sections else ""
    console.print(f"\nwrote {md}, {', '.join(s.csv_name + '.csv' for s in sections)}{plot} to {out_dir} "
                  f"in {runtime:.0f} s", markup=False)
    return sections


if __name__ == "__main__":
    main()
