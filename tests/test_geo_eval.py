"""Im2GPS geolocalization harness: hand-computed metrics, the torchmetrics accumulator, CSV checks, CLI, map."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from mobilevision.cli.eval import main as eval_main
from mobilevision.evaluation.geolocalization import (
    GEO_METRIC_KEYS,
    GEO_THRESHOLDS_KM,
    PLANET_REFERENCE,
    GeoAccuracy,
    evaluate_prediction_csvs,
    geo_metrics,
    match_prediction_csvs,
    print_geo_table,
    read_locations_csv,
    save_error_map,
    save_geo_json,
)
from mobilevision.geo.distance import EARTH_RADIUS_KM, haversine_km

#: one degree of a great circle: 2 pi R / 360 = 111.195 km
DEG_KM = 2 * math.pi * EARTH_RADIUS_KM / 360
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (id, true lat, true lon, predicted lat, predicted lon, error in degrees of a great circle)
HAND_CASE = [
    ("same", 10.0, 20.0, 10.0, 20.0, 0.0),           # exact hit
    ("street", 0.0, 0.0, 0.0, 0.005, 0.005),         # 0.556 km along the equator
    ("city", 0.0, 100.0, 0.0, 100.1, 0.1),           # 11.12 km
    ("antimeridian", 0.0, 179.5, 0.0, -179.5, 1.0),  # 111.2 km the short way across +-180
    ("antimeridian3", 0.0, -179.0, 0.0, 178.0, 3.0),  # 333.6 km, also across +-180
    ("meridian", 0.0, -60.0, 5.0, -60.0, 5.0),       # 556.0 km along a meridian
    ("continent", 0.0, -10.0, 0.0, 10.0, 20.0),      # 2224 km
    ("pole", 0.0, 0.0, 90.0, 0.0, 90.0),             # 10008 km, equator to pole
]
# sorted errors (deg): 0, .005, .1, 1, 3, 5, 20, 90 -> within 1 km: 2, 25 km: 3, 200 km: 4, 750 km: 6, 2500 km: 7
HAND_EXPECTED = {
    "acc_1km": 2 / 8,
    "acc_25km": 3 / 8,
    "acc_200km": 4 / 8,
    "acc_750km": 6 / 8,
    "acc_2500km": 7 / 8,
    "median_km": (1.0 + 3.0) / 2 * DEG_KM,  # even n: mean of the 4th and 5th errors
    "mean_km": (0 + 0.005 + 0.1 + 1 + 3 + 5 + 20 + 90) / 8 * DEG_KM,
    "num_samples": 8,
}


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _hand_csvs(tmp_path: Path) -> tuple[Path, Path]:
    """Ground truth with extra columns in another column order; predictions in another row order."""
    gt = _write_csv(tmp_path / "gt.csv", "latitude,city,image_id,longitude",
                    [f"{tl},somewhere,{i},{tn}" for i, tl, tn, _, _, _ in HAND_CASE])
    pred = _write_csv(tmp_path / "pred.csv", "image_id,latitude,longitude,score",
                      [f"{i},{pl},{pn},0.5" for i, _, _, pl, pn, _ in reversed(HAND_CASE)])
    return pred, gt


def _assert_stats(stats: dict, expected: dict) -> None:
    assert set(expected) <= set(stats)
    for key, value in expected.items():
        assert float(stats[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ------------------------------------------------------------------------------------ metrics ----
def test_distances_of_the_hand_case():
    _, tl, tn, pl, pn, deg = zip(*HAND_CASE)
    d = haversine_km(*(torch.tensor(v, dtype=torch.float64) for v in (pl, pn, tl, tn)))
    assert d.numpy() == pytest.approx(np.asarray(deg) * DEG_KM, rel=1e-9, abs=1e-9)
    assert DEG_KM == pytest.approx(111.195, abs=1e-3)


def test_geo_metrics_hand_case_and_input_types():
    deg = np.asarray([c[-1] for c in HAND_CASE])
    for distances in (deg * DEG_KM, torch.tensor(deg * DEG_KM), list(deg * DEG_KM), torch.tensor(deg * DEG_KM).float()):
        stats = geo_metrics(distances)
        rel = 1e-6 if torch.is_tensor(distances) and distances.dtype == torch.float32 else 1e-9
        for key, value in HAND_EXPECTED.items():
            assert stats[key] == pytest.approx(value, rel=rel), key
    assert isinstance(stats["num_samples"], int) and all(isinstance(stats[k], float) for k in GEO_METRIC_KEYS)


def test_geo_metrics_threshold_is_inclusive_and_median_of_even_count():
    stats = geo_metrics([1.0, 25.0, 200.0, 750.0, 2500.0, 2500.001])
    assert [stats[f"acc_{t}km"] for t in GEO_THRESHOLDS_KM] == [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6]
    assert stats["median_km"] == (200.0 + 750.0) / 2
    assert geo_metrics([3.0, 1.0, 2.0])["median_km"] == 2.0
    assert geo_metrics([[4.0, 1.0]])["median_km"] == 2.5
    with pytest.raises(ValueError, match="empty"):
        geo_metrics([])
    with pytest.raises(ValueError, match="finite"):
        geo_metrics([1.0, float("nan")])
    with pytest.raises(ValueError, match=">= 0"):
        geo_metrics([-1.0])


def test_geo_accuracy_matches_geo_metrics_across_updates_and_reset():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(n, generator=g) * 180 - 90, torch.rand(n, generator=g) * 360 - 180,
                torch.rand(n, generator=g) * 180 - 90, torch.rand(n, generator=g) * 360 - 180) for n in (5, 1, 12)]
    # some near hits, so the small thresholds are not all zero
    batches.append((batches[0][2] + 0.001, batches[0][3], batches[0][2], batches[0][3]))
    metric = GeoAccuracy()
    for batch in batches:
        with torch.inference_mode():
            metric.update(*batch)
    out = metric.compute()
    assert all(torch.is_tensor(v) and v.ndim == 0 for v in out.values())
    expected = geo_metrics(torch.cat([haversine_km(*b) for b in batches]))
    assert expected["num_samples"] == 23 and expected["acc_1km"] == pytest.approx(5 / 23)
    assert {k: float(v) for k, v in out.items()} == pytest.approx({k: float(v) for k, v in expected.items()})
    assert metric._reductions["distances"] is dim_zero_cat  # DDP gathers every rank's errors

    metric.reset()
    with pytest.raises(ValueError, match="before any update"), pytest.warns(UserWarning, match="before the"):
        metric.compute()
    with torch.inference_mode():
        metric.update(*batches[1])
    assert float(metric.compute()["num_samples"]) == 1.0
    metric.reset()
    _, tl, tn, pl, pn, _ = zip(*HAND_CASE)  # float lists (numbers), as a data loader might hand them
    metric.update(np.asarray(pl), np.asarray(pn), np.asarray(tl), np.asarray(tn))
    _assert_stats(metric.compute(), HAND_EXPECTED)
    with pytest.raises(ValueError, match="one shape"):
        metric.update(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(3))


def test_planet_reference_numbers():
    assert PLANET_REFERENCE["PlaNet-MobileNet"] == {"acc_1km": 11.4, "acc_25km": 31.7, "acc_200km": 45.2,
                                                    "acc_750km": 60.3, "acc_2500km": 79.3}
    assert PLANET_REFERENCE["PlaNet"]["acc_2500km"] == 77.6 and PLANET_REFERENCE["Im2GPS"]["acc_1km"] == 2.5


# ---------------------------------------------------------------------------------------- CSV ----
def test_read_locations_csv_and_join(tmp_path):
    pred, gt = _hand_csvs(tmp_path)
    ids, lat, lon = read_locations_csv(gt)
    assert ids == [c[0] for c in HAND_CASE] and lat.dtype == np.float64
    assert lon.tolist() == [c[2] for c in HAND_CASE]
    matched = match_prediction_csvs(pred, gt)
    assert matched.image_ids == ids and matched.pred_lon.tolist() == [c[4] for c in HAND_CASE]
    _assert_stats(evaluate_prediction_csvs(pred, gt), HAND_EXPECTED)


@pytest.mark.parametrize(
    "header, rows, pattern",
    [
        ("image_id,latitude", ["a,1"], r"lacks column\(s\) longitude"),
        ("image_id,latitude,longitude", [], "no data rows"),
        ("image_id,latitude,longitude", ["a,1,2", "b,north,2"], "line 3: latitude 'north'"),
        ("image_id,latitude,longitude", ["a,nan,2"], "line 2: latitude .* not a finite number"),
        ("image_id,latitude,longitude", ["a,1,2", "b,90.5,2"], r"line 3: latitude 90.5 .* outside \[-90, 90\]"),
        ("image_id,latitude,longitude", ["a,1,-180.01"], r"line 2: longitude -180.01 .* outside \[-180, 180\]"),
        ("image_id,latitude,longitude", ["a,1,2", "b,1,2", "a,3,4"], "line 4: duplicate image_id 'a' .*line 2"),
        ("image_id,latitude,longitude", ["a,1"], "line 2: 2 field"),
        ("image_id,latitude,longitude", [",1,2"], "line 2: empty image_id"),
    ],
)
def test_read_locations_csv_errors(tmp_path, header, rows, pattern):
    path = _write_csv(tmp_path / "bad_locations.csv", header, rows)
    with pytest.raises(ValueError, match=pattern) as info:
        read_locations_csv(path)
    assert "bad_locations.csv" in str(info.value)


def test_read_locations_csv_missing_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_locations_csv(tmp_path / "nowhere.csv")
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(ValueError, match="empty.csv: empty file"):
        read_locations_csv(tmp_path / "empty.csv")


def test_unmatched_ids(tmp_path):
    pred, gt = _hand_csvs(tmp_path)
    rows = pred.read_text().splitlines()
    short = _write_csv(tmp_path / "short.csv", rows[0], rows[1:-2])
    with pytest.raises(ValueError, match=r"short.csv: no prediction for 2 of the 8 ground-truth images .*'same'"):
        match_prediction_csvs(short, gt)
    extra = _write_csv(tmp_path / "extra.csv", rows[0], [*rows[1:], "ghost,1,2,0.1"])
    with pytest.raises(ValueError, match=r"extra.csv: 1 predicted image id\(s\) are not in the ground truth .*'ghost'"):
        match_prediction_csvs(extra, gt)


# ------------------------------------------------------------------------------ output, CLI ----
def test_print_table_and_json(tmp_path):
    from rich.console import Console

    stats = geo_metrics([c[-1] * DEG_KM for c in HAND_CASE])
    console = Console(record=True, width=160)
    print_geo_table(stats, "geo", reference=True, console=console)
    text = console.export_text()
    assert "continent" in text and "PlaNet-MobileNet" in text and "79.3" in text and "87.5" in text
    assert "222.4 km" in text  # median
    console = Console(record=True, width=160)
    print_geo_table(stats, "geo", reference=False, console=console)
    assert "PlaNet" not in console.export_text()

    out = save_geo_json({k: torch.tensor(float(v)) for k, v in stats.items()}, tmp_path / "deep" / "stats.json")
    data = json.loads(out.read_text())
    assert data == pytest.approx(stats) and isinstance(data["num_samples"], int)


def test_cli_end_to_end(tmp_path, capsys):
    pred, gt = _hand_csvs(tmp_path)
    json_out, map_out = tmp_path / "out" / "stats.json", tmp_path / "out" / "map.png"
    rc = eval_main(["geolocalization", "--predictions", str(pred), "--ground-truth", str(gt),
                    "--json-out", str(json_out), "--error-map", str(map_out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"wrote {json_out}" in printed and f"wrote {map_out}" in printed and "PlaNet" in printed
    data = json.loads(json_out.read_text())
    assert set(data) == {*GEO_METRIC_KEYS, "mean_km", "num_samples"}
    assert data["num_samples"] == 8
    _assert_stats(data, HAND_EXPECTED)
    blob = map_out.read_bytes()
    assert blob.startswith(PNG_SIGNATURE) and len(blob) > 20_000

    assert eval_main(["geolocalization", "--predictions", str(pred), "--ground-truth", str(gt), "--no-reference"]) == 0
    assert "PlaNet" not in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    pred, gt = _hand_csvs(tmp_path)
    bad = _write_csv(tmp_path / "bad_pred.csv", "image_id,latitude,longitude", ["same,10,200"])
    assert eval_main(["geolocalization", "--predictions", str(bad), "--ground-truth", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad_pred.csv" in err and "line 2" in err
    assert eval_main(["geolocalization", "--predictions", str(tmp_path / "missing.csv"), "--ground-truth", str(gt)]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert eval_main(["geolocalization", "--predictions", str(pred)]) == 2
    assert "--ground-truth" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the source group is required
        eval_main(["geolocalization", "--ground-truth", str(gt)])


def test_error_map_subsamples_deterministically(tmp_path):
    g = np.random.default_rng(1)
    n = 300
    tl, tn = g.uniform(-60, 70, n), g.uniform(-180, 180, n)
    pl, pn = tl + g.normal(0, 5, n), (tn + g.normal(0, 20, n) + 180) % 360 - 180
    a = save_error_map(pl, pn, tl, tn, tmp_path / "a.png", max_points=50)
    b = save_error_map(torch.tensor(pl), torch.tensor(pn), torch.tensor(tl), torch.tensor(tn),
                       tmp_path / "b.png", max_points=50)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="one length"):
        save_error_map(pl[:3], pn, tl, tn, tmp_path / "c.png")


def test_error_map_lines_take_the_short_way_across_the_antimeridian():
    from mobilevision.evaluation.geolocalization import _antimeridian_segments

    segs = _antimeridian_segments(np.array([179.5, -179.0, 10.0]), np.array([0.0, 10.0, 0.0]),
                                  np.array([-179.5, 178.0, 20.0]), np.array([0.0, 40.0, 5.0]))
    expected = [((179.5, 0.0), (180.0, 0.0)), ((-180.0, 0.0), (-179.5, 0.0)),
                ((-179.0, 10.0), (-180.0, 20.0)),  # 1 of the 3 degrees is west of -179: a third of the way
                ((180.0, 20.0), (178.0, 40.0)), ((10.0, 0.0), (20.0, 5.0))]
    np.testing.assert_allclose(np.asarray(segs, dtype=float), np.asarray(expected), atol=1e-12)
    assert len(segs) == 5
