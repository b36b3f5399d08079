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
eager vs ONNX Runtime and ExecuTorch (XNNPACK), float32 and int8, on the CPU, with the torchvision / timm
architecture exported the same way) returning a :class:`Section`; a new section is one more module and one more entry in
:data:`SECTIONS`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .backbones import QUICK_BACKBONES, QUICK_MAX_RESOLUTION, backbone_section, environment_lines
from .detection import detection_section, synthetic_targets, torchvision_ssd
from .report import Section, print_section, render_markdown, write_csv
from .runtimes import RUNTIME_MODELS, runtime_section
from .segmentation import segmentation_section

__all__ = ["SECTIONS", "Section", "main", "parse_args", "synthetic_targets", "torchvision_ssd"]


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
    p.add_argument("--runtime-backends", default="onnx,executorch",
                   help="runtimes: onnx (always) and executorch (XNNPACK float32 / int8 columns; needs the mobile "
                        "extra, lowers 4 files per model and batch size)")
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
    args.runtime_backends = [x.strip() for x in args.runtime_backends.split(",") if x.strip()]
    if set(args.runtime_backends) - {"onnx", "executorch"}:
        p.error(f"--runtime-backends: expected onnx and/or executorch, got {args.runtime_backends}")
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

