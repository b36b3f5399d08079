"""PlaNet's adaptive partition of the Earth into S2 cells (Weyand et al., 2016, section 3).

Starting from the S2 cells of level ``min_level`` (level 0: the six cube faces), every cell holding more
than ``max_per_cell`` training photos is split into its four children, recursively, until no cell holds
more (or ``max_level`` is reached); cells left with fewer than ``min_per_cell`` photos are discarded
together with their photos. Dense regions get small cells, sparse ones large cells, and every class has
enough examples. The S2 geometry (cell ids, hierarchy, centers, neighbours) is the official S2 library's
(`s2geometry` Python bindings); nothing here re-implements it.

A :class:`CellPartition` is a list of disjoint cells in S2 (Hilbert curve) order with, per cell, its token,
its center, the spherical mean of its training photos and their count. ``to_state()`` / ``from_state()``
convert it to plain tensors, which is how checkpoints carry it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import s2geometry as s2
import torch

from ..errors import UserError
from .distance import spherical_mean

__all__ = ["CellPartition", "build_partition", "leaf_cell_ids"]

logger = logging.getLogger(__name__)

CellLocation = Literal["center", "mean"]


def _check_coordinates(lat: np.ndarray, lon: np.ndarray) -> None:
    if lat.shape != lon.shape or lat.ndim != 1:
        raise UserError(f"latitude and longitude must be 1-d arrays of one length, got {lat.shape} and {lon.shape}")
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{int(bad.sum())} coordinate(s) outside latitude [-90, 90] / longitude [-180, 180], "
                         f"e.g. #{i}: ({lat[i]}, {lon[i]})")


def leaf_cell_ids(lat, lon) -> np.ndarray:
    """S2 leaf (level 30) cell ids (uint64) of points given in degrees."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    _check_coordinates(lat, lon)
    return np.fromiter((s2.S2CellId(s2.S2LatLng.FromDegrees(a, b)).id() for a, b in zip(lat.tolist(), lon.tolist())),
                       dtype=np.uint64, count=len(lat))


def _parent_ids(leaves: np.ndarray, level: int) -> np.ndarray:
    return np.fromiter((s2.S2CellId(int(x)).parent(level).id() for x in leaves), dtype=np.uint64, count=len(leaves))


def _cell_center(cell_id: int) -> tuple[float, float]:
    ll = s2.S2CellId(cell_id).ToLatLng()
    return ll.lat().degrees(), ll.lng().degrees()


@dataclass
class CellPartition:
    """Disjoint S2 cells (sorted by cell id) with centers, training-photo means and counts.

    Attributes:
        cell_ids: S2 cell ids (uint64) [C], in increasing order.
        centers: cell centers (latitude, longitude) in degrees [C, 2].
        means: spherical mean of each cell's training photos [C, 2] (the center for cells built without photos).
        counts: training photos per cell [C].
        params: how it was built (``max_per_cell``, ``min_per_cell``, ``min_level``, ``max_level``) and what was
            dropped (``dropped_photos``, ``dropped_cells``).
    """

    cell_ids: np.ndarray
    centers: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    params: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cell_ids = np.asarray(self.cell_ids, dtype=np.uint64).reshape(-1)
        self.centers = np.asarray(self.centers, dtype=np.float64).reshape(-1, 2)
        self.means = np.asarray(self.means, dtype=np.float64).reshape(-1, 2)
        self.counts = np.asarray(self.counts, dtype=np.int64).reshape(-1)
        n = len(self.cell_ids)
        if not (len(self.centers) == len(self.means) == len(self.counts) == n):
            raise ValueError("cell_ids, centers, means and counts must have one length")
        if n == 0:
            raise ValueError("a cell partition needs at least one cell")
        order = np.argsort(self.cell_ids, kind="stable")  # S2 (Hilbert curve) order
        self.cell_ids, self.centers, self.means, self.counts = (
            self.cell_ids[order], self.centers[order], self.means[order], self.counts[order])
        cells = [s2.S2CellId(int(c)) for c in self.cell_ids]
        if not all(c.is_valid() for c in cells):
            raise ValueError("invalid S2 cell id in the partition")
        self._range_min = np.array([c.range_min().id() for c in cells], dtype=np.uint64)
        self._range_max = np.array([c.range_max().id() for c in cells], dtype=np.uint64)
        if np.any(self._range_min[1:] <= self._range_max[:-1]):
            raise ValueError("the cells of a partition must be disjoint")
        self._neighbours: list[np.ndarray] | None = None

    # ----------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self.cell_ids)

    @property
    def tokens(self) -> list[str]:
        """S2 cell tokens (the compact hex form of the ids), e.g. ``"47e4"``."""
        return [s2.S2CellId(int(c)).ToToken() for c in self.cell_ids]

    @property
    def levels(self) -> np.ndarray:
        return np.array([s2.S2CellId(int(c)).level() for c in self.cell_ids], dtype=np.int64)

    def locations(self, mode: CellLocation = "center") -> np.ndarray:
        """Each cell's predicted location [C, 2]: its S2 center or the mean of its training photos."""
        if mode == "center":
            return self.centers
        if mode == "mean":
            return self.means
        raise UserError(f"cell location must be 'center' or 'mean', got {mode!r}")

    def assign(self, lat, lon) -> np.ndarray:
        """Index of the cell containing each point (int64), ``-1`` for points in no cell."""
        leaves = leaf_cell_ids(lat, lon)
        i = np.searchsorted(self._range_min, leaves, side="right").astype(np.int64) - 1
        inside = i >= 0
        inside[inside] = leaves[inside] <= self._range_max[i[inside]]
        return np.where(inside, i, -1)

    def neighbours(self) -> list[np.ndarray]:
        """Per cell, the indices of the partition cells that touch it (share an edge or a vertex).

        Candidates of cell ``i`` are the partition cells overlapping one of its same-level neighbours (S2's
        ``GetAllNeighbors``): a larger cell containing such a neighbour touches ``i``, but a smaller cell inside it
        may not. A smaller cell ``j`` touches ``i`` exactly when ``i`` is among ``j``'s own candidates, so the
        relation kept is the mutual one.
        """
        if self._neighbours is None:
            candidates: list[set[int]] = []
            for k, cid in enumerate(self.cell_ids):
                cell = s2.S2CellId(int(cid))
                found: set[int] = set()
                for nb in cell.GetAllNeighbors(cell.level()):
                    lo, hi = nb.range_min().id(), nb.range_max().id()
                    start = int(np.searchsorted(self._range_max, np.uint64(lo), side="left"))
                    stop = int(np.searchsorted(self._range_min, np.uint64(hi), side="right"))
                    found.update(range(start, stop))
                found.discard(k)
                candidates.append(found)
            self._neighbours = [np.array(sorted(j for j in found if i in candidates[j]), dtype=np.int64)
                                for i, found in enumerate(candidates)]
        return self._neighbours

    def neighbour_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbours as a padded index tensor [C, K] (padding 0) and its boolean mask [C, K]."""
        nbs = self.neighbours()
        k = max(1, max(len(n) for n in nbs))
        index = torch.zeros(len(nbs), k, dtype=torch.long)
        mask = torch.zeros(len(nbs), k, dtype=torch.bool)
        for i, n in enumerate(nbs):
            index[i, : len(n)] = torch.from_numpy(n)
            mask[i, : len(n)] = True
        return index, mask

    def summary(self) -> str:
        lv = self.levels
        p = self.params
        text = (f"{len(self)} S2 cells (levels {lv.min()}-{lv.max()}) holding {int(self.counts.sum())} photos "
                f"({int(self.counts.min())}-{int(self.counts.max())} per cell)")
        if p.get("dropped_photos") is not None:
            text += (f"; dropped {p['dropped_photos']} photos in {p['dropped_cells']} cells with < "
                     f"{p['min_per_cell']} photos")
        return text

    # ----------------------------------------------------------------------------- (de)serialization
    def to_state(self) -> dict[str, Any]:
        """Plain tensors and ints (``torch.load(weights_only=True)``-safe): ids as int64 bit patterns."""
        return {
            "cell_ids": torch.from_numpy(self.cell_ids.view(np.int64).copy()),
            "centers": torch.from_numpy(self.centers.copy()),
            "means": torch.from_numpy(self.means.copy()),
            "counts": torch.from_numpy(self.counts.copy()),
            "params": dict(self.params),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CellPartition:
        ids = torch.as_tensor(state["cell_ids"]).cpu().numpy().astype(np.int64).view(np.uint64)
        return cls(ids, torch.as_tensor(state["centers"]).cpu().numpy(), torch.as_tensor(state["means"]).cpu().numpy(),
                   torch.as_tensor(state["counts"]).cpu().numpy(), dict(state.get("params", {})))

    def same_cells(self, other: CellPartition) -> bool:
        return len(self) == len(other) and bool(np.array_equal(self.cell_ids, other.cell_ids))


def build_partition(
    lat,
    lon,
    max_per_cell: int = 10000,
    min_per_cell: int = 50,
    min_level: int = 0,
    max_level: int = 30,
) -> tuple[CellPartition, np.ndarray]:
    """PlaNet's adaptive partition of the photos at ``(lat, lon)`` (degrees).

    Args:
        max_per_cell: split cells holding more photos than this (PlaNet: 10,000 of 126M photos).
        min_per_cell: discard cells holding fewer photos than this (PlaNet: 50).
        min_level: level of the initial cells (0: the six faces of the S2 cube).
        max_level: never split below this level (cells of one level have about the same area; level 10 is
            ~100 km^2, level 30 ~1 cm^2). A cell that cannot be split further may hold more than
            ``max_per_cell`` photos (many photos at one spot); a warning says so.

    Returns:
        The partition and each photo's cell index (``-1`` for the photos of discarded cells).
    """
    if max_per_cell < 1 or min_per_cell < 1:
        raise UserError(f"max_per_cell and min_per_cell must be >= 1, got {max_per_cell} and {min_per_cell}")
    if min_per_cell > max_per_cell:
        raise UserError(f"min_per_cell ({min_per_cell}) must not exceed max_per_cell ({max_per_cell})")
    if not 0 <= min_level <= max_level <= 30:
        raise UserError(f"need 0 <= min_level <= max_level <= 30, got {min_level} and {max_level}")
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    leaves = leaf_cell_ids(lat, lon)
    if len(leaves) == 0:
        raise UserError("cannot partition zero photos")

    def split(indices: np.ndarray, level: int) -> list[tuple[int, int, np.ndarray]]:
        parents = _parent_ids(leaves[indices], level)
        order = np.argsort(parents, kind="stable")
        ids, starts = np.unique(parents[order], return_index=True)
        groups = np.split(indices[order], starts[1:])
        return [(int(c), level, g) for c, g in zip(ids, groups)]

    pending = split(np.arange(len(leaves)), min_level)
    cells: list[tuple[int, np.ndarray]] = []
    overfull = 0
    while pending:
        cid, level, idx = pending.pop()
        if len(idx) > max_per_cell and level < max_level:
            pending.extend(split(idx, level + 1))
        else:
            overfull += len(idx) > max_per_cell
            cells.append((cid, idx))
    if overfull:
        logger.warning("%d cell(s) at max_level=%d still hold more than max_per_cell=%d photos", overfull,
                       max_level, max_per_cell)
    cells.sort(key=lambda c: c[0])
    kept = [(cid, idx) for cid, idx in cells if len(idx) >= min_per_cell]
    dropped = [(cid, idx) for cid, idx in cells if len(idx) < min_per_cell]
    if not kept:
        raise UserError(f"no cell holds min_per_cell={min_per_cell} photos ({len(leaves)} photos, "
                         f"max_per_cell={max_per_cell}); lower min_per_cell")
    assignment = np.full(len(leaves), -1, dtype=np.int64)
    centers, means = [], []
    for k, (cid, idx) in enumerate(kept):
        assignment[idx] = k
        centers.append(_cell_center(cid))
        m_lat, m_lon = spherical_mean(torch.from_numpy(lat[idx]), torch.from_numpy(lon[idx]))
        means.append((float(m_lat), float(m_lon)))
    params = {"max_per_cell": int(max_per_cell), "min_per_cell": int(min_per_cell), "min_level": int(min_level),
              "max_level": int(max_level), "dropped_photos": int(sum(len(i) for _, i in dropped)),
              "dropped_cells": len(dropped)}
    partition = CellPartition(np.array([c for c, _ in kept], dtype=np.uint64), centers, means,
                              [len(i) for _, i in kept], params)
    return partition, assignment
