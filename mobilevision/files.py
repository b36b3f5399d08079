"""The project's one folder walker: every task, ``predict``, int8 calibration and the model-free evaluations list
files with the same rules (recursive, following links, sorted, hidden files and folders such as ``.git`` or macOS
``._x.jpg`` left out). This module imports nothing of mobilevision, so ``data`` and ``evaluation`` both use it
without depending on each other."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

__all__ = ["is_hidden", "walk_files"]


def is_hidden(name: str) -> bool:
    """A hidden file or folder name (``.git``, ``.DS_Store``, macOS ``._x.jpg``); not ``.`` / ``..``."""
    return name.startswith(".") and name not in (".", "..")


def walk_files(folder: str | os.PathLike, keep: Callable[[str], bool],
               skipped: list[str] | None = None) -> Iterator[str]:
    """Paths of the files under ``folder`` whose name ``keep`` accepts: recursive (following links), sorted,
    hidden files and folders left out. Other files are appended to ``skipped`` when it is given."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if is_hidden(name):
                continue
            path = os.path.join(dirpath, name)
            if keep(name):
                yield path
            elif skipped is not None:
                skipped.append(path)
