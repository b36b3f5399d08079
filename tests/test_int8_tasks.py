"""int8 on trained tiny models beyond classification: ``export --int8`` to ExecuTorch of a detector and of a segmenter
trained here, scored against the ground truth by the project's model-free evaluations (pycocotools for detection, the
confusion-matrix mIoU for segmentation) through the files ``predict`` writes, within the accuracy targets of int8
(detection AP within 0.02, segmentation mIoU within 0.02 of float32). The ONNX int8 path is the same for every task
and is tested on a trained classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from PIL import Image

from mobilevision.cli.eval import main as eval_main
from mobilevision.cli.export import main as export_main
from mobilevision.cli.predict import main as predict_main
from mobilevision.data import CocoDetectionDataModule, SegmentationDataModule
from mobilevision.masks import save_index_mask
from mobilevision.tasks import DetectionTask, SegmentationTask

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = {1: (220, 40, 40), 2: (40, 200, 60)}
SIZE = 96


def blocks_split(root: Path, split: str, count: int, seed: int) -> tuple[Path, Path, Path]:
    """``count`` noisy images with one or two large red / green blocks: COCO boxes and index masks of the same
    blocks (category ids 1 and 2, mask value = category id, 0 background)."""
    rng = np.random.default_rng(seed)
    images, masks = root / split, root / f"{split}_masks"
    images.mkdir(parents=True)
    masks.mkdir()
    entries, annotations = [], []
    for i in range(count):
        img = rng.normal(110, 30, (SIZE, SIZE, 3))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            c = int(rng.integers(1, 3))
            w, h = (int(v) for v in rng.integers(24, 56, 2))
            x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
            img[y:y + h, x:x + w] = np.array(COLOURS[c]) + rng.normal(0, 15, (h, w, 3))
            mask[y:y + h, x:x + w] = c
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(images / f"{i:03d}.jpg", quality=95)
        save_index_mask(mask, masks / f"{i:03d}.png")
        entries.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": SIZE, "height": SIZE})
    coco = root / f"{split}.json"
    coco.write_text(json.dumps({"images": entries, "annotations": annotations,
                                "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    return images, coco, masks


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blocks")
    out = {}
    for split, count, seed in (("train", 48, 0), ("val", 16, 1)):
        out[f"{split}_images"], out[f"{split}_annotations"], out[f"{split}_masks"] = blocks_split(root, split,
                                                                                                  count, seed)
    return out


def fit(task, dm, steps: int, root: Path) -> Path:
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         check_val_every_n_epoch=1000, default_root_dir=root)
    trainer.fit(task, datamodule=dm)
    ckpt = root / "task.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def trained_detector(blocks, tmp_path_factory) -> Path:
    """SSDLite-MobileNetV2 x0.35 trained 200 steps on the blocks (AP about 0.1 on its validation images)."""
    pl.seed_everything(0)
    dm = CocoDetectionDataModule(str(blocks["train_images"]), str(blocks["train_annotations"]),
                                 str(blocks["val_images"]), str(blocks["val_annotations"]), image_size=SIZE,
                                 batch_size=8, num_workers=0, augment="flip")
    task = DetectionTask(backbone="mobilenet_v2", width=0.35, num_classes=dm.num_classes, image_size=SIZE,
                         optimizer="adamw", lr=0.01, weight_decay=0.0, label_to_category_id=dm.label_to_category_id,
                         category_names=dm.category_names)
    return fit(task, dm, 200, tmp_path_factory.mktemp("detector"))


@pytest.fixture(scope="module")
def trained_segmenter(blocks, tmp_path_factory) -> Path:
    """MobileNetV2 x0.35 + LR-ASPP trained 150 steps on the blocks' masks."""
    root = tmp_path_factory.mktemp("segmenter")
    data = root / "data"
    for split in ("train", "val"):
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "masks").mkdir(parents=True, exist_ok=True)
        (data / "images" / split).symlink_to(blocks[f"{split}_images"])
        (data / "masks" / split).symlink_to(blocks[f"{split}_masks"])
    pl.seed_everything(0)
    dm = SegmentationDataModule(dataset="folder", root=str(data), crop_size=SIZE, scale_min=1.0, scale_max=1.0,
                                batch_size=8, num_workers=0, class_names=["background", "red", "green"])
    task = SegmentationTask(backbone="mobilenet_v2", width=0.35, head="lraspp", num_classes=3, image_size=SIZE,
                            class_names=["background", "red", "green"], optimizer="adamw", lr=0.01,
                            weight_decay=0.0)
    return fit(task, dm, 150, root)


def float_and_int8_scores(ckpt: Path, blocks: dict, tmp_path: Path, capsys, predict_args: list[str],
                          eval_args, key: str) -> dict[str, float]:
    """``export --int8`` to ``.pte`` (the float32 file is written beside it), then for each file ``predict`` on the
    validation images and the model-free ``eval`` of what it wrote (``eval_args(prediction folder)``): ``key`` of
    the stats, by file."""
    out = tmp_path / "model.pte"
    rc = export_main(["--checkpoint", str(ckpt), "--output", str(out), "--int8", "--calibration",
                      str(blocks["train_images"]), "--calibration-size", "16"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    scores = {}
    for name, model in (("fp32", out.with_name("model_fp32.pte")), ("int8", out)):
        pred, stats = tmp_path / f"pred_{name}", tmp_path / f"{name}.json"
        assert predict_main(["--model", str(model), "--source", str(blocks["val_images"]), "--quiet",
                             "--output", str(pred), *predict_args]) == 0, capsys.readouterr().err
        assert eval_main([*eval_args(pred), "--json-out", str(stats)]) == 0
        scores[name] = json.loads(stats.read_text())[key]
    return scores


def test_detector_int8_keeps_its_ap(trained_detector, blocks, tmp_path, capsys):
    """The float32 and int8 files' detections on the validation images, written by ``predict`` (COCO results with
    the ground truth's image ids) and scored by pycocotools through ``eval coco --results``: APs within 0.02."""
    gt = str(blocks["val_annotations"])
    ap = float_and_int8_scores(trained_detector, blocks, tmp_path, capsys,
                               ["--annotations", gt, "--score-thresh", "0.01"],
                               lambda pred: ["coco", "--annotations", gt, "--results", str(pred / "predictions.json")],
                               "AP")
    assert ap["fp32"] > 0.05, ("vacuous: the tiny detector finds too little for AP to tell", ap)
    assert abs(ap["int8"] - ap["fp32"]) <= 0.02, ap


def test_segmenter_int8_keeps_its_miou(trained_segmenter, blocks, tmp_path, capsys):
    """The float32 and int8 files' masks on the validation images, written by ``predict`` and scored against the
    ground-truth masks by ``eval segmentation --predictions``: mIoUs within 0.02."""
    miou = float_and_int8_scores(trained_segmenter, blocks, tmp_path, capsys, [],
                                 lambda pred: ["segmentation", "--predictions", str(pred / "masks"), "--ground-truth",
                                               str(blocks["val_masks"]), "--num-classes", "3"],
                                 "miou")
    assert miou["fp32"] > 0.6, ("vacuous: the tiny segmenter separates too little for mIoU to tell", miou)
    assert abs(miou["int8"] - miou["fp32"]) <= 0.02, miou
