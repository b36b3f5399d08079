"""The backbones section: params, MAdds and latency of every registered backbone against torchvision / timm."""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...backbones import list_backbones
from ...evaluation.complexity import (
    count_madds,
    cpu_name,
    count_params,
    measure_latency_interleaved,
    spearman,
)
from ...layers import reparameterize_model
from ...models import create_classifier
from .report import Column, Section, fmt_float, fmt_millions, fmt_str


#: registered names that are aliases of another row (``efficientnet`` with phi=0 is B0)
ALIASES = {"efficientnet"}
#: backbones ``--quick`` runs when ``--backbones`` is not given
QUICK_BACKBONES = ("mobilenet_v1", "mobilenet_v2", "mobileone_s0", "efficientnet_b0", "efficientnet_b2")
QUICK_MAX_RESOLUTION = 160


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
        Column("form", "form", fmt_str),
        Column("resolution", "res"),
        Column("params", "params (M)", fmt_millions(2)),
        Column("madds", "MAdds (M)", fmt_millions(0)),
        Column("reference", "reference", fmt_str),
        Column("ref_params", "ref params (M)", fmt_millions(2)),
        Column("ref_madds", "ref MAdds (M)", fmt_millions(0)),
    ]
    for dev in devices:
        d = dev.upper() if dev == "cpu" else "GPU"
        cols += [
            Column(f"{dev}_ms", f"{d} ms", fmt_float(2)),
            Column(f"{dev}_p90_ms", f"{d} p90 ms", fmt_float(2)),
            Column(f"{dev}_ref_ms", f"ref {d} ms", fmt_float(2)),
            Column(f"{dev}_ratio", f"{d} ours/ref", fmt_float(2)),
            Column(f"{dev}_runs", f"{d} runs", fmt_str),
            Column(f"{dev}_min_ms", f"{d} min ms", fmt_float(2), csv_only=True),
            Column(f"{dev}_ref_min_ms", f"ref {d} min ms", fmt_float(2), csv_only=True),
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


