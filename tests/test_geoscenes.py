"""Tests of the shipped city table and the geoscenes geolocalization dataset generator."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data.geoscenes import (
    GEOSCENES_GENERATOR_VERSION,
    MANIFEST_NAME,
    MAX_OFFSET_KM,
    ensure_geoscenes_dataset,
    render_geoscene,
    sample_locations,
)
from mobilevision.geo.cities import load_cities
from mobilevision.geo.distance import haversine_km, pairwise_haversine_km

TINY = {"num_train": 6, "num_val": 3, "image_size": 32, "seed": 0}


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith((".jpg", ".csv")):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    out[os.path.relpath(os.path.join(dirpath, f), root)] = fh.read()
    return out


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _destination(lat, lon, km, bearing_deg):
    """Great-circle destination point (degrees)."""
    d, b = km / 6371.0088, np.radians(bearing_deg)
    la, lo = np.radians(lat), np.radians(lon)
    la2 = np.arcsin(np.sin(la) * np.cos(d) + np.cos(la) * np.sin(d) * np.cos(b))
    lo2 = lo + np.arctan2(np.sin(b) * np.sin(d) * np.cos(la), np.cos(d) - np.sin(la) * np.sin(la2))
    return float(np.degrees(la2)), float((np.degrees(lo2) + 180) % 360 - 180)


def _km_to_nearest_city(lat, lon):
    c = load_cities()
    return pairwise_haversine_km(lat, lon, c.latitude, c.longitude).min(1).values


@pytest.fixture(scope="module")
def tiny_geoscenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("geoscenes") / "data"
    assert ensure_geoscenes_dataset(root, **TINY, workers=1) == root
    return root


# --------------------------------------------------------------------------------------------
# cities
# --------------------------------------------------------------------------------------------


def test_load_cities():
    c = load_cities()
    assert len(c) == 6000
    c.latitude[0] = 99.0  # callers get their own copy
    assert load_cities().latitude[0] != 99.0
    c = load_cities()
    assert c.latitude.dtype == np.float64 and c.longitude.dtype == np.float64
    assert c.latitude.shape == c.longitude.shape == (6000,)
    assert len(c.name) == len(c.country_code) == 6000
    assert (np.abs(c.latitude) <= 90).all() and (np.abs(c.longitude) <= 180).all()
    assert all(len(cc) == 2 for cc in c.country_code)
    assert any("," in n for n in c.name)  # csv quoting is honoured
    assert {"US", "DE", "CN"} <= set(c.country_code)


# --------------------------------------------------------------------------------------------
# locations and rendering
# --------------------------------------------------------------------------------------------


def test_sample_locations_near_cities():
    lat, lon = sample_locations(400, np.random.default_rng(0))
    assert lat.dtype == np.float64 and lon.dtype == np.float64 and lat.shape == lon.shape == (400,)
    assert (np.abs(lat) <= 90).all() and (lon >= -180).all() and (lon <= 180).all()
    d = _km_to_nearest_city(lat, lon)
    assert float(d.max()) <= MAX_OFFSET_KM + 0.01 and float(d.max()) <= 25.0
    assert float(d.mean()) > 2.0  # really offset, not the city itself
    again = sample_locations(400, np.random.default_rng(0))
    assert np.array_equal(lat, again[0]) and np.array_equal(lon, again[1])
    assert not np.array_equal(lat, sample_locations(400, np.random.default_rng(1))[0])


def test_render_deterministic_and_shape():
    a = render_geoscene(48.85, 2.35, np.random.default_rng(5), 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_geoscene(48.85, 2.35, np.random.default_rng(5), 64))
    assert np.array_equal(a, render_geoscene(48.85, 2.35, 5, 64))  # int seed
    assert not np.array_equal(a, render_geoscene(48.85, 2.35, np.random.default_rng(6), 64))
    assert render_geoscene(-33.9, 151.2, 0).shape == (96, 96, 3)  # default size
    assert a.std() > 10  # not a flat image


def test_render_smooth_in_location():
    """Same random stream: photos 10 km apart are near-identical, photos ~5000 km apart are not."""
    lat, lon = sample_locations(8, np.random.default_rng(3))
    near, far = [], []
    for i, (la, lo) in enumerate(zip(lat, lon)):
        lb, lob = _destination(la, lo, 10.0, 45.0 * i)
        lc, loc = _destination(la, lo, 5000.0, 45.0 * i)
        assert abs(float(haversine_km(la, lo, lb, lob)) - 10.0) < 0.01
        assert abs(float(haversine_km(la, lo, lc, loc)) - 5000.0) < 0.01
        a, b, c = (render_geoscene(y, x, np.random.default_rng(i), 48).astype(float)
                   for y, x in ((la, lo), (lb, lob), (lc, loc)))
        near.append(np.abs(a - b).mean())
        far.append(np.abs(a - c).mean())
    assert np.mean(near) < 0.1 * np.mean(far)
    assert np.mean(far) > 15


def test_render_no_seam_at_antimeridian_or_poles():
    east, west = render_geoscene(-17.0, 179.9999, 3, 48), render_geoscene(-17.0, -179.9999, 3, 48)
    assert np.abs(east.astype(int) - west.astype(int)).mean() < 0.5
    # Two points ~2 km apart across the north pole (longitude 0 vs 180).
    a, b = render_geoscene(89.99, 0.0, 3, 48), render_geoscene(89.99, 180.0, 3, 48)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5


# --------------------------------------------------------------------------------------------
# dataset files
# --------------------------------------------------------------------------------------------


def test_dataset_layout_and_csv(tiny_geoscenes):
    root = tiny_geoscenes
    manifest = json.loads((root / MANIFEST_NAME).read_text())["params"]
    assert manifest["generator"] == "mobilevision.data.geoscenes"
    assert manifest["version"] == GEOSCENES_GENERATOR_VERSION
    for split, n in (("train", TINY["num_train"]), ("val", TINY["num_val"])):
        header, rows = _read_csv(root / f"{split}.csv")
        assert header == ["image_path", "latitude", "longitude"]
        assert [r[0] for r in rows] == [f"images/{split}/{i:06d}.jpg" for i in range(n)]
        assert sorted(os.listdir(root / "images" / split)) == [f"{i:06d}.jpg" for i in range(n)]
        lat = np.array([float(r[1]) for r in rows])
        lon = np.array([float(r[2]) for r in rows])
        assert all(len(v.split(".")[1]) == 6 for r in rows for v in r[1:])
        assert (np.abs(lat) <= 90).all() and (np.abs(lon) <= 180).all()
        assert float(_km_to_nearest_city(lat, lon).max()) <= 25.0
        for path, *_ in rows:
            with Image.open(root / path) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 32)
                im.load()


def test_dataset_deterministic(tiny_geoscenes, tmp_path):
    a = _tree_bytes(tiny_geoscenes)
    b = _tree_bytes(ensure_geoscenes_dataset(tmp_path / "again", **TINY, workers=2))
    assert len(a) == TINY["num_train"] + TINY["num_val"] + 2
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)  # identical bytes, 1 or 2 processes
    other = _tree_bytes(ensure_geoscenes_dataset(tmp_path / "other", **{**TINY, "seed": 1}, workers=1))
    assert all(a[k] != other[k] for k in a)


def test_dataset_idempotent_and_regenerates(tmp_path):
    root = tmp_path / "g"
    ensure_geoscenes_dataset(root, 2, 1, 24, 0, workers=1)
    files = [root / "images" / "train" / "000000.jpg", root / "train.csv", root / MANIFEST_NAME]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    ensure_geoscenes_dataset(root, 2, 1, 24, 0, workers=1)  # complete: skipped
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    ensure_geoscenes_dataset(root, 3, 1, 24, 0, workers=1)  # other parameters: rebuilt
    assert len(os.listdir(root / "images" / "train")) == 3
    assert len(_read_csv(root / "train.csv")[1]) == 3
    os.remove(root / "images" / "val" / "000000.jpg")  # incomplete: rebuilt
    ensure_geoscenes_dataset(root, 3, 1, 24, 0, workers=1)
    assert (root / "images" / "val" / "000000.jpg").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_dataset_refuses_foreign_folder(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError):
        ensure_geoscenes_dataset(tmp_path / "foreign", 1, 1, 24, 0, workers=1)
    assert (tmp_path / "foreign" / "mine.txt").read_text() == "x"
    with pytest.raises(ValueError):
        ensure_geoscenes_dataset(tmp_path / "empty", 0, 1, 24, 0, workers=1)


def test_unit_vector_agrees_with_geo_distance():
    """The renderer's fields use the same unit-vector convention as mobilevision.geo.distance."""
    from mobilevision.data import geoscenes
    from mobilevision.geo.distance import to_unit_vectors

    for lat, lon in ((0.0, 0.0), (45.0, -120.0), (-80.0, 170.0)):
        ours = geoscenes._unit_vector(lat, lon)
        assert torch.allclose(torch.as_tensor(ours), to_unit_vectors(lat, lon), atol=1e-12)
