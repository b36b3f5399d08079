"""mobilevision.geo: distances against geopy, PlaNet's adaptive S2 partition on real city coordinates (checked with
the S2 library itself), serialization and neighbours."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import s2geometry as s2
import torch
from geopy.distance import great_circle

from mobilevision.geo import (
    EARTH_RADIUS_KM,
    CellPartition,
    build_partition,
    haversine_km,
    load_cities,
    pairwise_haversine_km,
    spherical_mean,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cities():
    c = load_cities()
    return c.latitude, c.longitude


# ------------------------------------------------------------------------------------------------ distances
def test_haversine_matches_geopy_great_circle():
    g = torch.Generator().manual_seed(0)
    n = 500
    lat1 = torch.rand(n, generator=g, dtype=torch.float64) * 180 - 90
    lon1 = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    lat2 = torch.rand(n, generator=g, dtype=torch.float64) * 180 - 90
    lon2 = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    # nearly antipodal pairs, short hops, across the antimeridian, at the poles
    lat2[:50], lon2[:50] = -lat1[:50], torch.remainder(lon1[:50] + 360 - 1e-4, 360) - 180
    lat2[50:100], lon2[50:100] = lat1[50:100] + 1e-3, lon1[50:100]
    lat1[100:110], lon1[100:110], lat2[100:110], lon2[100:110] = 10.0, 179.9, 10.5, -179.8
    lat1[110:120], lat2[110:120] = 90.0, -89.0
    d = haversine_km(lat1, lon1, lat2, lon2)
    ref = torch.tensor([great_circle((a, b), (c, e), radius=EARTH_RADIUS_KM).km
                        for a, b, c, e in zip(lat1.tolist(), lon1.tolist(), lat2.tolist(), lon2.tolist())],
                       dtype=torch.float64)
    assert d.dtype == torch.float64 and d.shape == (n,)
    assert torch.all((d - ref).abs() <= 1e-6 * ref)


def test_haversine_simple_geometry_and_broadcasting():
    # a quarter meridian, a degree of the equator, half the equator, zero
    assert haversine_km(0, 0, 90, 0).item() == pytest.approx(np.pi / 2 * EARTH_RADIUS_KM, rel=1e-12)
    assert haversine_km(0, 179.5, 0, -179.5).item() == pytest.approx(np.pi / 180 * EARTH_RADIUS_KM, rel=1e-12)
    assert haversine_km(0, 0, 0, 180).item() == pytest.approx(np.pi * EARTH_RADIUS_KM, rel=1e-12)
    assert haversine_km(48.85, 2.35, 48.85, 2.35).item() == 0.0
    # float32 input is computed in float64; pairwise = broadcasting
    lat = torch.tensor([0.0, 45.0, -30.0], dtype=torch.float32)
    lon = torch.tensor([0.0, 90.0, 170.0], dtype=torch.float32)
    m = pairwise_haversine_km(lat, lon, lat[:2], lon[:2])
    assert m.shape == (3, 2) and m.dtype == torch.float64
    assert torch.allclose(m, haversine_km(lat[:, None], lon[:, None], lat[None, :2], lon[None, :2]))
    assert m[0, 0] == 0 and m[1, 1] == 0


def test_spherical_mean_crosses_the_antimeridian():
    lat, lon = spherical_mean(torch.tensor([10.0, 10.0]), torch.tensor([179.0, -179.0]))
    assert abs(abs(lon.item()) - 180.0) < 1e-9 and lat.item() == pytest.approx(10.0, abs=0.01)
    lat, lon = spherical_mean(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 90.0]), weights=torch.tensor([3.0, 1.0]))
    assert lat.item() == pytest.approx(0.0, abs=1e-12) and lon.item() == pytest.approx(np.degrees(np.arctan2(1, 3)))


# ------------------------------------------------------------------------------------------------ partition
def _parent_count(leaves: np.ndarray, cell: s2.S2CellId) -> int:
    """Photos inside ``cell`` counted from S2 leaf ids (the library's ranges)."""
    lo, hi = cell.range_min().id(), cell.range_max().id()
    return int(((leaves >= np.uint64(lo)) & (leaves <= np.uint64(hi))).sum())


@pytest.mark.parametrize("max_per_cell,min_per_cell,min_level", [(200, 20, 0), (50, 5, 0), (400, 30, 2)])
def test_partition_honors_max_and_min_per_cell_on_real_cities(cities, max_per_cell, min_per_cell, min_level):
    lat, lon = cities
    part, assignment = build_partition(lat, lon, max_per_cell=max_per_cell, min_per_cell=min_per_cell,
                                       min_level=min_level)
    assert len(lat) == 6000
    assert part.counts.max() <= max_per_cell and part.counts.min() >= min_per_cell
    assert part.levels.min() >= min_level
    # photos of dropped cells are counted, everything else is assigned to exactly one kept cell
    assert part.params["dropped_photos"] == int((assignment < 0).sum()) == len(lat) - int(part.counts.sum())
    assert np.array_equal(np.bincount(assignment[assignment >= 0], minlength=len(part)), part.counts)
    assert part.params["dropped_photos"] > 0  # some remote places do not make a cell

    leaves = np.array([s2.S2CellId(s2.S2LatLng.FromDegrees(a, b)).id() for a, b in zip(lat, lon)], dtype=np.uint64)
    cells = [s2.S2CellId.FromToken(t) for t in part.tokens]
    for k, cell in enumerate(cells):
        # adaptive: a cell below min_level exists only because its parent held more than max_per_cell photos
        if cell.level() > min_level:
            assert _parent_count(leaves, cell.parent()) > max_per_cell
        assert _parent_count(leaves, cell) == part.counts[k]  # no dropped photo hides in a kept cell
        # the stored center is the library's cell center
        center = cell.ToLatLng()
        assert part.centers[k] == pytest.approx([center.lat().degrees(), center.lng().degrees()], abs=1e-9)
    # disjoint
    for a, b in zip(cells, cells[1:]):
        assert not a.intersects(b)


def test_every_training_photo_falls_in_its_assigned_cell(cities):
    lat, lon = cities
    part, assignment = build_partition(lat, lon, max_per_cell=100, min_per_cell=10)
    tokens = part.tokens
    for a, b, k in zip(lat, lon, assignment):
        leaf = s2.S2CellId(s2.S2LatLng.FromDegrees(a, b))
        if k >= 0:
            assert s2.S2CellId.FromToken(tokens[k]).contains(leaf)
        else:
            assert not any(s2.S2CellId.FromToken(t).contains(leaf) for t in tokens[:: max(1, len(tokens) // 50)])
    assert np.array_equal(part.assign(lat, lon), assignment)
    # the mean location of a cell is the spherical mean of its photos and lies inside or near the cell
    for k in range(0, len(part), 7):
        m_lat, m_lon = spherical_mean(torch.from_numpy(lat[assignment == k]), torch.from_numpy(lon[assignment == k]))
        assert part.means[k] == pytest.approx([m_lat.item(), m_lon.item()], abs=1e-9)


def test_partition_round_trips_through_a_weights_only_checkpoint(cities, tmp_path):
    lat, lon = cities
    part, _ = build_partition(lat, lon, max_per_cell=300, min_per_cell=20)
    torch.save({"partition": part.to_state()}, tmp_path / "p.pt")
    loaded = CellPartition.from_state(torch.load(tmp_path / "p.pt", weights_only=True)["partition"])
    assert loaded.same_cells(part) and loaded.tokens == part.tokens
    assert np.array_equal(loaded.centers, part.centers) and np.array_equal(loaded.counts, part.counts)
    assert loaded.params == part.params
    assert np.array_equal(loaded.assign(lat, lon), part.assign(lat, lon))


def test_neighbours_are_exactly_the_touching_cells(cities):
    lat, lon = cities
    part, _ = build_partition(lat, lon, max_per_cell=100, min_per_cell=5)
    nbs = part.neighbours()
    cells = [s2.S2Cell(s2.S2CellId.FromToken(t)) for t in part.tokens]
    sizes = {i for i in range(len(cells))}
    assert len({c.level() for c in cells}) > 2  # cells of several sizes
    for i in range(0, len(cells), 3):
        # the S2 library's own cell-to-cell distance: 0 for cells sharing an edge or a vertex
        touching = {j for j in sizes - {i} if cells[i].GetDistance(cells[j]).degrees() < 1e-9}
        assert set(nbs[i].tolist()) == touching, part.tokens[i]
    assert np.mean([len(n) for n in nbs]) > 3
    index, mask = part.neighbour_table()
    assert index.shape == mask.shape and mask.sum().item() == sum(len(n) for n in nbs)
    assert all(index[i, : len(n)].tolist() == n.tolist() for i, n in enumerate(nbs))


def test_partition_edge_cases(caplog):
    # 30 photos at one spot cannot be split below max_level: the cell keeps them, with a warning
    lat = np.array([48.8566] * 30 + [-33.87] * 3)
    lon = np.array([2.3522] * 30 + [151.21] * 3)
    with caplog.at_level(logging.WARNING):
        part, assignment = build_partition(lat, lon, max_per_cell=10, min_per_cell=5, max_level=12)
    assert len(part) == 1 and part.counts.tolist() == [30] and part.levels.tolist() == [12]
    assert "max_per_cell" in caplog.text
    assert part.params["dropped_photos"] == 3 and assignment[-3:].tolist() == [-1, -1, -1]
    assert part.assign([-33.87], [151.21]).tolist() == [-1]
    with pytest.raises(ValueError, match="latitude"):
        build_partition([91.0], [0.0], 10, 1)
    with pytest.raises(ValueError, match="min_per_cell"):
        build_partition(lat, lon, max_per_cell=5, min_per_cell=10)
    with pytest.raises(ValueError, match="no cell holds"):
        build_partition(lat[-3:], lon[-3:], max_per_cell=10, min_per_cell=5)
