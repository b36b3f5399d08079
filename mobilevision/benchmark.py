"""Benchmark every registered backbone: params, MAdds, batch-1 latency, against torchvision / timm.

Usage::

    python tools/benchmark.py [--quick] [--backbones a,b,c] [--repeats N] [--warmup N] [--threads N]
                              [--device auto|cpu|cuda|cpu,cuda] [--out outputs/benchmark]

Writes ``benchmark.md`` (every section), one CSV per section (``backbones.csv``) and
``latency_vs_madds.png`` to ``--out``, and prints the same tables with rich.

The report is a list of sections, each built by its own function (:func:`backbone_section`, ...)
returning a :class:`Section`; a new section (e.g. detection throughput) is one more function whose
result :func:`main` appends to the list.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .backbones import list_backbones
from .evaluation.complexity import count_madds, count_params, measure_latency_interleaved, spearman
from .layers import reparameterize_model
from .models import create_classifier

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

def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_lines(devices: Sequence[str]) -> list[str]:
    lines = [
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.system()} {platform.machine()}",
        f"CPU: {_cpu_name()}, torch.get_num_threads() = {torch.get_num_threads()}",
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

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mobilevision-benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"a few backbones ({', '.join(QUICK_BACKBONES)}, unless --backbones), resolution capped at "
                        f"{QUICK_MAX_RESOLUTION}, fewer repeats: about a minute or two on 2 CPU cores")
    p.add_argument("--backbones", default=None, help="comma-separated backbone names (default: every registered one)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per model (default 50, --quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per model (default 5, --quick 2)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of timed runs per (ours, reference) pair and device before stopping early "
                        "(default 15, --quick 3)")
    p.add_argument("--max-resolution", type=int, default=None,
                   help=f"cap on the input resolution (default: native; --quick {QUICK_MAX_RESOLUTION})")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, or cpu,cuda; auto = cpu, plus cuda when available")
    p.add_argument("--out", type=Path, default=Path("outputs/benchmark"), help="output directory")
    args = p.parse_args(None if argv is None else [str(a) for a in argv])
    defaults = {"repeats": (50, 10), "warmup": (5, 2), "time_budget": (15.0, 3.0),
                "max_resolution": (None, QUICK_MAX_RESOLUTION)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
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
        sections = [backbone_section(args, devices, out_dir, log)]
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
    console.print(f"\nwrote {md}, {', '.join(s.csv_name + '.csv' for s in sections)} and latency_vs_madds.png "
                  f"to {out_dir} in {runtime:.0f} s", markup=False)
    return sections


if __name__ == "__main__":
    main()
