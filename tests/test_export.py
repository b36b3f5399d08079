"""ONNX export: ONNX Runtime agrees with the torch networks (every backbone family, batch 1 and 3), NMS inside the
graph agrees with torchvision's class-wise NMS, int8 has its Q/DQ structure and stays close to float32, the
metadata makes the file self-describing, and ``mobilevision export`` runs end to end."""

from __future__ import annotations


import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from mobilevision.cli.export import main as export_main
from mobilevision.data import CocoDetectionDataModule, ensure_shapes_dataset
from mobilevision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mobilevision.deploy import OnnxModel, append_nms, export_onnx, read_metadata
from mobilevision.deploy.quantize import quantize_int8
from mobilevision.tasks import ClassificationTask, DetectionTask

FAMILIES = {"mobilenet_v1": 0.25, "mobilenet_v2": 0.35, "mobileone_s0": None, "efficientnet_b0": 0.25}
SIZE = 64


def normalized(x: torch.Tensor) -> torch.Tensor:
    """The reference normalization, written out: the exported graph has it inside."""
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def randomize(module: torch.nn.Module, std: float = 0.3) -> None:
    """Spread the outputs of a freshly initialized head, so that scores are not all tied."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def images(batch: int, seed: int) -> torch.Tensor:
    """Smooth random images (noise at 8x8, upsampled): features that vary over the image, unlike white noise."""
    x = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False).clamp(0, 1)


def calibrate_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm statistics of a few image batches instead of the fresh (0, 1): activations of a sensible scale,
    so that random-weight outputs are spread out rather than saturated or all alike."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(normalized(images(8, 100 + seed)))
    model.eval()


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_classification_logits_match_onnxruntime(backbone, tmp_path):
    torch.manual_seed(0)
    task = ClassificationTask(backbone=backbone, width=FAMILIES[backbone], num_classes=7, image_size=SIZE,
                              class_names=list("abcdefg")).eval()
    path = export_onnx(task, tmp_path / "m.onnx")
    model = OnnxModel(path)
    for batch in (1, 3):  # one dynamic-batch file
        x = images(batch, batch)
        with torch.no_grad():  # the training network itself (MobileOne unfolded), in eval mode
            ref = task.model(normalized(x)).numpy()
        got = model(x.numpy())["logits"]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    if backbone == "mobileone_s0":  # exported folded: no train-time branches left
        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert "BatchNormalization" not in ops
        assert sum(n.op_type == "Conv" for n in onnx.load(path).graph.node) < sum(
            isinstance(m, torch.nn.Conv2d) for m in task.model.modules())


def assert_same_detections(got: dict, ref: dict) -> None:
    """One-to-one: every reference detection has its own counterpart with the same label, a score within 1e-4 and
    a box within 1e-3 px (matched greedily, so that tied scores may come in any order)."""
    def arrays(d: dict):
        return (np.asarray(d[k], dtype=np.float64).reshape(len(d["scores"]), -1) for k in ("boxes", "scores", "labels"))

    (gb, gs, gl), (rb, rs, rl) = arrays(got), arrays(ref)
    assert len(gs) == len(rs) and len(rs) > 0
    free = np.ones(len(gs), bool)
    for box, score, label in zip(rb, rs[:, 0], rl[:, 0]):
        ok = free & (gl[:, 0] == label) & (np.abs(gs[:, 0] - score) <= 1e-4) & (np.abs(gb - box).max(1) <= 1e-3)
        assert ok.any(), f"no counterpart for label {label} score {score:.5f} box {box}"
        free[np.flatnonzero(ok)[0]] = False


def detection_task(backbone: str) -> DetectionTask:
    torch.manual_seed(0)
    task = DetectionTask(backbone=backbone, width=FAMILIES[backbone], num_classes=3, image_size=SIZE,
                         score_thresh=0.05, detections_per_img=20, category_names=["cat", "dog", "eel"],
                         label_to_category_id=[2, 5, 9])
    randomize(task.model.head, 0.1)
    calibrate_batchnorm(task.model)
    return task.eval()


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_detections_match_onnxruntime(backbone, tmp_path):
    """Decoded boxes + scores from ONNX Runtime, selected by the shared postprocess, against the SSDLite's own
    torch postprocess (decode, clip, per-class top-k, torchvision NMS) on the training network."""
    from mobilevision.detection.postprocess import select_detections

    task = detection_task(backbone)
    model = OnnxModel(export_onnx(task, tmp_path / "det.onnx"))
    assert model.output_names == ["boxes", "scores"]
    for batch in (1, 3):
        x = images(batch, 10 + batch)
        with torch.no_grad():
            ref = task.model.predict(normalized(x))
        out = model(x.numpy())
        got = select_detections(torch.from_numpy(out["boxes"]), torch.from_numpy(out["scores"]), 0.05, 300, 0.5, 20)
        for g, r in zip(got, ref):
            assert_same_detections(g, r)


def test_nms_inside_the_graph(tmp_path):
    """``--nms``: fixed-size [B, D, 6] rows + counts, the same detections as torchvision's batched_nms over the
    per-class top-k candidates (computed here from the decoded outputs, independently of the package).
    (``export_onnx(nms=True)`` is this ``append_nms`` on the plain export; the export command test runs it.)"""
    task = detection_task("mobilenet_v2")
    plain_path = export_onnx(task, tmp_path / "plain.onnx")
    plain = OnnxModel(plain_path)
    model = append_nms(onnx.load(plain_path), 0.05, 0.5, 300, 20)
    onnx.helper.set_model_props(model, {"mobilevision": json.dumps(dict(plain.meta, nms=True))})
    onnx.save(model, tmp_path / "nms.onnx")
    nms = OnnxModel(tmp_path / "nms.onnx")
    assert nms.output_names == ["detections", "num_detections"]
    x = images(3, 7).numpy()
    decoded, out = plain(x), nms(x)
    assert out["detections"].shape == (3, 20, 6) and out["num_detections"].shape == (3,)
    for b in range(3):
        boxes, scores = torch.from_numpy(decoded["boxes"][b]), torch.from_numpy(decoded["scores"][b])
        k = min(300, scores.shape[0])
        top, anchor = scores.topk(k, dim=0)  # per class
        label = torch.arange(scores.shape[1]).expand(k, -1)
        keep = top > 0.05
        cand_boxes, cand_scores, cand_labels = boxes[anchor[keep]], top[keep], label[keep]
        kept = batched_nms(cand_boxes, cand_scores, cand_labels, 0.5)[:20]
        n = int(out["num_detections"][b])
        rows = out["detections"][b]
        assert n == len(kept)
        assert not rows[n:].any()  # padding rows are zero
        assert_same_detections({"boxes": rows[:n, :4], "scores": rows[:n, 4], "labels": rows[:n, 5]},
                               {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]})


def test_int8_structure_and_agreement(tmp_path):
    torch.manual_seed(0)
    task = ClassificationTask(backbone="mobilenet_v2", width=0.5, num_classes=10, image_size=SIZE).eval()
    calibration = [images(8, s).numpy() for s in range(4)]
    fp32 = OnnxModel(export_onnx(task, tmp_path / "fp32.onnx"))
    path = export_onnx(task, tmp_path / "int8.onnx", quantize=lambda m: quantize_int8(m, calibration))
    int8 = OnnxModel(path)
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {i.name: i for i in graph.initializer}
    conv_inputs = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv_inputs]
    assert weight_dq, "conv weights are not quantized"
    per_channel = [onnx.numpy_helper.to_array(inits[n.input[1]]).size > 1 for n in weight_dq if n.input[1] in inits]
    assert per_channel and all(per_channel)
    assert int8.meta["int8"] and not fp32.meta["int8"]
    x = images(16, 99).numpy()
    a, b = fp32(x)["logits"], int8(x)["logits"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.95, cos
    assert not np.array_equal(a, b)


def test_metadata_makes_the_file_self_describing(tmp_path):
    task = detection_task("mobilenet_v1")
    path = export_onnx(task, tmp_path / "det.onnx", batch=2)
    meta = read_metadata(path)
    assert meta["task"] == "detection" and meta["image_size"] == [SIZE, SIZE]
    assert meta["class_names"] == ["cat", "dog", "eel"] and meta["label_to_category_id"] == [2, 5, 9]
    assert meta["batch"] == 2
    dims = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, SIZE, SIZE]
    with pytest.raises(ValueError, match="no mobilevision metadata"):
        plain = onnx.load(path)
        del plain.metadata_props[:]
        onnx.save(plain, tmp_path / "plain.onnx")
        read_metadata(tmp_path / "plain.onnx")


def test_geolocalization_metadata_carries_the_cells(tmp_path):
    from mobilevision.geo.cells import build_partition
    from mobilevision.tasks import GeolocalizationTask

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 400), rng.uniform(-180, 180, 400)
    partition, _ = build_partition(lat, lon, max_per_cell=100, min_per_cell=5)
    task = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, image_size=SIZE, partition=partition).eval()
    meta = read_metadata(export_onnx(task, tmp_path / "geo.onnx"))
    assert meta["cell_tokens"] == partition.tokens
    np.testing.assert_allclose(meta["cell_locations"], partition.locations(task.hparams.cell_location))


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory):
    """A DetectionTask checkpoint as training writes it (with its data module's settings) on tiny shapes."""
    root = tmp_path_factory.mktemp("shapes")
    paths = ensure_shapes_dataset(root / "data", num_train=6, num_val=4, image_size=64, seed=3)
    data_args = dict(train_images=str(paths["train_images"]), train_annotations=str(paths["train_annotations"]),
                     val_images=str(paths["val_images"]), val_annotations=str(paths["val_annotations"]),
                     image_size=SIZE, batch_size=4, num_workers=0)
    dm = CocoDetectionDataModule(**data_args)
    task = DetectionTask(backbone="mobilenet_v2", width=0.35, num_classes=dm.num_classes, image_size=SIZE,
                         label_to_category_id=list(dm.label_to_category_id),
                         category_names=list(dm.category_names))
    randomize(task.model.head, 0.1)
    ckpt = root / "task.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "datamodule_hyper_parameters": data_args}, ckpt)
    return ckpt, paths


def test_export_command_int8_reports_both_models(shapes_checkpoint, tmp_path, capsys):
    ckpt, paths = shapes_checkpoint
    out = tmp_path / "det.onnx"
    rc = export_main(["--checkpoint", str(ckpt), "--output", str(out), "--nms", "--int8", "--calibration",
                      str(paths["train_images"]), "--calibration-size", "6", "--batch-size", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.is_file() and (tmp_path / "det_fp32.onnx").is_file()
    assert "onnxruntime (CPUExecutionProvider) vs torch" in text and "float32" in text and "int8" in text and "AP50" in text
    assert read_metadata(out)["int8"] and not read_metadata(tmp_path / "det_fp32.onnx")["int8"]
    # int8 network, float decoding / softmax / NMS: they never read a dequantized int8 tensor
    graph = onnx.load(out).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in ("Softmax", "Exp", "NonMaxSuppression"):
            assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear"
                       for i in node.input), node.name
    assert not any(n.op_type == "QuantizeLinear" for n in graph.node if n.name.startswith("decode/"))
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 10
    assert OnnxModel(out)(np.zeros((2, 3, SIZE, SIZE), np.float32))["detections"].shape == (2, 100, 6)


def test_export_command_errors(shapes_checkpoint, tmp_path, capsys):
    ckpt, _ = shapes_checkpoint
    assert export_main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--output", str(tmp_path / "a.onnx")]) == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "a.onnx"), "--int8"]) == 2
    assert "--calibration" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert export_main(["--checkpoint", str(bad), "--output", str(tmp_path / "a.onnx")]) == 2
    assert "bad.ckpt" in capsys.readouterr().err
