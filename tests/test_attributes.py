"""The attributes task: CSV and CelebA layouts (bad rows named), mean AP against scikit-learn, training on the
embedded data from the command line, evaluation of the checkpoint and of predict's CSV, export and prediction in
every format, and distillation from a wider attributes model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from mobilevision.data import GLYPH_ATTRIBUTES, AttributesDataModule, read_attribute_csv, read_celeba
from mobilevision.errors import UserError
from mobilevision.evaluation.attributes import attribute_stats

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / n)


# -- layouts ---------------------------------------------------------------------------------------------------
def test_csv_layout_reads_unknowns_and_pandas_floats(tmp_path):
    _images(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "train.csv").write_text("file,smiling,glasses\nimg/a.jpg,1,0\nimg/b.jpg,,1.0\nimg/c.jpg,0.0,\n")
    s = read_attribute_csv(tmp_path / "train.csv")
    assert s.names == ["smiling", "glasses"]
    assert s.labels.tolist() == [[1, 0], [-1, 1], [0, -1]]
    assert s.files[0] == str(tmp_path / "img" / "a.jpg")
    # a validation file read with the training names, in another column order
    (tmp_path / "val.csv").write_text("glasses,file,smiling\n1,img/a.jpg,0\n")
    assert read_attribute_csv(tmp_path / "val.csv", names=s.names).labels.tolist() == [[0, 1]]


@pytest.mark.parametrize("text,message", [
    ("file,a\nx.jpg,2\n", r"line 2, column 'a': '2' is not 1, 0 or empty"),
    ("file,a\nx.jpg,1\nx.jpg,0\n", r"line 3: x.jpg is listed again \(first on line 2\)"),
    ("file,a,b\nx.jpg,1\n", r"line 2: 2 columns, the header has 3"),
    ("name,a\nx.jpg,1\n", r"no file column"),
    ("file,a,a\nx.jpg,1,0\n", r"named twice: a"),
    ("file,a\nx.jpg,yes\n", r"'yes' is not 1, 0 or empty"),
])
def test_bad_csv_rows_are_named(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        read_attribute_csv(path)
    assert str(path) in str(info.value)


def test_csv_data_module_names_missing_images_and_columns(tmp_path):
    _images(tmp_path, ["a.jpg"])
    (tmp_path / "train.csv").write_text("file,x,y\na.jpg,1,0\nmissing.jpg,0,1\n")
    (tmp_path / "val.csv").write_text("file,x\na.jpg,1\n")
    dm = AttributesDataModule(dataset="csv", train_csv=str(tmp_path / "train.csv"),
                              val_csv=str(tmp_path / "val.csv"), image_size=16, num_workers=0)
    assert dm.attribute_names == ["x", "y"]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        dm.setup("fit")
    with pytest.raises(UserError, match=r"val.csv: no column for the attribute\(s\) y"):
        dm.setup("validate")


def _celeba(root: Path, values: list[list[int]], parts: list[int]) -> None:
    names = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    _images(root / "img_align_celeba", names)
    lines = [str(len(values)), "5_o_Clock_Shadow Arched_Eyebrows Smiling"]
    lines += [f"{n} " + " ".join(f"{v:2d}" for v in row) for n, row in zip(names, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))


def test_celeba_layout(tmp_path):
    values = [[1, -1, 1], [-1, -1, 1], [1, 1, -1], [-1, 1, -1], [1, 1, 1], [-1, -1, -1]]
    _celeba(tmp_path, values, [0, 0, 0, 1, 1, 2])
    train, val, test = (read_celeba(tmp_path, p) for p in (0, 1, 2))
    assert train.names == ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling"]
    assert train.labels.tolist() == [[1, 0, 1], [0, 0, 1], [1, 1, 0]]
    assert [Path(f).name for f in val.files] == ["000004.jpg", "000005.jpg"] and len(test.files) == 1
    dm = AttributesDataModule(dataset="celeba", root=str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    assert dm.num_attributes == 3
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 16, 16) and labels.dtype == torch.float32 and set(labels.unique().tolist()) <= {0, 1}
    values[2][1] = 2
    _celeba(tmp_path, values, [0, 0, 0, 1, 1, 2])
    with pytest.raises(UserError, match=r"line 5, attribute 'Arched_Eyebrows': '2' is not -1 or 1"):
        read_celeba(tmp_path, 0)


# -- metrics ---------------------------------------------------------------------------------------------------
def test_mean_ap_equals_scikit_learn_with_unknown_labels():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(300, 4, generator=g)
    labels = (torch.rand(300, 4, generator=g) < scores * 0.8).float()  # informative scores
    labels[::7, 2] = -1
    stats = attribute_stats(scores, labels, ["a", "b", "c", "d"])
    ref = []
    for j, name in enumerate("abcd"):
        known = labels[:, j] >= 0
        ap = average_precision_score(labels[known, j].numpy(), scores[known, j].numpy())
        assert stats["per_attribute"][name]["ap"] == pytest.approx(ap, abs=1e-6)
        ref.append(ap)
    assert stats["mean_ap"] == pytest.approx(np.mean(ref), abs=1e-6)
    assert stats["per_attribute"]["c"]["unknown"] == len(range(0, 300, 7))


def test_thresholds_by_hand():
    scores = torch.tensor([[0.9], [0.8], [0.3], [0.2], [0.1]])
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0]])
    s = attribute_stats(scores, labels, ["x"])["per_attribute"]["x"]
    # >= 0.5: 0.9 (right), 0.8 (wrong), 0.3 (wrong): 3/5; best: >= 0.85 or >= 0.25 give 4/5, the lowest cut wins
    assert s["acc_at_0.5"] == pytest.approx(0.6)
    assert s["acc_at_threshold"] == pytest.approx(0.8) and s["threshold"] == pytest.approx(0.85)
    fixed = attribute_stats(scores, labels, ["x"], thresholds=[0.25])["per_attribute"]["x"]
    assert fixed["acc_at_threshold"] == pytest.approx(0.8)


# -- the task end to end on the embedded data -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``mobilevision train --task attributes`` on a small copy of the embedded data."""
    from mobilevision.cli.train import main

    root = tmp_path_factory.mktemp("attributes")
    data = root / "glyph_attributes"
    cli = main(["--task", "attributes", "--backbone", "mobilenet_v1@0.25",
                "--data.init_args.root", str(data), "--data.init_args.glyph_attributes_train", "160",
                "--data.init_args.glyph_attributes_val", "24", "--data.init_args.glyph_attributes_image_size", "48",
                "--data.init_args.image_size", "48", "--data.init_args.batch_size", "8",
                # 80 steps: BatchNorm's running statistics forget their initial values (0.9^80), so the scores
                # differ from image to image
                "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "1",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / "run")])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    return {"root": root, "data": data, "ckpt": ckpt, "val_map": float(cli.trainer.callback_metrics["val/map"])}


def test_embedded_data_is_the_markings_drawn(trained):
    rows = list(csv.DictReader(open(trained["data"] / "train.csv")))
    assert list(rows[0]) == ["file", *GLYPH_ATTRIBUTES] and len(rows) == 160
    labels = np.array([[int(r[a]) for a in GLYPH_ATTRIBUTES] for r in rows])
    assert not (labels[:, 0] & labels[:, 1]).any() and not (labels[:, 2] & labels[:, 3]).any()  # one marking, one tail
    assert all(0 < labels[:, j].mean() < 1 for j in range(6))


def test_eval_checkpoint_and_predictions_csv_agree_with_scikit_learn(trained, tmp_path):
    """``eval attributes --checkpoint`` gives the training run's val/map; ``predict`` writes probabilities whose
    mean AP (scikit-learn, on the CSVs read here) equals both ``eval attributes --predictions`` and the
    checkpoint's evaluation."""
    from mobilevision.cli.eval import main as eval_main
    from mobilevision.cli.predict import main as predict_main

    out = tmp_path / "ckpt.json"
    assert eval_main(["attributes", "--checkpoint", str(trained["ckpt"]), "--json-out", str(out),
                      "--ap-png", str(tmp_path / "ap.png")]) == 0
    from_ckpt = json.loads(out.read_text())
    assert from_ckpt["mean_ap"] == pytest.approx(trained["val_map"], abs=1e-6)
    assert (tmp_path / "ap.png").stat().st_size > 10_000

    assert predict_main(["--model", str(trained["ckpt"]), "--source", str(trained["data"] / "images" / "val"),
                         "--output", str(tmp_path / "pred"), "--quiet"]) == 0
    pred = {r["file"]: r for r in csv.DictReader(open(tmp_path / "pred" / "predictions.csv"))}
    gt = list(csv.DictReader(open(trained["data"] / "val.csv")))
    aps = []
    for a in GLYPH_ATTRIBUTES:
        y = [int(r[a]) for r in gt]
        s = [float(pred[Path(r["file"]).name][a]) for r in gt]
        aps.append(average_precision_score(y, s))
    assert from_ckpt["mean_ap"] == pytest.approx(np.mean(aps), abs=1e-5)
    out2 = tmp_path / "files.json"
    assert eval_main(["attributes", "--predictions", str(tmp_path / "pred" / "predictions.csv"), "--ground-truth",
                      str(trained["data"] / "val.csv"), "--thresholds", str(out), "--json-out", str(out2)]) == 0
    from_files = json.loads(out2.read_text())
    assert from_files["mean_ap"] == pytest.approx(np.mean(aps), abs=1e-5)
    assert from_files["mean_acc_at_threshold"] == pytest.approx(from_ckpt["mean_acc_at_threshold"], abs=1e-6)


def test_exported_attributes_model_predicts_as_the_checkpoint(trained, tmp_path):
    """The ONNX file's probabilities equal the checkpoint's (the .pte file of the same graph was checked by hand; the
    export formats share the graph and the adapter)."""
    from mobilevision.deploy import Predictor, load_any_task
    from mobilevision.deploy.formats import export_model

    task, ckpt = load_any_task(trained["ckpt"])
    path = export_model(task, tmp_path / "attr.onnx", "onnx", ckpt=ckpt)
    image = np.asarray(Image.open(sorted((trained["data"] / "images" / "val").glob("*.jpg"))[0]).convert("RGB"))
    got, ref = Predictor(path)([image])[0], Predictor(trained["ckpt"])([image])[0]
    assert got["probs"] == pytest.approx(ref["probs"], abs=1e-4)
    assert Predictor(path).meta["class_names"] == list(GLYPH_ATTRIBUTES)


def test_int8_attributes_file_keeps_the_checkpoints_mean_ap(trained, tmp_path):
    """ONNX int8 (static QDQ) calibrated on training images: scored on the validation split by the model-free path
    (Predictor -> AttributeMetrics), its mean AP stays within 0.05 of the float checkpoint's."""
    from mobilevision.deploy import Predictor, load_any_task
    from mobilevision.deploy.evaluate import datamodule_of, evaluate_predictor
    from mobilevision.deploy.formats import export_model

    task, ckpt = load_any_task(trained["ckpt"])
    files = sorted((trained["data"] / "images" / "train").glob("*.jpg"))[:32]
    batch = np.stack([np.asarray(Image.open(f).convert("RGB").resize((48, 48)), np.float32) / 255.0 for f in files])
    path = export_model(task, tmp_path / "attr.int8.onnx", "onnx", ckpt=ckpt,
                        calibration=[batch.transpose(0, 3, 1, 2)])
    dm = datamodule_of(task, ckpt, batch_size=8)
    int8 = evaluate_predictor(Predictor(path), dm)
    ref = evaluate_predictor(Predictor(trained["ckpt"]), dm)
    assert Predictor(path).meta["int8"] and abs(int8["mean_ap"] - ref["mean_ap"]) < 0.05


def test_coreml_attributes_file_checks_against_its_spec(trained, tmp_path):
    pytest.importorskip("coremltools")
    from mobilevision.deploy import load_any_task
    from mobilevision.deploy.coreml import check_coreml
    from mobilevision.deploy.formats import export_model

    task, ckpt = load_any_task(trained["ckpt"])
    path = export_model(task, tmp_path / "attr.mlpackage", "coreml", ckpt=ckpt)
    assert check_coreml(path)["outputs"]["probs"][-1] == len(GLYPH_ATTRIBUTES)


def test_attributes_student_distilled_from_a_checkpoint(trained, tmp_path):
    """A student trained with the trained model as its teacher: the soft loss is logged and the student's
    checkpoint holds no teacher."""
    from mobilevision.cli.train import main

    cli = main(["--task", "attributes", "--backbone", "mobilenet_v1@0.25",
                "--data.init_args.root", str(trained["data"]), "--data.init_args.glyph_attributes_train", "160",
                "--data.init_args.glyph_attributes_val", "24", "--data.init_args.glyph_attributes_image_size", "48",
                "--data.init_args.image_size", "40", "--data.init_args.batch_size", "16",
                "--model.init_args.teacher", str(trained["ckpt"]), "--trainer.max_epochs", "1",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert "train/loss_soft" in cli.trainer.callback_metrics
    assert cli.model.teacher.image_size == 48  # the teacher's own resolution
    saved = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=True)
    assert not any(k.startswith("teacher") for k in saved["state_dict"])
