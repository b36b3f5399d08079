"""Shared machinery of the embedded, generated datasets (shapes, glyphs, geoscenes): where they live, and building
them once, atomically.

They are generated on first use under :func:`data_home`: ``$MOBILEVISION_DATA`` when set, else
``$XDG_CACHE_HOME/mobilevision/datasets`` (``~/.cache/mobilevision/datasets``), one folder per dataset; never in
the current folder, so every command works the same from any directory and from an installed wheel.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Sequence

logger = logging.getLogger(__name__)


def data_home() -> Path:
    """Folder of the embedded datasets: ``$MOBILEVISION_DATA``, else ``$XDG_CACHE_HOME/mobilevision/datasets``
    (``~/.cache/mobilevision/datasets`` when ``XDG_CACHE_HOME`` is not set)."""
    home = os.environ.get("MOBILEVISION_DATA")
    if home:
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mobilevision" / "datasets"


def embedded_root(name: str, root: str | os.PathLike | None = None) -> str:
    """``root`` when given, else the folder of the embedded dataset ``name`` under :func:`data_home`."""
    return os.fspath(root) if root is not None else str(data_home() / name)


def default_workers(num_jobs: int) -> int:
    """Processes for rendering ``num_jobs`` images: 1 below 200, else the CPUs this process may use (at most 8)."""
    if num_jobs < 200:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def render_all(render: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None = None) -> list[Any]:
    """``[render(job) for job in jobs]``, in order, over ``workers`` processes (default :func:`default_workers`);
    every image is rendered from its own seeded stream, so the result does not depend on the number of workers."""
    workers = default_workers(len(jobs)) if workers is None else int(workers)
    if workers <= 1:
        return [render(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(render, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def manifest_matches(manifest: Path, params: dict[str, Any]) -> bool:
    """True if the manifest file exists and records exactly ``params``."""
    try:
        with open(manifest) as f:
            return json.load(f).get("params") == params
    except (OSError, ValueError, AttributeError):
        return False


def folder_holds(folder: str | os.PathLike, names: Iterable[str]) -> bool:
    """True if every file name of ``names`` is in ``folder`` (one directory listing)."""
    try:
        present = {e.name for e in os.scandir(folder) if e.is_file()}
    except OSError:
        return False
    return all(n in present for n in names)


def owned_by_generator(root: Path, manifest_name: str, generator_tag: str) -> bool:
    """True if ``root`` is empty or was written by the generator ``generator_tag`` (safe to replace)."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    if not any(root.iterdir()):
        return True
    try:
        with open(root / manifest_name) as f:
            return json.load(f).get("params", {}).get("generator") == generator_tag
    except (OSError, ValueError, AttributeError):
        return False


def build_generated_dataset(
    root: Path,
    params: dict[str, Any],
    manifest_name: str,
    is_complete: Callable[[Path, dict[str, Any]], bool],
    render: Callable[[Path], None],
    kind: str,
    force: bool = False,
) -> None:
    """Make ``root`` hold the dataset of ``params`` unless ``is_complete(root, params)`` already.

    ``render(tmp)`` writes the dataset into a temporary sibling folder; the manifest is written last and
    the folder swapped into place, so an interrupted run never leaves a dataset that looks complete.
    An existing ``root`` is only replaced if it is empty or holds this generator's manifest.
    """
    if not force and is_complete(root, params):
        return
    if not owned_by_generator(root, manifest_name, params["generator"]):
        raise FileExistsError(f"{root} exists and is not a mobilevision {kind} dataset (no {manifest_name}); "
                              "refusing to overwrite it - pass another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        render(tmp)
        with open(tmp / manifest_name, "w") as f:
            json.dump({"params": params, "generation_seconds": round(time.perf_counter() - t0, 2)}, f, indent=2)
        if not force and is_complete(root, params):  # another process finished the same dataset meanwhile
            return
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%s dataset ready in %.1fs", kind, time.perf_counter() - t0)
