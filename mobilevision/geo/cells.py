"""PlaNet's adaptive partition of the Earth into S2 cells (Weyand et al., 2016, section 3).

Starting from the S2 cells of level ``min_level`` (level 0: the six cube faces), every cell holding more
than ``max_per_cell`` training photos is split into its four children, recursively, until no cell holds
more (or ``max_level`` is reached); cells left with fewer than ``min_per_cell`` photos are discarded
together with their photos. Dense regions get small cells, sparse ones large cells, and every class has
enough examples. The S2 geometry (cell centers, neighbours) is the official S2 library's (`s2geometry` Python
bindings), with one exception: the library converts one point per call (about 6 us), too slow for the benchmarks'
training sets (MP-16: 4.7M photos, PlaNet: 126M), so :func:`leaf_cell_ids` computes the leaf cell ids with numpy
over whole arrays, following S2's ``S2CellId(S2Point)`` step by step (face, quadratic UV -> ST projection, i / j,
Hilbert curve by 4-bit lookup table); the tests compare it with the library on 300,000 points, the faces' edges,
the poles and the antimeridian. The partition is then built on the sorted leaf ids: the photos of any cell are
one run of them, found by binary search.

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
from .distance import from_unit_vectors, to_unit_vectors

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


# S2's Hilbert curve, 4 bits of i and j at a time (s2cell_id.cc: kLookupBits, kPosToIJ, kPosToOrientation)
_LOOKUP_BITS = 4
_SWAP, _INVERT = 1, 2
_POS_TO_IJ = ((0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 0, 1), (3, 1, 0, 2))
_POS_TO_ORIENTATION = (_SWAP, 0, 0, _INVERT | _SWAP)
# per face: u's numerator (component, sign), v's numerator (component, sign); the denominator is the face's axis
# (S2's XYZtoFaceUV)
_FACE_UV = np.array([(1, 1, 2, 1), (0, -1, 2, 1), (0, -1, 1, -1), (2, 1, 1, 1), (2, 1, 0, -1), (1, -1, 0, -1)])
_MAX_SIZE = 1 << 30


def _lookup_pos() -> np.ndarray:
    """S2's ``lookup_pos`` table: (i, j, orientation) of 4 bits each -> (Hilbert position, orientation)."""
    table = np.zeros(1 << (2 * _LOOKUP_BITS + 2), dtype=np.int32)

    def init(level: int, i: int, j: int, orig: int, pos: int, orientation: int) -> None:
        if level == _LOOKUP_BITS:
            table[(((i << _LOOKUP_BITS) + j) << 2) + orig] = (pos << 2) + orientation
            return
        r = _POS_TO_IJ[orientation]
        for k in range(4):
            init(level + 1, (i << 1) + (r[k] >> 1), (j << 1) + (r[k] & 1), orig, (pos << 2) + k,
                 orientation ^ _POS_TO_ORIENTATION[k])

    for o in (0, _SWAP, _INVERT, _SWAP | _INVERT):
        init(0, 0, 0, o, 0, o)
    return table


_LOOKUP_POS = _lookup_pos()


def leaf_cell_ids(lat, lon) -> np.ndarray:
    """S2 leaf (level 30) cell ids (uint64) of points given in degrees: ``S2CellId(S2LatLng.FromDegrees(lat,
    lon)).id()`` for whole arrays at once (in chunks that stay in the CPU's caches)."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    _check_coordinates(lat, lon)
    out = np.empty(len(lat), dtype=np.uint64)
    for a in range(0, len(lat), _CHUNK):
        out[a:a + _CHUNK] = _leaf_ids(lat[a:a + _CHUNK], lon[a:a + _CHUNK])
    return out


_CHUNK = 1 << 16


def _leaf_ids(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    phi, theta = np.radians(lat), np.radians(lon)
    c = np.cos(phi)
    xyz = np.stack([c * np.cos(theta), c * np.sin(theta), np.sin(phi)])
    a0, a1, a2 = np.abs(xyz)
    axis = np.where(a0 > a1, np.where(a0 > a2, 0, 2), np.where(a1 > a2, 1, 2))  # S2's LargestAbsComponent
    den = np.take_along_axis(xyz, axis[None], 0)[0]
    face = axis + 3 * (den < 0)
    t = _FACE_UV[face]
    ij = []
    for num, sign in ((0, 1), (2, 3)):
        w = t[:, sign] * np.take_along_axis(xyz, t[None, :, num], 0)[0] / den
        st = np.where(w >= 0, 0.5 * np.sqrt(1 + 3 * np.maximum(w, 0)), 1 - 0.5 * np.sqrt(1 - 3 * np.minimum(w, 0)))
        ij.append(np.clip(np.floor(_MAX_SIZE * st), 0, _MAX_SIZE - 1).astype(np.int32))
    i, j = ij
    n = face.astype(np.uint64) << np.uint64(60)
    bits = (face & _SWAP).astype(np.int32)
    mask = (1 << _LOOKUP_BITS) - 1
    for k in range(7, -1, -1):
        bits += ((i >> (k * _LOOKUP_BITS)) & mask) << (_LOOKUP_BITS + 2)
        bits += ((j >> (k * _LOOKUP_BITS)) & mask) << 2
        bits = _LOOKUP_POS[bits]
        n |= (bits >> 2).astype(np.uint64) << np.uint64(k * 2 * _LOOKUP_BITS)
        bits &= _SWAP | _INVERT
    return n * np.uint64(2) + np.uint64(1)


def _lsb(level: int) -> int:
    return 1 << (2 * (30 - level))


def _parent_ids(leaves: np.ndarray, level: int) -> np.ndarray:
    """The level-``level`` ancestors of leaf ids (S2CellId::parent(level), on whole arrays)."""
    lsb = np.uint64(_lsb(level))
    return (leaves & ~(lsb - np.uint64(1))) | lsb


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

    # On the sorted leaf ids the photos of a cell are one run [lo, hi): a cell's run splits into its four
    # children's runs by binary search, never touching the photos themselves.
    order = np.argsort(leaves)
    leaves = leaves[order]
    tops = _parent_ids(leaves, min_level)
    starts = np.flatnonzero(np.r_[True, tops[1:] != tops[:-1]])
    ends = np.r_[starts[1:], len(leaves)]
    pending = [(int(tops[a]), min_level, int(a), int(b)) for a, b in zip(starts, ends)]
    cells: list[tuple[int, int, int]] = []  # (cell id, lo, hi)
    overfull = 0
    while pending:
        cid, level, lo, hi = pending.pop()
        if hi - lo > max_per_cell and level < max_level:
            lsb, child = _lsb(level), _lsb(level + 1)
            first = cid - lsb + child  # S2CellId::child_begin; the children are 2 * child apart
            bounds = [first + k * 2 * child - (child - 1) for k in range(4)] + [cid + lsb]
            cuts = np.searchsorted(leaves[lo:hi], np.array(bounds, dtype=np.uint64)) + lo
            pending.extend((first + k * 2 * child, level + 1, int(cuts[k]), int(cuts[k + 1]))
                           for k in range(4) if cuts[k + 1] > cuts[k])
        else:
            overfull += hi - lo > max_per_cell
            cells.append((cid, lo, hi))
    if overfull:
        logger.warning("%d cell(s) at max_level=%d still hold more than max_per_cell=%d photos", overfull,
                       max_level, max_per_cell)
    cells.sort()
    ids = np.array([c for c, _, _ in cells], dtype=np.uint64)
    counts = np.array([hi - lo for _, lo, hi in cells], dtype=np.int64)
    keep = counts >= min_per_cell
    if not keep.any():
        raise UserError(f"no cell holds min_per_cell={min_per_cell} photos ({len(leaves)} photos, "
                         f"max_per_cell={max_per_cell}); lower min_per_cell")
    label = np.where(keep, np.cumsum(keep) - 1, -1)
    assignment = np.empty(len(leaves), dtype=np.int64)
    assignment[order] = np.repeat(label, counts)  # the cells' runs cover the sorted photos in order
    # spherical mean of each kept cell's photos: the normalized sum of their unit vectors (as spherical_mean)
    vectors = to_unit_vectors(torch.from_numpy(lat[order]), torch.from_numpy(lon[order])).numpy()
    sums = np.add.reduceat(vectors, np.r_[0, np.cumsum(counts)[:-1]], axis=0)[keep]
    m_lat, m_lon = from_unit_vectors(torch.from_numpy(sums))
    kept_ids = ids[keep]
    centers = [_cell_center(int(c)) for c in kept_ids]
    means = np.stack([m_lat.numpy(), m_lon.numpy()], axis=1)
    dropped = ~keep
    params = {"max_per_cell": int(max_per_cell), "min_per_cell": int(min_per_cell), "min_level": int(min_level),
              "max_level": int(max_level), "dropped_photos": int(counts[dropped].sum()),
              "dropped_cells": int(dropped.sum())}
    partition = CellPartition(kept_ids, centers, means, counts[keep], params)
    return partition, assignment
