"""``mobilevision select`` with the user's phone as the judge: write every candidate as the file the phone runs
(``--export-candidates DIR --format executorch``, with a manifest), then pick from the latencies measured there
(``--device-latencies FILE.csv``).

The CSV names each candidate as the manifest does and gives its milliseconds: columns ``name`` and ``ms`` (or
``median_ms``), optionally ``p90_ms`` (without it, the one figure stands for both statistics). Candidates the CSV
leaves out are not ranked; a name that is not a candidate is an error.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..backbones import load_published_top1
from ..evaluation.selection import GridPoint, published_accuracy

__all__ = ["MANIFEST_COLUMNS", "device_entries", "export_candidates", "read_device_latencies"]

MANIFEST_COLUMNS = ("name", "file", "task", "backbone", "width", "image_size", "batch", "format", "int8",
                    "published_top1", "madds", "params")


def export_candidates(points: Sequence[GridPoint], args: argparse.Namespace, console) -> int:
    """Write every candidate (random weights: latency does not depend on them) as ``args.format`` files of batch
    ``args.batch`` into ``args.export_candidates``, and ``manifest.csv`` listing them."""
    from ..deploy import deployable
    from ..deploy.formats import FORMATS, export_model
    from ..deploy.candidates import build_task, complexity, random_calibration
    from .select import recipe_architecture

    fmt = FORMATS[args.format]
    if args.int8 and not fmt.int8:
        raise UserError(f"--int8 is not available for {fmt.name} files")
    out: Path = args.export_candidates
    out.mkdir(parents=True, exist_ok=True)
    table = load_published_top1()
    rows = []
    t0 = time.perf_counter()
    for i, point in enumerate(points, 1):
        task = build_task(point, recipe_architecture(point.task))
        calibration = random_calibration(point, args.batch) if args.int8 else None
        name = f"{point.name}{'.int8' if args.int8 else ''}{fmt.suffix}"
        t = time.perf_counter()
        export_model(task, out / name, fmt.name, batch=args.batch, calibration=calibration)
        madds, params = complexity(deployable(task)[0], point)
        acc = published_accuracy(point, table)
        rows.append({"name": point.name, "file": name, "task": point.task, "backbone": point.backbone,
                     "width": "" if point.width is None else point.width, "image_size": point.image_size,
                     "batch": args.batch, "format": fmt.name, "int8": int(bool(args.int8)),
                     "published_top1": "" if acc is None else acc.top1,
                     "madds": madds, "params": params})
        console.print(f"[{i}/{len(points)}] wrote {out / name} ({time.perf_counter() - t:.1f} s)", markup=False)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"wrote {len(rows)} {fmt.name} files and {manifest} in {time.perf_counter() - t0:.0f} s. Time each "
                  f"file on the device ({fmt.runtime}), write a CSV with columns name,ms[,p90_ms], then: mobilevision "
                  f"select --task {points[0].task if points else 'classification'} --latency-ms B "
                  f"--device-latencies FILE.csv", markup=False)
    return 0


def _number(value: str | None, path: Path, line: int, column: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{path}, line {line}: {column} {value!r} is not a number of milliseconds") from None
    if not math.isfinite(number) or number <= 0:
        raise UserError(f"{path}, line {line}: {column} must be a positive number of milliseconds, got {value!r}")
    return number


def read_device_latencies(path: Path, points: Sequence[GridPoint]) -> dict[str, dict[str, Any]]:
    """``{candidate name: {"median_ms", "p90_ms"}}`` from a CSV of latencies measured on the device."""
    if not path.is_file():
        raise FileNotFoundError(f"device latencies {path} do not exist")
    names = {p.name for p in points}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        ms_column = "ms" if "ms" in columns else "median_ms" if "median_ms" in columns else None
        if "name" not in columns or ms_column is None:
            raise UserError(f"{path}: needs the columns name and ms (or median_ms), optionally p90_ms; "
                            f"found {columns}")
        latencies: dict[str, dict[str, Any]] = {}
        for line, row in enumerate(reader, start=2):
            name = (row.get("name") or "").strip()
            if name.endswith((".pte", ".onnx", ".mlpackage")):  # a file name of the manifest
                name = re.sub(r"(\.int8)?(\.b\d+)?\.(pte|onnx|mlpackage)$", "", name.rsplit("/", 1)[-1])
            if not name:
                continue
            if name not in names:
                raise UserError(f"{path}, line {line}: {name!r} is not a candidate of this selection "
                                f"(the names of the export manifest, e.g. {sorted(names)[0]})")
            if name in latencies:
                raise UserError(f"{path}, line {line}: {name!r} appears twice")
            median = _number(row.get(ms_column), path, line, ms_column)
            if median is None:
                raise UserError(f"{path}, line {line}: no {ms_column} for {name!r}")
            p90 = _number(row.get("p90_ms"), path, line, "p90_ms")
            latencies[name] = {"median_ms": median, "p90_ms": p90 if p90 is not None else median}
    if not latencies:
        raise UserError(f"{path} lists no candidate")
    return latencies


def device_entries(args: argparse.Namespace, points: Sequence[GridPoint]) -> dict[str, dict[str, Any]]:
    """Cache-like entries of the candidates the device latencies name: their latency, MAdds and params."""
    from ..deploy import deployable
    from ..deploy.candidates import build_task, complexity
    from .select import recipe_architecture

    latencies = read_device_latencies(args.device_latencies, points)
    entries = {}
    for point in points:
        if point.name in latencies:
            madds, params = complexity(deployable(build_task(point, recipe_architecture(point.task)))[0], point)
            entries[point.name] = {"latency": dict(latencies[point.name], repeats=None), "madds": madds,
                                   "params": params,
                                   "measured": f"on the device ({args.device_latencies.name})"}
    return entries
