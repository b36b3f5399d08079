"""The formats phones load: ExecuTorch ``.pte`` (XNNPACK) read back by ``executorch.runtime`` against the torch
networks (detection: in the predict tests), int8 (PT2E, XNNPACK quantizer) on a trained model against the accuracy targets, Core ML
``.mlpackage`` files checked with coremltools against their spec, the export command for each format, and the
calibration sample."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from mobilevision.cli.export import main as export_main
from mobilevision.data import ClassificationDataModule
from mobilevision.data.sources import sample_images
from mobilevision.deploy import Predictor
from mobilevision.deploy.formats import FORMATS, export_model, format_of, read_exported_metadata
from mobilevision.tasks import ClassificationTask, DetectionTask, GeolocalizationTask, SegmentationTask

from test_export import calibrate_batchnorm, images, normalized, randomize, SIZE

pytestmark = pytest.mark.usefixtures("one_thread")


def run_pte(path, x: torch.Tensor) -> list[torch.Tensor]:
    """The program's forward method through ExecuTorch's own runtime (not through mobilevision)."""
    from executorch.runtime import Runtime

    return list(Runtime.get().load_program(path).load_method("forward").execute([x]))


def tiny_task(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "classification":
        task = ClassificationTask(backbone="efficientnet_b0", width=0.25, num_classes=5, image_size=SIZE,
                                  class_names=list("abcde"))
    elif kind == "detection":
        task = DetectionTask(backbone="mobilenet_v1", width=0.25, num_classes=3, image_size=SIZE, score_thresh=0.05,
                             category_names=["cat", "dog", "eel"], label_to_category_id=[2, 5, 9])
        randomize(task.model.head, 0.1)
    elif kind == "segmentation":
        task = SegmentationTask(backbone="mobileone_s0", num_classes=4, image_size=SIZE,
                                class_names=["bg", "a", "b", "c"])
    else:
        from mobilevision.geo.cells import build_partition

        rng = np.random.default_rng(0)
        partition, _ = build_partition(rng.uniform(-60, 60, 400), rng.uniform(-180, 180, 400), max_per_cell=100,
                                       min_per_cell=5)
        task = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, image_size=SIZE, partition=partition)
    calibrate_batchnorm(task.model)
    return task.eval()


@pytest.mark.parametrize("kind", ["classification", "segmentation", "geolocalization"])
def test_executorch_float32_matches_the_torch_network(kind, tmp_path):
    """The tasks at a static batch of 2 (EfficientNet, MobileOne and MobileNetV1 between them; detection with
    MobileNetV2 in the predict tests, through `predict` on images and a video): ExecuTorch's XNNPACK kernels give
    the training network's outputs (MobileOne folded on export, unfolded here)."""
    task = tiny_task(kind)
    if kind == "classification":  # as `channels_last: true` training leaves the weights
        task.model.to(memory_format=torch.channels_last)
    path = export_model(task, tmp_path / "m.pte", "executorch", batch=2)
    x = images(2, 7)
    outs = run_pte(path, x)
    with torch.no_grad():
        raw = task.model(normalized(x))
    assert len(outs) == 1 and tuple(outs[0].shape) == tuple(raw.shape)
    assert np.abs(outs[0].numpy() - raw.numpy()).max() <= 1e-4 * max(1.0, raw.abs().max().item())
    meta = read_exported_metadata(path)
    assert meta["task"] == kind and meta["format"] == "executorch" and meta["batch"] == 2 and not meta["int8"]
    if kind == "segmentation":  # a static input: the image fitted and padded to the training size
        assert meta["preprocess"] == {"resize": "longer_side_pad"} and "input_size" not in meta
    if kind == "geolocalization":
        assert meta["cell_tokens"] == task.partition.tokens


def test_executorch_rejects_a_dynamic_batch_and_names_bad_files(tmp_path):
    task = tiny_task("classification")
    with pytest.raises(ValueError, match="static batch"):
        export_model(task, tmp_path / "m.pte", "executorch", batch="dynamic")
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program")
    with pytest.raises(ValueError, match="bad.pte"):
        Predictor(bad)
    with pytest.raises(ValueError, match="no export format has the suffix '.tflite'"):
        format_of(tmp_path / "m.tflite")


def test_export_command_writes_a_static_segmentation_program(tmp_path, capsys):
    """A segmentation checkpoint validates at any image size but a ``.pte`` has a static input: the command's parity
    check feeds the file its own input size, and ``predict`` with the file gives a mask at each image's size."""
    task = tiny_task("segmentation")
    ckpt = tmp_path / "seg.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "seg.pte")]) == 0, capsys.readouterr()
    assert f"executorch (XNNPACK) vs torch on 3 random inputs: logits {SIZE}x{SIZE}" in capsys.readouterr().out
    image = (np.random.default_rng(0).random((37, 90, 3)) * 255).astype(np.uint8)
    result = Predictor(tmp_path / "seg.pte")([image])[0]
    assert result["mask"].shape == (37, 90) and set(np.unique(result["mask"])) <= {0, 1, 2, 3}


# -- Core ML -----------------------------------------------------------------------------------------------------
def coreml_spec(path):
    import coremltools as ct

    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


@pytest.mark.parametrize("kind", ["classification", "detection", "segmentation", "geolocalization"])
def test_coreml_package_has_the_spec_an_app_expects(kind, tmp_path):
    """Read back with coremltools (Core ML itself executes on Apple devices only): an ML Program with one RGB image
    input of the training size, the outputs the metadata names, the class names as classifier labels."""
    task = tiny_task(kind)
    if kind == "classification":  # as `channels_last: true` training leaves the weights
        task.model.to(memory_format=torch.channels_last)
    path = export_model(task, tmp_path / "m.mlpackage", "coreml")
    spec = coreml_spec(path)
    assert spec.WhichOneof("Type") == "mlProgram"
    (image,) = spec.description.input
    assert image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.height, image.type.imageType.width) == (SIZE, SIZE)
    assert image.type.imageType.colorSpace == 20  # RGB
    meta = json.loads(spec.description.metadata.userDefined["mobilevision"])
    assert meta["task"] == kind and meta["format"] == "coreml" and meta == read_exported_metadata(path)
    outputs = [o.name for o in spec.description.output]
    assert outputs == meta["outputs"]
    ops = [op.type for op in spec.mlProgram.functions["main"].block_specializations[
        spec.mlProgram.functions["main"].opset].operations]
    assert ops.count("conv") >= 10
    if kind == "classification":
        assert outputs == ["classLabel", "classLabel_probs"] and spec.description.predictedFeatureName == "classLabel"
        assert "softmax" in ops and ops[-1] == "classify"
        classify = spec.mlProgram.functions["main"].block_specializations[
            spec.mlProgram.functions["main"].opset].operations[-1]
        labels = [v.immediateValue.tensor.strings.values[0]
                  for v in classify.inputs["classes"].arguments[0].value.immediateValue.list.values]
        assert labels == list("abcde")
    elif kind == "detection":
        assert outputs == ["boxes", "scores"] and meta["class_names"] == ["cat", "dog", "eel"]
    elif kind == "geolocalization":
        assert outputs == ["probs"] and "softmax" in ops and len(meta["cell_locations"]) == len(task.partition.tokens)
    else:
        assert outputs == ["logits"] and meta["preprocess"] == {"resize": "longer_side_pad"}
    with pytest.raises(ValueError, match="execute on Apple devices only"):
        Predictor(path)


def test_coreml_detector_as_vision_pipeline(tmp_path):
    """``--nms`` for Core ML: the pipeline Vision runs as an object detector: the ML Program's float32 scores and
    centre-size boxes as fractions of the image (computed here by the same head under torch and checked against
    torchvision's box conversion of the decoder's boxes), then Core ML's class-wise NMS model with the class names
    as labels, the checkpoint's thresholds as defaults and optional threshold inputs."""
    from torchvision.ops import box_convert

    from mobilevision.deploy.coreml import _CoreMLHead, check_coreml
    from mobilevision.deploy.graph import deployable

    task = tiny_task("detection")
    path = export_model(task, tmp_path / "det.mlpackage", "coreml", nms=True)
    spec = coreml_spec(path)
    assert spec.WhichOneof("Type") == "pipeline"
    assert [m.WhichOneof("Type") for m in spec.pipeline.models] == ["mlProgram", "nonMaximumSuppression"]
    nms = spec.pipeline.models[1].nonMaximumSuppression
    assert list(nms.stringClassLabels.vector) == ["cat", "dog", "eel"] and nms.pickTop.perClass
    assert nms.iouThreshold == pytest.approx(task.model.nms_thresh)
    assert nms.confidenceThreshold == pytest.approx(task.model.score_thresh)
    assert [i.name for i in spec.description.input] == ["image", "iouThreshold", "confidenceThreshold"]
    assert [o.name for o in spec.description.output] == ["confidence", "coordinates"]
    raw = [o for o in spec.pipeline.models[0].description.output]
    assert [o.name for o in raw] == ["raw_confidence", "raw_coordinates"]
    assert all(o.type.multiArrayType.dataType == 65568 for o in raw)  # FLOAT32, as the NMS model takes
    summary = check_coreml(path)
    assert summary["outputs"] == {"confidence": [-1, 3], "coordinates": [-1, 4]}
    assert read_exported_metadata(path)["nms"] is True
    network, decoder = deployable(task)
    x = images(1, 3)
    with torch.no_grad():
        scores, coordinates = _CoreMLHead(network, decoder, None, vision=True)(x)
        boxes, want_scores = decoder(*network(x))
    want = box_convert(boxes[0], "xyxy", "cxcywh") / torch.tensor([SIZE, SIZE, SIZE, SIZE])
    torch.testing.assert_close(coordinates, want)
    torch.testing.assert_close(scores, want_scores[0])
    with pytest.raises(ValueError, match="one image"):
        export_model(task, tmp_path / "b2.mlpackage", "coreml", nms=True, batch=2)
    with pytest.raises(ValueError, match="nms is for detection"):
        export_model(tiny_task("classification"), tmp_path / "c.mlpackage", "coreml", nms=True)


# -- int8 on a trained model ---------------------------------------------------------------------------------------
PATTERNS = ("horizontal", "vertical", "diagonal", "checker")


def pattern(kind: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """Stripes or checks of a random period, phase and pair of colours, with noise: the class is the texture."""
    yy, xx = np.mgrid[:size, :size]
    period, phase = rng.uniform(5, 9), rng.uniform(0, 10)
    coord = {"horizontal": yy, "vertical": xx, "diagonal": (xx + yy) / 1.41}.get(kind)
    on = ((coord + phase) % period < period / 2) if coord is not None else \
        (((xx + phase) % period < period / 2) ^ ((yy + phase) % period < period / 2))
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = np.where(on[..., None], a, b) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """MobileNetV1 x0.25 trained (fit, 300 steps) on a four-texture folder; the checkpoint as training writes it."""
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("val", 50)):
        for name in PATTERNS:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pattern(name, rng)).save(root / split / name / f"{i}.png")
    dm = ClassificationDataModule(dataset="folder", root=str(root), image_size=32, batch_size=16, num_workers=0,
                                  augment="none")
    torch.manual_seed(0)
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=4, image_size=32,
                              class_names=sorted(PATTERNS), optimizer="adamw", lr=0.01, weight_decay=0.0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, max_steps=300,
                         num_sanity_val_steps=0, check_val_every_n_epoch=100)
    trainer.fit(task, dm)
    ckpt = root / "task.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, root


def top1(model_path, root) -> float:
    predictor = Predictor(model_path)
    right = total = 0
    for name in PATTERNS:
        files = sorted((root / "val" / name).iterdir())
        results = predictor([np.asarray(Image.open(f).convert("RGB")) for f in files])
        right += sum(r["name"] == name for r in results)
        total += len(files)
    return right / total


@pytest.mark.parametrize("fmt", ["executorch", "onnx"])
def test_int8_keeps_the_trained_accuracy(trained_classifier, fmt, tmp_path, capsys):
    """``export --int8`` for both formats with int8: the file is int8 (XNNPACK's quantized kernels / Q-DQ pairs),
    and its top-1 on the validation images, counted here against the folder labels, is within one point of the
    float32 file's (the target for classification); the command prints both."""
    ckpt, root = trained_classifier
    suffix = FORMATS[fmt].suffix
    out = tmp_path / f"m{suffix}"
    rc = export_main(["--checkpoint", str(ckpt), "--output", str(out), "--int8", "--calibration",
                      str(root / "train"), "--calibration-size", "64", "--batch-size", "16"])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0, text + captured.err
    fp32 = tmp_path / f"m_fp32{suffix}"
    assert read_exported_metadata(out)["int8"] and not read_exported_metadata(fp32)["int8"]
    assert "calibrating int8 on 64 images" in text and re.search(r"int8\s.*\d", text)
    acc_fp32, acc_int8 = top1(fp32, root), top1(out, root)
    assert acc_fp32 >= 0.8, ("the trained model should tell the textures apart", acc_fp32, acc_int8)
    assert abs(acc_int8 - acc_fp32) <= 0.01 + 1e-9, (acc_fp32, acc_int8)
    if fmt == "executorch":  # the int8 program really runs quantized XNNPACK kernels
        blob = out.read_bytes()
        assert len(blob) < 0.5 * fp32.stat().st_size
        x = torch.rand(1, 3, 32, 32)
        a, b = run_pte(out, x)[0], run_pte(fp32, x)[0]
        assert not torch.equal(a, b)


def test_quantization_aware_training_writes_ptq_and_qat_files(trained_classifier, tmp_path, capsys):
    """``export --int8 --qat-steps N``: the post-training file and the fine-tuned one side by side, both scored; the
    fine-tuning runs through the fake quantization (its distillation loss falls over the steps) and its file keeps
    the float32 top-1 within the classification target, counted here against the folder labels."""
    ckpt, root = trained_classifier
    out = tmp_path / "m.pte"
    rc = export_main(["--checkpoint", str(ckpt), "--output", str(out), "--int8", "--calibration", str(root / "train"),
                      "--calibration-size", "64", "--qat-steps", "60", "--qat-lr", "1e-4", "--batch-size", "16"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    ptq, fp32 = tmp_path / "m_ptq.pte", tmp_path / "m_fp32.pte"
    assert read_exported_metadata(out)["quantization"] == "qat"
    assert read_exported_metadata(ptq)["quantization"] == "ptq" and read_exported_metadata(ptq)["int8"]
    first, last = map(float, re.search(r"distillation loss ([\d.e-]+) \(first tenth of the steps\) -> ([\d.e-]+)",
                                       captured.out).groups())
    assert last < first, (first, last)
    assert re.search(r"int8 PTQ\s.*\d", captured.out) and re.search(r"int8 QAT\s.*\d", captured.out)
    acc_fp32, acc_qat = top1(fp32, root), top1(out, root)
    assert abs(acc_qat - acc_fp32) <= 0.01 + 1e-9, (acc_fp32, acc_qat)
    assert len(out.read_bytes()) < 0.5 * fp32.stat().st_size  # int8 weights
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "x.onnx"), "--int8", "--calibration",
                        str(root / "train"), "--qat-steps", "5"]) == 2
    assert "--qat-steps is available for ExecuTorch files" in capsys.readouterr().err
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "y.pte"), "--qat-steps", "5"]) == 2
    assert "add --int8 --calibration DIR" in capsys.readouterr().err


# -- the command, every format ----------------------------------------------------------------------------------
def test_export_command_every_format_and_fixed_batch(trained_classifier, tmp_path, capsys):
    ckpt, root = trained_classifier
    for name, batch in (("m.pte", "3"), ("m.mlpackage", "1"), ("m_b2.onnx", "2")):
        assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / name), "--batch", batch]) == 0
    text = capsys.readouterr().out
    assert "executorch (XNNPACK) vs torch" in text and "onnxruntime (CPUExecutionProvider) vs torch" in text
    assert "spec check passed" in text and "4 class labels" in text
    reference = Predictor(ckpt)
    imgs = [pattern(p, np.random.default_rng(k)) for k, p in enumerate(PATTERNS * 2)][:7]  # 7: padded batches
    want = np.stack([r["probs"] for r in reference(imgs)])
    for name in ("m.pte", "m_b2.onnx"):
        got = np.stack([r["probs"] for r in Predictor(tmp_path / name)(imgs)])
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "x.pte"), "--batch", "dynamic"]) == 2
    assert "static batch" in capsys.readouterr().err
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "x.mlpackage"), "--int8",
                        "--calibration", str(root / "train")]) == 2
    assert "--int8 is not available for coreml" in capsys.readouterr().err
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "x.onnx"), "--format",
                        "executorch"]) == 2
    assert "must end in .pte" in capsys.readouterr().err


# -- calibration sample -------------------------------------------------------------------------------------------
def test_calibration_sample_spreads_over_sub_folders_and_videos(tmp_path):
    import cv2

    for c in range(5):
        (tmp_path / "train" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(tmp_path / "train" / f"class{c}" / f"{i}.png")
    picked = [name for name, _ in sample_images(tmp_path / "train", 10, seed=0)]
    assert len(picked) == 10
    assert sorted(n.split("/")[0] for n in picked) == sorted([f"class{c}" for c in range(5)] * 2)
    assert picked == [name for name, _ in sample_images(tmp_path / "train", 10, seed=0)]
    assert picked != [name for name, _ in sample_images(tmp_path / "train", 10, seed=1)]
    # a video gives frames spread over its whole length, not its first frames
    video = tmp_path / "clips" / "v.mp4"
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 32))
    for k in range(40):
        writer.write(np.full((32, 32, 3), k, np.uint8))
    writer.release()
    frames = [name for name, _ in sample_images(tmp_path / "clips", 4)]
    assert frames == ["v.mp4#0", "v.mp4#10", "v.mp4#20", "v.mp4#30"]


# -- inference without the training stack -------------------------------------------------------------------------
def test_running_exported_files_loads_no_training_stack(tmp_path):
    """A fresh interpreter runs an ExecuTorch file and ONNX files of the other tasks through ``Predictor`` without
    importing Lightning, torchmetrics, pycocotools, albumentations or the data and task modules."""
    import subprocess
    import sys

    files = [export_model(tiny_task("classification"), tmp_path / "cls.pte", "executorch")]
    files += [export_model(tiny_task(kind), tmp_path / f"{kind}.onnx", "onnx")
              for kind in ("detection", "segmentation", "geolocalization")]
    script = (
        "import sys, numpy as np\n"
        "from mobilevision.deploy import Predictor\n"
        "image = np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)\n"
        "for path in sys.argv[1:]:\n"
        "    result = Predictor(path)([image])[0]\n"
        "    print(path.rsplit('/', 1)[-1], sorted(result))\n"
        "heavy = ('pytorch_lightning', 'lightning', 'lightning_fabric', 'torchmetrics', 'pycocotools',\n"
        "         'albumentations', 'mobilevision.data', 'mobilevision.tasks', 'mobilevision.evaluation')\n"
        "print('loaded:', [m for m in heavy if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "cls.pte ['label', 'name', 'probs', 'score', 'top5']" in lines
    assert "detection.onnx ['boxes', 'category_ids', 'labels', 'names', 'scores']" in lines
    assert "segmentation.onnx ['fractions', 'mask']" in lines
    assert "geolocalization.onnx ['cell', 'cell_token', 'latitude', 'longitude', 'prob']" in lines
    assert lines[-1] == "loaded: []"


def test_one_adapter_per_task():
    """Every task the checkpoints can hold has its adapter; a file of an unknown task is a clear error."""
    from mobilevision.deploy.adapters import ADAPTERS, adapter_for
    from mobilevision.deploy.graph import TASK_CLASSES

    assert set(ADAPTERS) == set(TASK_CLASSES)
    with pytest.raises(ValueError, match="unknown task 'pose' in the model's metadata; tasks: detection"):
        adapter_for({"task": "pose", "image_size": [8, 8]})
