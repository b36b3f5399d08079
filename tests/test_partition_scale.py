"""The partition at the benchmarks' scale: numpy leaf ids against the S2 library point by point, and the partition
built on sorted leaf ids against PlaNet's recursive splitting written with the library's own calls."""

from __future__ import annotations

import numpy as np
import pytest
import s2geometry as s2
import torch

from mobilevision.geo import build_partition, leaf_cell_ids
from mobilevision.geo.distance import spherical_mean


def _s2_leaves(lat, lon) -> np.ndarray:
    return np.fromiter((s2.S2CellId(s2.S2LatLng.FromDegrees(a, b)).id() for a, b in zip(lat.tolist(), lon.tolist())),
                       dtype=np.uint64, count=len(lat))


def test_leaf_ids_equal_the_s2_library():
    rng = np.random.default_rng(7)
    n = 300_000
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    # the faces' edges and corners (ties between components), the poles, the antimeridian, rounded coordinates
    glat, glon = np.meshgrid(np.arange(-90, 91, 15.0), np.arange(-180, 181, 15.0))
    corner = np.degrees(np.arctan(1 / np.sqrt(2)))
    lat = np.concatenate([lat, glat.ravel(), [corner, -corner, corner], np.round(lat[:2000], 2)])
    lon = np.concatenate([lon, glon.ravel(), [45.0, -135.0, 135.0], np.round(lon[:2000], 2)])
    np.testing.assert_array_equal(leaf_cell_ids(lat, lon), _s2_leaves(lat, lon))


def _reference_partition(lat, lon, max_per_cell, min_per_cell, min_level, max_level):
    """PlaNet's splitting as first written: photo indices split level by level with S2CellId.parent()."""
    leaves = _s2_leaves(lat, lon)

    def split(indices, level):
        parents = np.fromiter((s2.S2CellId(int(x)).parent(level).id() for x in leaves[indices]), dtype=np.uint64,
                              count=len(indices))
        order = np.argsort(parents, kind="stable")
        ids, starts = np.unique(parents[order], return_index=True)
        return [(int(c), level, g) for c, g in zip(ids, np.split(indices[order], starts[1:]))]

    pending, cells = split(np.arange(len(leaves)), min_level), []
    while pending:
        cid, level, idx = pending.pop()
        if len(idx) > max_per_cell and level < max_level:
            pending.extend(split(idx, level + 1))
        else:
            cells.append((cid, idx))
    cells.sort(key=lambda c: c[0])
    kept = [(c, i) for c, i in cells if len(i) >= min_per_cell]
    assignment = np.full(len(leaves), -1, dtype=np.int64)
    means = []
    for k, (_, idx) in enumerate(kept):
        assignment[idx] = k
        m = spherical_mean(torch.from_numpy(lat[idx]), torch.from_numpy(lon[idx]))
        means.append((float(m[0]), float(m[1])))
    return kept, assignment, np.array(means), sum(len(i) for c, i in cells if len(i) < min_per_cell)


def _clustered(n, seed):
    rng = np.random.default_rng(seed)
    centers = rng.uniform([-60, -180], [70, 180], (40, 2))
    k = rng.integers(0, 40, n)
    lat = np.clip(centers[k, 0] + rng.normal(0, 3, n), -90, 90)
    lon = (centers[k, 1] + rng.normal(0, 3, n) + 180) % 360 - 180
    lat[:50], lon[:50] = 48.8566, 2.3522  # one spot with many photos: cells that cannot split below max_level
    return lat, lon


@pytest.mark.parametrize("max_per_cell,min_per_cell,min_level,max_level", [
    (400, 20, 0, 30), (150, 5, 2, 30), (40, 10, 0, 9), (2000, 1, 0, 30)])
def test_partition_equals_recursive_splitting(max_per_cell, min_per_cell, min_level, max_level):
    lat, lon = _clustered(12_000, seed=max_per_cell)
    part, assignment = build_partition(lat, lon, max_per_cell, min_per_cell, min_level, max_level)
    kept, ref_assignment, ref_means, dropped = _reference_partition(lat, lon, max_per_cell, min_per_cell, min_level,
                                                                    max_level)
    np.testing.assert_array_equal(part.cell_ids, np.array([c for c, _ in kept], dtype=np.uint64))
    np.testing.assert_array_equal(part.counts, [len(i) for _, i in kept])
    np.testing.assert_array_equal(assignment, ref_assignment)
    np.testing.assert_array_equal(part.centers, [[s2.S2CellId(c).ToLatLng().lat().degrees(),
                                                  s2.S2CellId(c).ToLatLng().lng().degrees()] for c, _ in kept])
    np.testing.assert_allclose(part.means, ref_means, rtol=0, atol=1e-9)  # the same sums, added in another order
    assert part.params["dropped_photos"] == dropped
