"""What is exported is what was validated: ``Predictor``'s preprocessing (checkpoint and ONNX file alike) against
each task's validation pipeline as its data module builds it, image by image, on photos much larger, smaller and
of other aspects than the network input (a large photo is shrunk by area averaging everywhere, never aliased)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data import ClassificationDataModule, CocoDetectionDataModule, IMAGENET_MEAN, IMAGENET_STD
from mobilevision.data.image_io import load_rgb_image
from mobilevision.masks import save_index_mask
from mobilevision.data.segmentation import SegmentationDataModule
from mobilevision.deploy import Predictor
from mobilevision.tasks import ClassificationTask, DetectionTask, SegmentationTask

SIZES = [(600, 900), (37, 83), (120, 64)]  # (h, w): a photo far above the input, one below, a portrait


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """Fine stripes plus noise: linear and area downscaling give visibly different results."""
    rng = np.random.default_rng(seed)
    stripes = (np.indices((h, w)).sum(0) % 3 == 0)[..., None] * 180
    return np.clip(stripes + rng.normal(40, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def unnormalize(x: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.float() * std + mean).numpy()


def checkpoint(task, dm, path: Path) -> Path:
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams)}, path)
    return path


def assert_same(predictor: Predictor, files: list[Path], dataset) -> None:
    for i, f in enumerate(files):
        ours = predictor.preprocess(load_rgb_image(f))
        theirs = unnormalize(dataset[i][0])
        assert ours.shape == theirs.shape, f.name
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f.name)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[np.ndarray]:
    return [photo(h, w, k) for k, (h, w) in enumerate(SIZES)]


def test_classification(photos, tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "x").mkdir(parents=True)
        (tmp_path / split / "y").mkdir(parents=True)
        Image.fromarray(photos[1]).save(tmp_path / split / "y" / "y.png")
        for k, img in enumerate(photos):
            Image.fromarray(img).save(tmp_path / split / "x" / f"{k}.png")
    dm = ClassificationDataModule(dataset="folder", root=str(tmp_path), image_size=48, resize_ratio=0.8,
                                  num_workers=0, augment="none")
    dm.setup("validate")
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=2, image_size=48,
                              class_names=["x", "y"])
    predictor = Predictor(checkpoint(task, dm, tmp_path / "c.ckpt"))
    assert predictor.meta["preprocess"]["resize_ratio"] == 0.8  # the data's, from the checkpoint
    assert_same(predictor, sorted((tmp_path / "val" / "x").iterdir()), dm.val_dataset)


def test_detection(photos, tmp_path):
    (tmp_path / "images").mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "thing"}]}
    for k, img in enumerate(photos):
        Image.fromarray(img).save(tmp_path / "images" / f"{k}.png")
        h, w = img.shape[:2]
        coco["images"].append({"id": k + 1, "file_name": f"{k}.png", "width": w, "height": h})
        coco["annotations"].append({"id": k + 1, "image_id": k + 1, "category_id": 3, "bbox": [2, 2, 20, 20],
                                    "area": 400, "iscrowd": 0})
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    paths = {"train_images": str(tmp_path / "images"), "train_annotations": str(tmp_path / "ann.json")}
    dm = CocoDetectionDataModule(**paths, val_images=paths["train_images"], val_annotations=paths["train_annotations"],
                                 image_size=64, num_workers=0)
    dm.setup("validate")
    task = DetectionTask(backbone="mobilenet_v2", width=0.25, num_classes=1, image_size=64, category_names=["thing"],
                         label_to_category_id=[3])
    predictor = Predictor(checkpoint(task, dm, tmp_path / "d.ckpt"))
    assert_same(predictor, [tmp_path / "images" / f"{k}.png" for k in range(len(photos))], dm.val_dataset)


@pytest.mark.parametrize("eval_size", [None, 40])
def test_segmentation(photos, tmp_path, eval_size):
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    for split in ("train", "val"):
        for k, img in enumerate(photos):
            (tmp_path / "images" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "images" / split / f"{k}.png")
            save_index_mask((img[..., 0] > 128).astype(np.uint8), tmp_path / "masks" / split / f"{k}.png")
    dm = SegmentationDataModule(dataset="folder", root=str(tmp_path), crop_size=48, eval_size=eval_size,
                                num_workers=0)
    dm.setup("validate")
    task = SegmentationTask(backbone="mobilenet_v2", width=0.35, num_classes=2, image_size=48, head="lraspp",
                            class_names=["background", "thing"])
    predictor = Predictor(checkpoint(task, dm, tmp_path / "s.ckpt"))
    files = [tmp_path / "images" / "val" / f"{k}.png" for k in range(len(photos))]
    assert_same(predictor, files, dm.val_dataset)
    if eval_size:  # the large photo was shrunk (shorter side 40), by area averaging, not sampled
        small = predictor.preprocess(photos[0])
        assert small.shape == (3, 40, 60)
        assert abs(float(small.mean()) - photos[0].mean() / 255) < 0.01
