"""The segmentation section: DeepLabv3 / LR-ASPP params and MAdds against the MobileNetV2 paper's Table 7, and
latency."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ...evaluation.complexity import (
    count_madds,
    count_params,
    measure_latency_interleaved,
)
from .report import Column, Section, fmt_float, fmt_millions


# -- segmentation section --------------------------------------------------------------------------

#: MobileNetV2 paper (arXiv 1801.04381), Table 7: DeepLabv3 on PASCAL VOC at 513 x 513, 21 classes, output stride 16
#: (network, backbone, aspp, tap) -> (params, MAdds); V2* = heads on the 320-channel map before the last 1x1 conv
PAPER_DEEPLAB = {("MNet V1", "mobilenet_v1", True, -1): (11.15e6, 14.25e9),
                 ("MNet V2*", "mobilenet_v2", True, -2): (4.52e6, 5.8e9),
                 ("MNet V2*", "mobilenet_v2", False, -2): (2.11e6, 2.75e9)}


def _segmentation_columns(devices: Sequence[str]) -> list[Column]:
    cols = [Column("network", "network"), Column("head", "head"), Column("output_stride", "OS"),
            Column("aspp", "ASPP"), Column("params", "params (M)", fmt_millions(2)),
            Column("paper_params", "paper params (M)", fmt_millions(2)), Column("madds", "MAdds (B)", fmt_float(2)),
            Column("paper_madds", "paper MAdds (B)", fmt_float(2))]
    for dev in devices:
        cols += [Column(f"{dev}_ms", f"{dev} ms", fmt_float(1)), Column(f"{dev}_runs", f"{dev} runs")]
    return cols


def segmentation_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                         log: Callable[[str], None] = print) -> Section:
    """DeepLabv3 (MobileNetV1 / V2*, with and without ASPP, output stride 16 and 8) and LR-ASPP at 513 x 513, 21
    classes: params and MAdds against Table 7 of the MobileNetV2 paper, and batch-1 latency."""
    from ...models import SegmentationModel

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


