"""``mobilevision select``: the model for a latency budget, measured on this machine.

Usage::

    mobilevision select --task classification|ssdlite --latency-ms B
                        [--runtime torch|onnxruntime|onnxruntime-int8|executorch|executorch-int8]
                        [--threads N] [--batch 1]
                        [--families mobilenet_v1,mobilenet_v2,mobileone,efficientnet] [--candidates NAME,...]
                        [--sizes 320,256,192] [--statistic p90|median] [--repeats 30] [--warmup 5]
                        [--time-budget-s 300] [--remeasure] [--verify] [--output outputs/select]
    mobilevision select --task T --export-candidates DIR [--format executorch|onnx|coreml] [--int8]
    mobilevision select --task T --latency-ms B --device-latencies FILE.csv    (see select_device)

Measures the published grids of the families (:func:`~mobilevision.evaluation.selection.candidate_grid`: MobileNetV1
alpha x rho, MobileNetV2 depth multiplier x resolution as published, EfficientNet B0-B7 at their resolutions,
MobileOne S0-S4 folded; ``--task ssdlite``: the SSDLite detector at 320 px and smaller sizes on each backbone) on
this machine with random weights (latency does not depend on them), in the chosen runtime:

- ``torch``: the deployable network (:func:`~mobilevision.deploy.deployable`: normalization inside, MobileOne
  folded, for detection the box decoder) under ``torch.inference_mode``, ``torch.set_num_threads(N)``;
- ``onnxruntime`` / ``onnxruntime-int8``: the file ``mobilevision export`` writes (float32, or int8 calibrated on
  random images), on ONNX Runtime's CPU provider with N intra-op threads;
- ``executorch`` / ``executorch-int8``: the ``.pte`` file (XNNPACK, static batch ``--batch``) under
  ``executorch.runtime`` with an XNNPACK thread pool of N.

Every candidate is built with the network-shaping settings of the task's default recipe (for ``ssdlite`` its
``first_stride`` and default boxes: :data:`ARCHITECTURE_ARGS`), and the written config keeps them: the network timed is
the network the config trains. Detectors are timed up to the decoded boxes and scores (what the export outputs
without ``--nms``): the selection of detections depends on the scores, which random weights make meaningless.

All candidates are timed interleaved (every round runs each once, rotating the order): warm-up, then ``--repeats``
rounds (fewer once ``--time-budget-s`` has passed); the median and p90 of each are kept. oneDNN's primitive cache
is raised to 16384 kernels (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, unless set): with the default 1024, interleaving
the whole grid evicts every network's compiled kernels between two of its calls, which made the small networks 2-3x
slower than when they run alone. Each timed run follows ``--settle`` untimed runs of the same network (default 1):
otherwise it starts with the CPU caches full of the other networks' weights (right after an EfficientNet-B5 run,
MobileNetV1 0.25 at 128 px took twice as long as in a loop), while a deployed network runs in a loop. Results are cached per
device and runtime in ``OUTPUT/latency_cache/DEVICE__RUNTIME.json``, keyed by the recipe's network settings, batch,
threads, settle, warm-up and repeats, and reused only with the same library versions (each entry holds both the
median and the p90, so ``--statistic`` reads the same entry), exported files in ``OUTPUT/exports/``, so another budget is answered from the cache at once (``--remeasure``
measures again). The front and the budget use ``--statistic`` (p90 by default: the pick stays within the budget
in 9 runs out of 10).

Accuracy is the published ImageNet top-1 of each point (``mobilevision/backbones/published_top1.csv``, which
names the source of every row), not measured here; a point without a published figure is listed without one and
never picked. For ``ssdlite`` it is the backbone's top-1, and at the same backbone a larger input counts as better
(COCO AP is published for two points only, SSDLite-MobileNetV1 / V2 at 320: 22.2 / 22.1, MobileNetV2 paper
Table 6). A pick names the ImageNet weights ``backbone_weights: imagenet`` can load for it, or says there are none.

Writes to ``OUTPUT/TASK_RUNTIME_Bms/``: ``report.md`` (the front, the pick, the correlation, every candidate),
``candidates.csv``, ``pareto.png`` (every candidate, the front, the budget line) and ``config.yaml``: the task's
default training config (on the embedded data) with the pick's backbone, width and image size, ready for
``mobilevision train --config``.

Exit code: 0 when a candidate meets the budget; 1 when none does (the message names the fastest candidate and its
latency; the report and the plot are still written, no config); 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..backbones import load_published_top1
from ..errors import UserError
from ..deploy.candidates import RUNTIMES, prepare
from ..evaluation.complexity import busy_cpus, busy_warning, device_description, device_slug
from ..evaluation.latency_cache import LatencyCache, runtime_versions
from ..evaluation.selection import (
    DETECTION_SIZES,
    FAMILIES,
    STATISTICS,
    TASKS,
    Candidate,
    GridPoint,
    candidate_grid,
    choose,
    fastest,
    latency_madds_correlation,
    pareto_front,
    published_accuracy,
)
from ..models.pretrained import imagenet_weights
from . import report_errors
from .select_report import ROW_HEADERS, budget_str, markdown_table, plot, row, write_csv

ACCURACY_NOTE = ("Top-1 = published ImageNet-1k accuracy of the original checkpoints (source of every row in "
                 "mobilevision/backbones/published_top1.csv), not measured here; latencies are measured here "
                 "with random weights.")


# -- arguments --------------------------------------------------------------------------------------

def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mobilevision select", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure the families' published grids on this machine and pick the most accurate network "
                    "(published ImageNet top-1) within a latency budget.",
        epilog="Exit code: 0 a candidate meets the budget; 1 none does (the message names the fastest candidate "
               "and its latency); 2 invalid arguments.")
    p.add_argument("--task", choices=TASKS, default="classification",
                   help="classification (the 1000-class classifiers) or ssdlite (the detector on each backbone)")
    p.add_argument("--latency-ms", type=float, default=None,
                   help="the latency budget per batch, in milliseconds (required unless --list)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch / ONNX Runtime (default: torch.get_num_threads())")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--families", type=_csv_list, default=list(FAMILIES),
                   help=f"comma-separated subset of {','.join(FAMILIES)} (default: all)")
    p.add_argument("--candidates", type=_csv_list, default=None,
                   help="only these grid points, by name (e.g. mobilenet_v2_1.0_224,mobileone_s0; "
                        "--list shows the names)")
    p.add_argument("--sizes", type=_positive_ints, default=list(DETECTION_SIZES),
                   help=f"ssdlite input sizes (default {','.join(map(str, DETECTION_SIZES))})")
    p.add_argument("--statistic", choices=tuple(STATISTICS), default="p90",
                   help="the latency the front and the budget use (default p90)")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up rounds (default 5)")
    p.add_argument("--settle", type=int, default=1,
                   help="untimed runs of a network right before each of its timed runs, so that it is timed with "
                        "its own weights in the CPU caches, as when it runs in a loop (default 1; 0: cold, right "
                        "after the other candidates)")
    p.add_argument("--time-budget-s", type=float, default=300.0,
                   help="stop the timed rounds after this many seconds (at least 5 rounds; default 300)")
    p.add_argument("--remeasure", action="store_true", help="ignore the cache and measure every candidate again")
    p.add_argument("--verify", action="store_true",
                   help="re-measure the pick alone afterwards (a fresh network) and report it against the budget")
    p.add_argument("--list", action="store_true", help="print the candidates' names and exit")
    p.add_argument("--export-candidates", type=Path, metavar="DIR",
                   help="write every candidate (random weights) as a --format file of --batch into DIR, with "
                        "manifest.csv, to time them on the device; measures nothing here")
    p.add_argument("--format", choices=("executorch", "onnx", "coreml"), default="executorch",
                   help="with --export-candidates: the file format (default executorch)")
    p.add_argument("--int8", action="store_true", help="with --export-candidates: int8 files")
    p.add_argument("--device-latencies", type=Path, metavar="FILE.csv",
                   help="pick from latencies measured on the device (CSV: name,ms[,p90_ms], names as in the "
                        "export manifest) instead of measuring here")
    p.add_argument("--output", type=Path, default=Path("outputs/select"),
                   help="output folder: cache, exports and one folder per call (default outputs/select)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(run, args)


# -- device, cache ----------------------------------------------------------------------------------

# -- building and running candidates ---------------------------------------------------------------

#: Settings of the task's default recipe that shape the network (and so its latency): the network timed is built
#: with them, and the written config keeps them, so the pick is the network that gets trained.
ARCHITECTURE_ARGS = {"classification": ("dropout",),
                     "ssdlite": ("first_stride", "min_ratio", "max_ratio", "score_thresh", "nms_thresh",
                                 "detections_per_img")}


@functools.lru_cache(maxsize=None)
def _recipe_architecture(task: str) -> tuple[tuple[str, Any], ...]:
    import yaml

    from .train import CONFIG_DIR, TASKS as TRAIN_TASKS

    config = yaml.safe_load((CONFIG_DIR / TRAIN_TASKS[task].default_config).read_text())
    init = (config.get("model") or {}).get("init_args") or {}
    return tuple((k, init[k]) for k in ARCHITECTURE_ARGS[task] if k in init)


def recipe_architecture(task: str) -> dict[str, Any]:
    """The network-shaping settings of ``task``'s default recipe (``first_stride``, default boxes, ...), read once."""
    return dict(_recipe_architecture(task))


def architecture_tag(arch: dict[str, Any]) -> str:
    """A short, stable text of ``arch`` for cache keys (``first_stride=8,max_ratio=0.9,...``)."""
    return ",".join(f"{k}={arch[k]}" for k in sorted(arch)) or "defaults"


def measure(points: Sequence[GridPoint], args: argparse.Namespace, threads: int, versions: dict[str, str],
            console) -> dict[str, dict[str, Any]]:
    """Cache entries of ``points``: built (exported) one by one, then timed interleaved."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evaluation.complexity import time_interleaved

    runners: dict[str, Callable[[], Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    inputs: dict[Any, Any] = {}
    export_dir = args.output / "exports"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, refresh_per_second=2) as progress:
        verb = "building" if args.runtime == "torch" else "building + exporting"
        prep = progress.add_task(f"{verb} {len(points)} candidates", total=len(points))
        for point in points:
            progress.update(prep, description=f"{verb}: {point.name}")
            fn, madds, params = prepare(point, args.runtime, threads, args.batch, export_dir, inputs,
                                        lambda msg: progress.console.print(msg, style="dim"),
                                        recipe_architecture(point.task))
            runners[point.name] = fn
            entries[point.name] = {"madds": int(madds), "params": int(params)}
            progress.advance(prep)
        progress.update(prep, description=f"{verb}: done")
        calls = max(0, args.warmup) + args.repeats * (1 + max(0, args.settle))
        timing = progress.add_task(f"timing {len(points)} candidates interleaved "
                                   f"({args.warmup} warm-up + up to {args.repeats} rounds)",
                                   total=calls * len(points))

        def counted(fn: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> None:
                fn()
                progress.advance(timing)
            return run

        t0 = time.perf_counter()
        with torch.inference_mode():
            stats = time_interleaved({name: counted(fn) for name, fn in runners.items()}, warmup=args.warmup,
                                     repeats=args.repeats, time_budget_s=args.time_budget_s,
                                     min_repeats=min(5, args.repeats), settle=args.settle)
        progress.update(timing, completed=calls * len(points))
    elapsed = time.perf_counter() - t0
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    for name, entry in entries.items():
        entry.update(latency=stats[name], versions=versions, measured=stamp, batch=args.batch, threads=threads,
                     settle=args.settle, interleaved_with=len(points), timing_s=round(elapsed, 1))
    return entries


def _measured(args: argparse.Namespace, points: Sequence[GridPoint], threads: int, console) -> dict[str, dict]:
    """Cache entries of ``points``: from the latency cache, the others measured now (and cached)."""
    device = device_description()
    versions = runtime_versions(args.runtime)
    cache = LatencyCache(args.output / "latency_cache" / f"{device_slug()}__{args.runtime}.json", device,
                         args.runtime)
    protocol = {"arch": architecture_tag(recipe_architecture(args.task)), "batch": args.batch, "threads": threads,
                "settle": args.settle, "warmup": args.warmup, "repeats": args.repeats}
    cached = {} if args.remeasure else {p.name: cache.get(p, protocol, versions) for p in points}
    missing = [p for p in points if not cached.get(p.name)]
    console.print(f"[bold]mobilevision select[/]: --task {args.task}, budget {budget_str(args.latency_ms)} ms "
                  f"({args.statistic}), runtime {args.runtime}, {threads} threads, batch {args.batch}")
    console.print(f"device: {device}; {len(points)} candidates, {len(points) - len(missing)} from the cache "
                  f"{cache.path}")
    if missing:
        before = busy_cpus()
        warning = busy_warning([before], threads)
        if warning:
            console.print(f"[bold yellow]{warning}[/]")
        measured = measure(missing, args, threads, versions, console)
        after = busy_cpus()
        for entry in measured.values():
            entry["busy_cpus"] = [before, after]  # kept busy by other processes before / after measuring
        for p in missing:
            cache.put(p, protocol, measured[p.name])
        cache.save()
        cached.update(measured)

    return cached


def write_config(pick: Candidate, task: str, path: Path, header: Sequence[str]) -> Path:
    """The task's default training config with the pick's backbone, width and image size."""
    import yaml

    from .train import CONFIG_DIR, TASKS as TRAIN_TASKS

    base = CONFIG_DIR / TRAIN_TASKS[task].default_config
    if not base.is_file():
        raise FileNotFoundError(f"the default {task} config {base} is missing (mobilevision/configs/ comes with the "
                                "package: reinstall it)")
    config = yaml.safe_load(base.read_text())
    model = config["model"].setdefault("init_args", {})
    model["backbone"] = pick.point.backbone
    model["width"] = pick.point.width  # null: the backbone's own (MobileOne, EfficientNet B0-B7)
    model.pop("backbone_weights", None)
    model.pop("backbone_kwargs", None)  # the recipe's knobs of its own backbone; its network settings stay (timed)
    config["data"].setdefault("init_args", {})["image_size"] = pick.point.image_size
    config.setdefault("trainer", {})["default_root_dir"] = f"outputs/select_{pick.name}"
    class Dumper(yaml.SafeDumper):  # quote strings such as "00:01:00:00" (YAML 1.1 reads some as base-60 numbers)
        pass

    Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                style='"' if ":" in s else None))
    text = yaml.dump(config, Dumper=Dumper, sort_keys=False)
    lines = [f"# {h}" for h in header]
    lines += [f"# The rest is the task's default recipe (configs/{base.relative_to(CONFIG_DIR).as_posix()}, on the embedded "
              "dataset; its optimizer",
              "# settings were tuned for its own backbone). For your data, change the data section (see configs/), "
              "and start from",
              "# ImageNet weights with model.init_args.backbone_weights (docs/backbones.md: ImageNet weights).",
              "# Train: mobilevision train --config THIS_FILE"]
    path.write_text("\n".join(lines) + "\n" + text)
    return path


# -- the command ------------------------------------------------------------------------------------

def select_points(args: argparse.Namespace) -> list[GridPoint]:
    if args.task == "classification" and args.sizes != list(DETECTION_SIZES):
        raise UserError("--sizes is for --task ssdlite (the classification grid has its published resolutions)")
    points = candidate_grid(args.task, load_published_top1(), args.families, args.sizes)
    if args.candidates:
        by_name = {p.name: p for p in points}
        unknown = [n for n in args.candidates if n not in by_name]
        if unknown:
            raise UserError(f"unknown candidates {unknown} for --task {args.task} and families "
                             f"{','.join(args.families)}; names: {', '.join(by_name)}")
        points = [by_name[n] for n in dict.fromkeys(args.candidates)]
    return points


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=None if Console().is_terminal else 160)
    if args.latency_ms is None and not (args.list or args.export_candidates):
        raise UserError("--latency-ms is required (the latency budget per batch, in milliseconds)")
    if args.latency_ms is not None and (args.latency_ms <= 0 or not math.isfinite(args.latency_ms)):
        raise UserError(f"--latency-ms must be a positive number, got {args.latency_ms}")
    if args.settle < 0 or args.warmup < 0:
        raise UserError("--settle and --warmup must be at least 0")
    for name in ("batch", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    # oneDNN keeps 1024 compiled kernels (primitives) by default; the grid's convolutions need more, and then every
    # call compiles its kernels again (the smallest networks measured 2-3x slower interleaved than alone).
    # Read when oneDNN first runs, so it must be set before any convolution of this process.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
    points = select_points(args)
    if args.list:
        for p in points:
            console.print(f"{p.name}\t{p.backbone_label} @ {p.image_size}")
        return 0
    if args.export_candidates is not None:
        from .select_device import export_candidates

        return export_candidates(points, args, console)
    if args.device_latencies is not None:
        from .select_device import device_entries

        return _run(args, points, console, device_entries(args, points))
    return _run(args, points, console)


def _run(args: argparse.Namespace, points: Sequence[GridPoint], console,
         device_entries: dict[str, dict[str, Any]] | None = None) -> int:
    import torch
    from rich.table import Table

    threads = args.threads or torch.get_num_threads()
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    if device_entries is not None:  # the user's device measured them: nothing to time here
        points = [p for p in points if p.name in device_entries]
        args.runtime, device, cached = "device", f"the device of {args.device_latencies}", dict(device_entries)
        console.print(f"[bold]mobilevision select[/]: --task {args.task}, budget {budget_str(args.latency_ms)} ms "
                      f"({args.statistic}), {len(points)} candidates measured on the device ({args.device_latencies})")
    else:
        cached = _measured(args, points, threads, console)
        device = device_description()
    table = load_published_top1()
    candidates = []
    for p in points:
        e = cached[p.name]
        candidates.append(Candidate(p, published_accuracy(p, table), e["madds"], e["params"], e["latency"],
                                    measurement={k: e.get(k) for k in ("measured", "interleaved_with", "timing_s",
                                                                 "busy_cpus")}))
    front = pareto_front(candidates, args.statistic)
    pick = choose(candidates, args.latency_ms, args.statistic)
    corr = latency_madds_correlation(candidates, "median")
    repeats = sorted({c.latency.get("repeats") for c in candidates})
    dates = sorted({c.measurement.get("measured") for c in candidates if c.measurement.get("measured")})

    # -- print ---------------------------------------------------------------------------------------
    title = (f"{args.task}: Pareto front of latency ({args.statistic}, {args.runtime}, {threads} threads, batch "
             f"{args.batch}) vs published ImageNet top-1" + (" of the backbone" if args.task == "ssdlite" else ""))
    rich_table = Table(title=title, title_justify="left")
    for h in ROW_HEADERS:
        rich_table.add_column(h, justify="left" if h in ("name", "backbone") else "right")
    rich_table.add_column("")
    for c in front:
        fits = c.latency_ms(args.statistic) <= args.latency_ms
        rich_table.add_row(*row(c), "<- pick" if c is pick else ("" if fits else "over budget"),
                           style="bold green" if c is pick else (None if fits else "dim"))
    console.print(rich_table)
    unrated = [c for c in candidates if c.top1 is None]
    lines = [
        f"Latency measured on {device}: {len(candidates)} candidates timed interleaved, "
        f"{'/'.join(str(r) for r in repeats)} timed runs each after warm-up, measured {', '.join(dates)}."
        if args.runtime != "device" else f"Latency measured on the device: {len(candidates)} candidates, the "
                                         f"milliseconds of {args.device_latencies}.",
        ACCURACY_NOTE,
        f"Spearman rank correlation of latency (median) with MAdds across the {corr['n']} candidates: "
        f"{corr['madds']:.3f} (with params: {corr['params']:.3f}).",
    ]
    busy = [b for c in candidates for b in (c.measurement.get("busy_cpus") or []) if b is not None]
    if busy:
        lines.append(f"CPUs kept busy by other processes before / after measuring: at most {max(busy):.2f} of "
                     f"{os.cpu_count()}.")
        warning = busy_warning(busy, threads)
        if warning:
            lines.append(warning)
    if args.task == "ssdlite":
        lines.append("ssdlite: latency up to the decoded boxes and scores (no NMS); top-1 is the backbone's, and at "
                     "the same backbone a larger input counts as better.")
    if unrated:
        lines.append(f"No published top-1 (listed, not ranked): {', '.join(c.name for c in unrated)}.")
    for line in lines:
        console.print(line)

    out_dir = args.output / f"{args.task}_{args.runtime}_{budget_str(args.latency_ms)}ms"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [plot(candidates, front, pick, args.latency_ms, args.statistic, title, out_dir / "pareto.png"),
             write_csv(candidates, front, pick, args.latency_ms, args.statistic, out_dir / "candidates.csv")]
    if pick is None:
        fast = fastest(candidates, args.statistic)
        rated_fast = fastest([c for c in candidates if c.top1 is not None], args.statistic)
        verdict = (f"No candidate meets the budget of {budget_str(args.latency_ms)} ms ({args.statistic}): the "
                   f"fastest is {fast.name} at {fast.latency_ms(args.statistic):.2f} ms ({args.statistic}; median "
                   f"{fast.latency['median_ms']:.2f} ms)")
        if rated_fast is not None and rated_fast is not fast:
            verdict += (f"; the fastest with a published top-1 is {rated_fast.name} at "
                        f"{rated_fast.latency_ms(args.statistic):.2f} ms")
        verdict += ". Raise --latency-ms, add --threads, or choose another --runtime."
        console.print(f"[bold red]{verdict}[/]")
    else:
        acc = pick.accuracy
        verdict = (f"Best under {budget_str(args.latency_ms)} ms ({args.statistic}): {pick.name} "
                   f"({pick.point.backbone_label} at {pick.point.image_size} px): p90 {pick.latency['p90_ms']:.2f} ms, "
                   f"median {pick.latency['median_ms']:.2f} ms; published top-1 {acc.top1:.1f} "
                   f"({acc.published_name}; {acc.source}); {pick.madds / 1e6:.0f} M MAdds, "
                   f"{pick.params / 1e6:.2f} M params.")
        n_fit = sum(c.latency_ms(args.statistic) <= args.latency_ms for c in candidates if c.top1 is not None)
        verdict += f" ({n_fit} of {len(candidates)} candidates fit the budget.) " + weights_note(pick)
        console.print(f"[bold green]{verdict}[/]")
        source = (f"--device-latencies {args.device_latencies}" if args.runtime == "device"
                  else f"--runtime {args.runtime}")
        header = [f"Written by `mobilevision select --task {args.task} --latency-ms {budget_str(args.latency_ms)} "
                  f"{source}` on {datetime.date.today().isoformat()}.",
                  f"Pick: {pick.name}: {args.runtime} {args.statistic} {pick.latency_ms(args.statistic):.2f} ms "
                  f"(median {pick.latency['median_ms']:.2f} ms), {threads} threads, batch {args.batch}, on {device};",
                  f"published ImageNet top-1 {acc.top1:.1f} ({acc.published_name}), {pick.madds / 1e6:.0f} M MAdds, "
                  f"{pick.params / 1e6:.2f} M params.", weights_note(pick)]
        files.append(write_config(pick, args.task, out_dir / "config.yaml", header))
        if args.verify and args.runtime != "device":
            verdict += "\n\n" + verify(pick, args, threads, console)
    md = [f"# mobilevision select: {args.task}, budget {budget_str(args.latency_ms)} ms ({args.statistic})", "",
          *[f"- {line}" for line in [f"runtime {args.runtime}, {threads} threads, batch {args.batch}", *lines]], "",
          "## Pareto front", "", markdown_table([row(c) for c in front], ROW_HEADERS), "", "## Pick", "", verdict,
          "", "## Every candidate", "",
          markdown_table([row(c) for c in sorted(candidates, key=lambda c: c.latency_ms(args.statistic))],
                          ROW_HEADERS), ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(md))
    files.insert(0, report)
    console.print("wrote " + ", ".join(str(f) for f in files) + f" ({time.perf_counter() - t_start:.1f} s)")
    return 0 if pick is not None else 1


def weights_note(pick: Candidate) -> str:
    """Which ImageNet weights can bring the pick near the quoted top-1 (only what ``backbone_weights: imagenet``
    loads; the quoted figure is the published checkpoint's)."""
    what = "the backbone" if pick.point.task == "ssdlite" else "the classifier"
    source = imagenet_weights(pick.point.backbone, pick.point.width)
    if source is None:
        return (f"Weights: mobilevision has no ImageNet weights for {pick.point.backbone_label} (only the variants at "
                f"their own width load them); the quoted top-1 is the published checkpoint's ({pick.accuracy.source}), "
                f"which {what} reaches only when trained on ImageNet as published.")
    return (f"Weights: backbone_weights: imagenet loads {source} into {what} (published top-1 of those weights may "
            f"differ from the quoted {pick.accuracy.published_name}).")


def verify(pick: Candidate, args: argparse.Namespace, threads: int, console) -> str:
    """Re-measure the pick alone, on a freshly built network (a fresh session), and print it against the budget."""
    import torch

    from ..evaluation.complexity import time_interleaved

    with torch.no_grad():
        fn, _, _ = prepare(pick.point, args.runtime, threads, args.batch, args.output / "exports", {},
                           lambda msg: None, recipe_architecture(pick.point.task))
    with torch.inference_mode():
        stats = time_interleaved({"pick": fn}, warmup=args.warmup, repeats=max(args.repeats, 30))["pick"]
    ok = stats[STATISTICS[args.statistic]] <= args.latency_ms
    line = (f"verify: {pick.name} alone: median {stats['median_ms']:.2f} ms, p90 {stats['p90_ms']:.2f} ms over "
            f"{stats['repeats']} runs -> {'within' if ok else 'OVER'} the {budget_str(args.latency_ms)} ms budget "
            f"({args.statistic})")
    console.print(line)
    return line
