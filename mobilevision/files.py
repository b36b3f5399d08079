"""The project's one folder walker: every task, ``predict``, int8 calibration and the model-free evaluations list
files with the same rules (recursive, following links, sorted, hidden files and folders such as ``.git`` or macOS
``._x.jpg`` left out); and the one reader of label / prediction tables (:func:`csv_rows`). This module imports
nothing of mobilevision, so ``data`` and ``evaluation`` both use it without depending on each other."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator

__all__ = ["csv_rows", "is_hidden", "walk_files"]


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


def csv_rows(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, list[str]]], list[str]]:
    """A CSV file (UTF-8, with or without a byte-order mark) as its header (cells stripped), its rows with their
    line numbers (blank rows left out) and one message per row whose number of cells is not the header's (those rows
    left out): ``"line 7: 3 columns, the header has 4"``. An empty file has an empty header."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        return [], [], []
    header = [h.strip() for h in rows[0]]
    good, bad = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            bad.append(f"line {line}: {len(row)} columns, the header has {len(header)}")
            continue
        good.append((line, row))
    return header, good, bad
