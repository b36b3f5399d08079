"""The detection section: SSDLite inference and training steps against torchvision's SSD pipeline."""

from __future__ import annotations

import argparse
import copy
import functools
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...evaluation.complexity import (
    count_madds,
    count_params,
    time_interleaved,
)
from .report import Column, Section, fmt_float


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
        Column("ours_ips", "ours img/s", fmt_float(1)), Column("tv_ips", "torchvision img/s", fmt_float(1)),
        Column("ratio", "ours/tv", fmt_float(2)),
        Column("ours_ms", "ours ms", fmt_float(1)), Column("tv_ms", "tv ms", fmt_float(1)),
        Column("runs", "runs"),
        Column("width", "width", csv_only=True), Column("num_classes", "classes", csv_only=True),
        Column("params", "params", csv_only=True), Column("madds", "MAdds", csv_only=True),
        Column("ours_min_ms", "ours min ms", fmt_float(1), csv_only=True),
        Column("tv_min_ms", "tv min ms", fmt_float(1), csv_only=True),
    ]


def detection_section(args: argparse.Namespace, devices: Sequence[str], out_dir: Path,
                      log: Callable[[str], None] = print) -> Section:
    """SSDLite-MobileNetV2: ours against torchvision's SSD pipeline on the same feature extractor,
    images/s of inference (forward + post-processing) and of a training step, interleaved."""
    from ...models import SSDLite

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


