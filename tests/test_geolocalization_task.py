"""Geolocalization: photo lists and bad rows, the data module's cells, GeolocalizationTask (loss, prediction, fit
through every config, checkpoints carrying the partition, resume checks) and mobilevision eval geolocalization."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from mobilevision.cli.train import CONFIG_DIR, expand_shortcuts, main
from mobilevision.data.geolocalization import GeolocalizationDataModule, read_geotagged_list
from mobilevision.data.image_io import ImageDecodeError
from mobilevision.cli.eval import main as eval_main
from mobilevision.geo import build_partition, haversine_km, load_cities, spherical_mean
from mobilevision.tasks import GeolocalizationTask, load_task

pytestmark = pytest.mark.usefixtures("one_thread")

GEO_CONFIGS = sorted((CONFIG_DIR / "geolocalization").glob("*.yaml"))
TINY = ["--data.init_args.geoscenes_train", "160", "--data.init_args.geoscenes_val", "40",
        "--data.init_args.geoscenes_image_size", "48", "--data.init_args.image_size", "32",
        "--data.init_args.batch_size", "8", "--data.init_args.max_per_cell", "40",
        "--data.init_args.min_per_cell", "5", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


def write_photos(folder: Path, rows: list[tuple], name: str = "list.csv") -> Path:
    """Write small JPEGs (colour by latitude) for ``rows`` of (file, lat, lon) and a CSV list of them."""
    folder.mkdir(parents=True, exist_ok=True)
    for file, lat, lon in rows:
        if not (folder / file).exists() and isinstance(lat, float):
            v = int(np.clip((lat + 90) / 180 * 255, 0, 255))
            Image.fromarray(np.full((24, 24, 3), (v, 255 - v, 128), np.uint8)).save(folder / file)
    with open(folder / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "latitude", "longitude", "note"])
        for file, lat, lon in rows:
            w.writerow([file, lat, lon, "x"])
    return folder / name


@pytest.fixture(scope="module")
def city_photos(tmp_path_factory) -> tuple[Path, Path]:
    """Train / val lists at real city coordinates (the first 120 / next 30 shipped cities)."""
    root = tmp_path_factory.mktemp("cityphotos")
    c = load_cities()
    rows = [(f"{i:04d}.jpg", float(c.latitude[i]), float(c.longitude[i])) for i in range(150)]
    return write_photos(root, rows[:120], "train.csv"), write_photos(root, rows[120:], "val.csv")


# -- photo lists and bad rows ------------------------------------------------------------------------------
def test_csv_and_jsonl_lists_read_alike(city_photos, tmp_path):
    train, _ = city_photos
    samples = read_geotagged_list(train)
    assert len(samples) == 120 and samples.image_ids[0] == "0000.jpg"
    assert samples.files[0] == str(train.parent / "0000.jpg")
    jsonl = tmp_path / "list.jsonl"
    with open(jsonl, "w") as f:
        for i, (lat, lon) in enumerate(zip(samples.latitude, samples.longitude)):
            f.write(json.dumps({"image_path": samples.files[i], "latitude": lat, "longitude": lon}) + "\n\n")
    other = read_geotagged_list(jsonl)  # absolute paths, blank lines ignored
    assert other.files == samples.files
    assert np.array_equal(other.latitude, samples.latitude) and np.array_equal(other.longitude, samples.longitude)


@pytest.mark.parametrize("lat,lon,message", [
    (95.0, 10.0, "latitude 95.0 outside"), (-90.5, 0.0, "latitude -90.5 outside"),
    (10.0, 180.5, "longitude 180.5 outside"), ("north", 0.0, "latitude 'north' is not a number"),
    ("nan", 0.0, "latitude nan outside"), ("", 0.0, "no latitude")])
def test_bad_coordinates_raise_naming_file_and_line(tmp_path, lat, lon, message):
    path = write_photos(tmp_path, [("a.jpg", 10.0, 20.0), ("b.jpg", 11.0, 21.0), ("a.jpg", lat, lon)])
    with pytest.raises(ValueError, match=f"list.csv:4: {message}"):
        read_geotagged_list(path)


def test_missing_columns_missing_and_corrupt_images(tmp_path):
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("path,lat,lon\na.jpg,1,2\n")
    with pytest.raises(ValueError, match=r"h.csv: missing column\(s\) image_path, latitude, longitude"):
        read_geotagged_list(bad_header)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_geotagged_list(tmp_path / "nope.csv")
    path = write_photos(tmp_path, [("a.jpg", 10.0, 20.0), ("gone.jpg", 1.0, 2.0)])
    (tmp_path / "gone.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 2 image files not found: .*gone.jpg"):
        read_geotagged_list(path)
    # a corrupt image is named at setup, before training or evaluation starts
    path = write_photos(tmp_path, [("a.jpg", 10.0, 20.0), ("broken.jpg", 1.0, 2.0)], "c.csv")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dm = GeolocalizationDataModule(dataset="files", train_file=str(path), val_file=str(path), min_per_cell=1,
                                   image_size=16, num_workers=0)
    with pytest.raises(ImageDecodeError, match=r"c.csv: 1 of 2 images cannot be read:\n.*broken.jpg"):
        dm.setup("validate")


def test_skip_mode_counts_every_bad_row(tmp_path, caplog):
    rows = [("a.jpg", 10.0, 20.0), ("b.jpg", 95.0, 0.0), ("c.jpg", 0.0, -200.0), ("d.jpg", "x", 1.0),
            ("e.jpg", 12.0, 22.0), ("gone.jpg", 1.0, 2.0), ("broken.jpg", 3.0, 4.0)]
    path = write_photos(tmp_path, rows)
    (tmp_path / "gone.jpg").unlink()
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        samples = read_geotagged_list(path, bad_rows="skip")
    assert samples.image_ids == ["a.jpg", "e.jpg"]
    assert samples.skipped == {"out_of_range": 2, "unparsable": 1, "missing_image": 1, "corrupt_image": 1}
    assert "skipped 5 row(s)" in caplog.text and "list.csv" in caplog.text


# -- data module ---------------------------------------------------------------------------------------------
def test_data_module_partition_and_batches(city_photos):
    train, val = city_photos
    dm = GeolocalizationDataModule(dataset="files", train_file=str(train), val_file=str(val), max_per_cell=30,
                                   min_per_cell=4, image_size=16, batch_size=8, num_workers=0)
    part = dm.partition  # before setup: the CLI links it to the model
    ref, assignment = build_partition(dm._train().latitude, dm._train().longitude, 30, 4)
    assert part.same_cells(ref) and dm.num_cells == len(ref)
    dm.setup("fit")
    assert len(dm.train_dataset) == int((assignment >= 0).sum())  # photos of dropped cells are not trained on
    assert (dm.train_dataset.cells >= 0).all()
    images, cells, coords = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 16, 16) and cells.dtype == torch.int64 and coords.dtype == torch.float64
    val = read_geotagged_list(val)
    assert torch.equal(coords, torch.from_numpy(np.stack([val.latitude, val.longitude], 1))[:8])
    assert cells.tolist() == part.assign(val.latitude[:8], val.longitude[:8]).tolist()


# -- the task ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def partition():
    c = load_cities()
    part, _ = build_partition(c.latitude, c.longitude, max_per_cell=300, min_per_cell=30)
    return part


def test_neighbour_smoothing_is_cross_entropy_with_soft_targets(partition):
    task = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=partition, neighbour_smoothing=0.2)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, len(partition), generator=g)
    cells = torch.tensor([0, 3, 7, -1, len(partition) - 1, 5])
    target = torch.zeros(6, len(partition))
    for b, y in enumerate(cells.tolist()):
        if y >= 0:
            nbs = partition.neighbours()[y]
            target[b, y] = 1 - 0.2 if len(nbs) else 1.0
            target[b, nbs] = 0.2 / max(1, len(nbs))
    valid = cells >= 0
    expected = F.cross_entropy(logits[valid], target[valid])
    assert task.loss(logits, cells).item() == pytest.approx(expected.item(), rel=1e-5)
    plain = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=partition)
    assert plain.loss(logits, cells).item() == pytest.approx(F.cross_entropy(logits, cells, ignore_index=-1).item())


def test_predicted_locations(partition):
    task = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=partition)
    logits = torch.full((2, len(partition)), -20.0)
    logits[0, 4] = 5.0
    logits[1, 2] = logits[1, 9] = 5.0  # two equally likely cells
    pred = task.predict_locations(logits)
    assert pred[0].tolist() == pytest.approx(partition.centers[4].tolist())
    task.hparams.cell_location = "mean"
    assert task.predict_locations(logits)[0].tolist() == pytest.approx(partition.means[4].tolist())
    task.hparams.update(predict="topk", top_k=2)
    m_lat, m_lon = spherical_mean(torch.tensor(partition.means[[2, 9], 0]), torch.tensor(partition.means[[2, 9], 1]))
    assert task.predict_locations(logits)[1].tolist() == pytest.approx([m_lat.item(), m_lon.item()], abs=1e-6)
    task.hparams.top_k = 1
    assert task.predict_locations(logits)[0].tolist() == pytest.approx(partition.means[4].tolist())
    with pytest.raises(ValueError, match="partition"):
        GeolocalizationTask(backbone="mobilenet_v1")


def test_task_shortcut_picks_the_geoscenes_config():
    task, args = expand_shortcuts(["--task", "geolocalization", "--backbone", "mobilenet_v1"])
    assert task == "geolocalization"
    assert args[:3] == ["fit", "--config", str(CONFIG_DIR / "geolocalization/geoscenes.yaml")]


@pytest.mark.parametrize("config", GEO_CONFIGS, ids=lambda p: p.stem)
def test_every_config_fits(config, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "geoscenes_tiny"  # shared by the tests, generated once
    cli = main(["fit", "--config", str(config), "--data.init_args.dataset", "geoscenes", "--data.init_args.root",
                str(root), *TINY, "--data.init_args.num_workers", "0", "--model.init_args.backbone_weights", "null",
                "--model.init_args.width", "0.25", "--trainer.devices", "1", "--trainer.precision", "32-true",
                "--trainer.fast_dev_run", "2", "--trainer.default_root_dir", str(tmp_path_factory.mktemp("run"))])
    task = cli.model
    assert isinstance(task, GeolocalizationTask)
    assert task.partition.same_cells(cli.datamodule.partition)
    assert len(task.partition) == task.model.fc.out_features > 3


def test_checkpoint_carries_the_partition_and_eval_cli(tmp_path_factory, tmp_path):
    root = tmp_path_factory.getbasetemp() / "geoscenes_tiny"
    ckpt_dir = tmp_path / "ckpt"
    cli = main(["fit", "--config", str(GEO_CONFIGS[0]), "--data.init_args.root", str(root), *TINY,
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.max_time", "null",
                "--trainer.check_val_every_n_epoch", "1", "--model.init_args.width", "0.25",
                "--trainer.default_root_dir", str(tmp_path), "--checkpoint.dirpath", str(ckpt_dir)])
    trained, dm = cli.model.eval(), cli.datamodule
    loaded, raw = load_task(ckpt_dir / "last.ckpt", GeolocalizationTask)
    assert loaded.partition.same_cells(dm.partition) and loaded.partition.tokens == dm.partition.tokens
    assert np.array_equal(loaded.partition.counts, dm.partition.counts)
    assert loaded.partition.params == dm.partition.params and loaded.partition.params["max_per_cell"] == 40
    assert raw["cell_partition"]["tokens"] == dm.partition.tokens  # readable in the checkpoint too
    images, _, _ = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.allclose(loaded.predict_locations(loaded(images)), trained.predict_locations(trained(images)))

    # checkpoint mode: table + JSON + predictions CSV + error map; the predictions CSV scored against the ground
    # truth by the model-free mode gives the same numbers
    out = tmp_path / "eval"
    assert eval_main(["geolocalization", "--checkpoint", str(ckpt_dir / "last.ckpt"), "--json-out",
                      str(out / "m.json"), "--predictions-out", str(out / "p.csv"), "--error-map",
                      str(out / "map.png"), "--batch-size", "16", "--num-workers", "0"]) == 0
    stats = json.loads((out / "m.json").read_text())
    for key in ("acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km"):
        assert key in stats and key in stats["baseline_biggest_cell"]
    assert stats["num_samples"] == 40
    assert (out / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val = read_geotagged_list(root / "val.csv")
    with open(out / "gt.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "latitude", "longitude"])
        w.writerows(zip(val.image_ids, val.latitude, val.longitude))
    assert eval_main(["geolocalization", "--predictions", str(out / "p.csv"), "--ground-truth", str(out / "gt.csv"),
                      "--json-out", str(out / "m2.json")]) == 0
    again = json.loads((out / "m2.json").read_text())
    for key in ("acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km"):
        assert again[key] == stats[key]
    assert again["median_km"] == pytest.approx(stats["median_km"], rel=1e-6)
    # the baseline is the biggest cell's location for every photo
    big = int(np.argmax(dm.partition.counts))
    d = haversine_km(*dm.partition.centers[big], val.latitude, val.longitude)
    assert stats["baseline_biggest_cell"]["acc_2500km"] == pytest.approx(float((d <= 2500).double().mean()))

    # the same photo list evaluated with --data-file, and a classification checkpoint is refused
    assert eval_main(["geolocalization", "--checkpoint", str(ckpt_dir / "last.ckpt"), "--data-file",
                      str(root / "val.csv"), "--json-out", str(out / "m3.json"), "--num-workers", "0"]) == 0
    assert json.loads((out / "m3.json").read_text())["acc_2500km"] == stats["acc_2500km"]
    assert eval_main(["geolocalization", "--checkpoint", str(tmp_path / "missing.ckpt")]) == 2

    # resuming on data whose partition differs is refused
    other = GeolocalizationDataModule(root=str(root), geoscenes_train=160, geoscenes_val=40, geoscenes_image_size=48,
                                      image_size=32, batch_size=8, num_workers=0, max_per_cell=20, min_per_cell=3)
    task = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=other.partition)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"the checkpoint.s \d+ cells differ from the \d+ cells the data module built"):
        trainer.fit(task, datamodule=other, ckpt_path=str(ckpt_dir / "last.ckpt"), weights_only=True)


def test_ddp_validation_equals_single_process_on_an_odd_val_set(city_photos, tmp_path):
    """2 CPU processes (gloo), 29 val photos: every photo counted once (a padding DistributedSampler would count
    photo 0 twice), and the distance lists of unequal length gathered from both processes."""
    train, val = city_photos
    rows = list(csv.reader(open(val)))[1:30]
    odd = write_photos(val.parent, [(r[0], float(r[1]), float(r[2])) for r in rows], "odd.csv")
    dm = GeolocalizationDataModule(dataset="files", train_file=str(train), val_file=str(odd), max_per_cell=30,
                                   min_per_cell=4, image_size=16, batch_size=4, num_workers=0)
    task = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=dm.partition, predict="topk")
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    ref = pl.Trainer(devices=1, **quiet).validate(task, datamodule=dm, verbose=False)[0]
    got = pl.Trainer(devices=2, strategy="ddp_spawn", **quiet).validate(task, datamodule=dm, verbose=False)[0]
    assert set(got) == set(ref) and "val/median_km" in ref
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-6), key
