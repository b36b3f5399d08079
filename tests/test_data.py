"""Tests of mobilevision.data: shapes generator, CocoDetection input handling, transforms, data module."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from PIL import Image

from mobilevision.data import (
    SHAPES_CATEGORIES,
    CocoDetection,
    CocoDetectionDataModule,
    ImageDecodeError,
    ImageSizeMismatchError,
    ensure_shapes_dataset,
    detection_eval_transforms,
    render_shapes_image,
    detection_train_transforms,
)
from mobilevision.data import shapes as shapes_mod
from mobilevision.evaluation import scale_boxes

TINY = {"num_train": 16, "num_val": 8, "image_size": 96, "seed": 0}


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "data"
    return ensure_shapes_dataset(root, **TINY)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------------------------
# shapes generator
# --------------------------------------------------------------------------------------------


def test_generator_deterministic(tiny_shapes, tmp_path):
    again = ensure_shapes_dataset(tmp_path / "again", **TINY)
    for split in ("train", "val"):
        assert _read(tiny_shapes[f"{split}_annotations"]) == _read(again[f"{split}_annotations"])
        names = sorted(os.listdir(tiny_shapes[f"{split}_images"]))
        assert names == sorted(os.listdir(again[f"{split}_images"]))
        assert len(names) == TINY[f"num_{split}"]
        for n in names:
            a = np.asarray(Image.open(os.path.join(tiny_shapes[f"{split}_images"], n)))
            b = np.asarray(Image.open(os.path.join(again[f"{split}_images"], n)))
            assert np.array_equal(a, b)
    other = ensure_shapes_dataset(tmp_path / "other", **{**TINY, "seed": 1})
    assert _read(other["train_annotations"]) != _read(tiny_shapes["train_annotations"])


def test_generator_skips_complete_and_regenerates_on_new_params(tmp_path):
    root = tmp_path / "d"
    params = {"num_train": 4, "num_val": 2, "image_size": 64, "seed": 3}
    p = ensure_shapes_dataset(root, **params)
    mtime = os.path.getmtime(p["train_annotations"])
    ensure_shapes_dataset(root, **params)
    assert os.path.getmtime(p["train_annotations"]) == mtime  # skipped
    ensure_shapes_dataset(root, **{**params, "num_train": 5})
    assert len(json.load(open(p["train_annotations"]))["images"]) == 5
    assert json.load(open(p["manifest"]))["params"]["num_train"] == 5
    # An incomplete dataset (a file deleted) is regenerated.
    os.remove(os.path.join(p["train_images"], "000001.jpg"))
    ensure_shapes_dataset(root, **{**params, "num_train": 5})
    assert os.path.isfile(os.path.join(p["train_images"], "000001.jpg"))
    # A foreign, non-empty folder is never overwritten.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_shapes_dataset(foreign, **params)
    assert (foreign / "precious.txt").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp folders left


def test_single_object_box_is_tight():
    for seed in range(12):
        image, objects = render_shapes_image(seed, 96, num_objects=1, flat_background=True, noise=False)
        assert len(objects) == 1
        obj = objects[0]
        fg = np.any(image != image[0, 0], axis=-1)  # flat background: every other pixel is the object
        assert fg.sum() == obj.area == obj.mask.sum()
        ys, xs = np.nonzero(fg)
        assert obj.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_visible_mask_boxes_and_annotations_match_render(tiny_shapes):
    coco = json.load(open(tiny_shapes["train_annotations"]))
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for i, info in enumerate(coco["images"]):
        _, objects = render_shapes_image(shapes_mod._image_rng(TINY["seed"], "train", i), TINY["image_size"])
        anns = by_image.get(info["id"], [])
        assert [(o.category_id, list(o.bbox), o.area) for o in objects] == [
            (a["category_id"], a["bbox"], a["area"]) for a in anns
        ]
        full = np.zeros((96, 96), bool)
        for o in objects:
            ys, xs = np.nonzero(o.mask)
            assert o.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert not (full & o.mask).any()  # visible masks are disjoint
            full |= o.mask
            x, y, w, h = o.bbox
            assert min(w, h) >= 4 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96


def test_coco_json_loads_with_pycocotools(tiny_shapes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(tiny_shapes["val_annotations"])
        assert sorted(gt.getCatIds()) == [c["id"] for c in SHAPES_CATEGORIES]
        assert len(gt.getImgIds()) == TINY["num_val"] and len(gt.getAnnIds()) > 0
        ann = gt.loadAnns(gt.getAnnIds())[0]
        assert ann["iscrowd"] == 0 and len(ann["bbox"]) == 4 and ann["area"] > 0
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.loadAnns(gt.getAnnIds())
        ]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# CocoDetection
# --------------------------------------------------------------------------------------------


def _write_coco(tmp_path, images, annotations, categories=None, name="ann.json"):
    categories = categories or [{"id": 5, "name": "a"}, {"id": 2, "name": "b"}, {"id": 9, "name": "c"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


_IMAGE_IDS = itertools.count(1)


def _img(tmp_path, name, size=(40, 30), mode="RGB", color=(10, 20, 30), **save_kwargs):
    Image.new(mode, size, color).save(tmp_path / name, **save_kwargs)
    return {"id": next(_IMAGE_IDS), "file_name": name, "width": size[0], "height": size[1]}


def _ann(aid, image_id, cat, bbox, iscrowd=0):
    area = bbox[2] * bbox[3]
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": area, "iscrowd": iscrowd}


def test_label_mapping_round_trips_non_contiguous_ids(tiny_shapes):
    ds = CocoDetection(tiny_shapes["train_images"], tiny_shapes["train_annotations"])
    assert ds.label_to_category_id == [1, 3, 7, 11, 20]
    assert ds.category_names == ["circle", "square", "triangle", "star", "cross"]
    assert ds.num_classes == 5
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
        assert target["orig_size"] == (96, 96)
        anns = ds.coco.imgToAnns[target["image_id"]]
        assert [ds.label_to_category_id[int(label)] for label in target["labels"]] == [a["category_id"] for a in anns]
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        assert torch.equal(target["boxes"], expected.float())
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64


def test_crowd_ignored_and_image_without_annotations(tmp_path):
    a = _img(tmp_path, "a.png")
    b = _img(tmp_path, "b.png")
    ann = _write_coco(
        tmp_path,
        [a, b],
        [_ann(1, a["id"], 9, [1, 2, 10, 10]), _ann(2, a["id"], 2, [0, 0, 30, 20], iscrowd=1)],
    )
    ds = CocoDetection(tmp_path, ann)
    assert ds.label_to_category_id == [2, 5, 9]
    _, t = ds[0]
    assert t["labels"].tolist() == [2] and t["boxes"].tolist() == [[1, 2, 11, 12]]
    assert ds.stats["crowd_ignored"] == 1
    image, t = ds[1]
    assert image.shape == (30, 40, 3) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    # ... also through the training pipeline
    ds.transforms = detection_train_transforms(32, "ssd")
    x, t = ds[1]
    assert x.shape == (3, 32, 32) and t["boxes"].shape == (0, 4)


def test_missing_image_named_at_setup(tmp_path):
    a = _img(tmp_path, "a.png")
    ann = _write_coco(tmp_path, [a, {"id": 7, "file_name": "gone.jpg", "width": 4, "height": 4}], [])
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        CocoDetection(tmp_path, ann)


def test_corrupt_jpeg_named(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    (tmp_path / "bad2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = _img(tmp_path, "good.jpg", format="JPEG")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header intact
    truncated = {"id": 91, "file_name": "truncated.jpg", "width": 400, "height": 300}
    ann = _write_coco(
        tmp_path,
        [good, {"id": 90, "file_name": "bad.jpg", "width": 40, "height": 30},
         {"id": 92, "file_name": "bad2.png", "width": 40, "height": 30}, truncated],
        [],
    )
    # unreadable headers: one error at setup naming every such file
    with pytest.raises(ImageDecodeError, match=r"2 of 4 images cannot be read(.|\n)*bad\.jpg(.|\n)*bad2\.png"):
        CocoDetection(tmp_path, ann)
    # a file whose header reads but whose data is cut: named when it is decoded
    ds = CocoDetection(tmp_path, _write_coco(tmp_path, [good, truncated], [], name="t.json"))
    ds[0]
    with pytest.raises(OSError, match="truncated.jpg"):
        ds[1]


def test_boxes_clipped_and_degenerate_dropped_with_summary(tmp_path, caplog):
    a = _img(tmp_path, "a.png")  # 40 x 30
    ann = _write_coco(
        tmp_path,
        [a],
        [
            _ann(1, a["id"], 5, [-5, 20, 20, 20]),  # partly outside -> clipped
            _ann(2, a["id"], 5, [35, -3, 10, 10]),  # partly outside -> clipped
            _ann(3, a["id"], 2, [10, 10, 0, 5]),  # zero width -> dropped
            _ann(4, a["id"], 2, [50, 5, 10, 10]),  # fully outside -> clipped to zero area -> dropped
            _ann(5, a["id"], 9, [5, 5, 10, 10]),  # fine
        ],
    )
    with caplog.at_level(logging.WARNING, logger="mobilevision.data.coco_detection"):
        ds = CocoDetection(tmp_path, ann)
    warnings = [r for r in caplog.records if r.name == "mobilevision.data.coco_detection"]
    assert len(warnings) == 1
    assert "clipped 2" in warnings[0].getMessage() and "dropped 2" in warnings[0].getMessage()
    assert ds.stats["clipped"] == 2 and ds.stats["dropped_degenerate"] == 2
    _, t = ds[0]
    assert t["boxes"].tolist() == [[0, 20, 15, 30], [35, 0, 40, 7], [5, 5, 15, 15]]
    assert t["labels"].tolist() == [1, 1, 2]
    caplog.clear()
    ds[0]
    assert not caplog.records  # the summary is logged once, at setup


def test_unknown_category_named(tmp_path):
    a = _img(tmp_path, "a.png")
    ann = _write_coco(tmp_path, [a], [_ann(1, a["id"], 5, [1, 1, 5, 5]), _ann(42, a["id"], 77, [1, 1, 5, 5])])
    with pytest.raises(ValueError, match=r"annotation id 42 .*a\.png.*77"):
        CocoDetection(tmp_path, ann)


def test_annotation_for_unknown_image_named(tmp_path):
    a = _img(tmp_path, "a.png")
    ann = _write_coco(tmp_path, [a], [_ann(3, 12345, 5, [1, 1, 5, 5])])
    with pytest.raises(ValueError, match="annotation id 3 .*12345"):
        CocoDetection(tmp_path, ann)


def test_grayscale_rgba_palette_converted(tmp_path):
    imgs = [
        _img(tmp_path, "gray.png", mode="L", color=100),
        _img(tmp_path, "rgba.png", mode="RGBA", color=(1, 2, 3, 0)),
        _img(tmp_path, "pal.png", mode="P", color=3),
        _img(tmp_path, "gray.jpg", mode="L", color=50, format="JPEG"),
    ]
    ds = CocoDetection(tmp_path, _write_coco(tmp_path, imgs, []))
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (30, 40, 3) and image.dtype == np.uint8, ds.image_path(i)
    assert (ds[0][0] == 100).all() and (ds[1][0] == [1, 2, 3]).all()


def _exif_rotated_jpeg(path):
    """Raw 40x20 (w x h) image, left half red / right half blue, EXIF orientation 6 (rotate 90 CW)."""
    raw = np.zeros((20, 40, 3), np.uint8)
    raw[:, :20] = (255, 0, 0)
    raw[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(path, format="JPEG", quality=95, exif=exif)


def test_exif_orientation_applied(tmp_path):
    _exif_rotated_jpeg(tmp_path / "rot.jpg")
    # Displayed image is 20 wide, 40 high; annotations refer to it.
    info = {"id": 1, "file_name": "rot.jpg", "width": 20, "height": 40}
    ds = CocoDetection(tmp_path, _write_coco(tmp_path, [info], [_ann(1, 1, 5, [0, 0, 20, 20])]))
    image, t = ds[0]
    assert image.shape == (40, 20, 3) and t["orig_size"] == (40, 20)
    # Rotating 90 deg clockwise puts the raw left (red) half on top, the right (blue) half below.
    assert image[:15, :, 0].mean() > 200 and image[:15, :, 2].mean() < 50
    assert image[25:, :, 2].mean() > 200 and image[25:, :, 0].mean() < 50
    # A json with the raw (un-rotated) size is rejected with a clear message.
    bad = _write_coco(tmp_path, [{**info, "width": 40, "height": 20}], [], name="raw.json")
    with pytest.raises(ImageSizeMismatchError, match=r"rot\.jpg.*swapped"):
        CocoDetection(tmp_path, bad)[0]
    # Without width/height in the json the displayed size is read from the header.
    nosize = _write_coco(tmp_path, [{"id": 1, "file_name": "rot.jpg"}], [_ann(1, 1, 5, [0, 0, 30, 30])], name="n.json")
    ds = CocoDetection(tmp_path, nosize)
    assert ds[0][1]["boxes"].tolist() == [[0, 0, 20, 30]]  # clipped to the displayed 20 x 40


def test_cache_images(tiny_shapes):
    ds = CocoDetection(tiny_shapes["val_images"], tiny_shapes["val_annotations"], cache_images=True)
    ref = CocoDetection(tiny_shapes["val_images"], tiny_shapes["val_annotations"])
    assert np.array_equal(ds[3][0], ref[3][0])
    pickle.loads(pickle.dumps(ds))


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------


def _rect_image(rng):
    h, w = int(rng.integers(48, 160)), int(rng.integers(48, 160))
    image = np.zeros((h, w, 3), np.uint8)
    boxes, labels = [], []
    for label, channel in ((0, 0), (1, 1)):  # rectangle 0 is red, rectangle 1 green
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = int(rng.integers(x0 + 6, w + 1)), int(rng.integers(y0 + 6, h + 1))
        image[y0:y1, x0:x1, channel] = 255
        boxes.append([x0, y0, x1, y1])
        labels.append(label)
    return image, np.array(boxes, np.float32), np.array(labels)


@pytest.mark.parametrize("augment", ["none", "flip", "flips", "ssdlite", "ssd"])
def test_transforms_keep_boxes_tight(augment):
    torch.manual_seed(0)
    size = 64
    t = detection_train_transforms(size, augment, photometric=False, zoom_out_max=3.0, to_tensor=False)
    t = pickle.loads(pickle.dumps(t))
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(60):
        image, boxes, labels = _rect_image(rng)
        out, out_boxes, out_labels = t(image, boxes, labels)
        assert out.shape == (size, size, 3)
        for label in (0, 1):
            pix = out[..., label] > 190  # zoom-out fill (mean colour) stays below the threshold
            kept = out_labels == label
            if kept.sum() == 0:
                continue
            assert kept.sum() == 1
            ys, xs = np.nonzero(pix)
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            # The other rectangle may cover part of this one (green over red), so only the red
            # rectangle's box can be larger than its visible pixels; green is drawn last and always whole.
            err = out_boxes[kept][0] - tight
            if label == 1:
                assert np.abs(err).max() <= 2.0, (augment, out_boxes[kept], tight)
            else:
                assert err[0] <= 2 and err[1] <= 2 and err[2] >= -2 and err[3] >= -2
            seen += 1
    assert seen > 60


def test_transform_output_format_and_eval():
    image = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    boxes = np.array([[8, 5, 40, 45]], np.float32)
    x, b, labels = detection_eval_transforms(32)(image, boxes, np.array([2]))
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert np.allclose(b, [[8 * 32 / 80, 5 * 32 / 50, 40 * 32 / 80, 45 * 32 / 50]]) and labels.tolist() == [2]
    assert abs(float(x.mean())) < 1.5  # normalized
    back = scale_boxes(torch.from_numpy(b), (32, 32), (50, 80))
    assert torch.allclose(back, torch.from_numpy(boxes), atol=1e-4)
    x, b, labels = detection_train_transforms(32, "ssd")(image, boxes, np.array([2]))
    assert x.shape == (3, 32, 32) and b.dtype == np.float32 and labels.dtype == np.int64
    with pytest.raises(ValueError, match="augment"):
        detection_train_transforms(32, "mosaic")


def test_augmentation_reseeded_per_torch_seed():
    image = np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8)
    boxes, labels = np.array([[10, 10, 30, 40]], np.float32), np.array([0])
    t = detection_train_transforms(32, "ssd")

    def run(seed):
        torch.manual_seed(seed)
        return [t(image, boxes, labels)[1].tolist() for _ in range(8)]

    assert run(0) == run(0)
    assert run(0) != run(1)


# --------------------------------------------------------------------------------------------
# data module
# --------------------------------------------------------------------------------------------


def test_datamodule_shapes(tiny_shapes, tmp_path):
    dm = CocoDetectionDataModule(
        image_size=64,
        batch_size=4,
        num_workers=0,
        cache_images=True,
        shapes_root=tiny_shapes["root"],
        shapes_num_train=TINY["num_train"],
        shapes_num_val=TINY["num_val"],
        shapes_image_size=TINY["image_size"],
        shapes_seed=TINY["seed"],
    )
    assert dm.num_classes == 5 and dm.label_to_category_id == [1, 3, 7, 11, 20]  # before setup
    dm.prepare_data()
    dm.setup("fit")
    assert dm.category_names == ["circle", "square", "triangle", "star", "cross"]
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32 and len(targets) == 4
    for t in targets:
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4 and t["labels"].dtype == torch.int64
        assert len(t["boxes"]) == len(t["labels"]) and t["orig_size"] == (96, 96)
        if len(t["boxes"]):
            assert t["boxes"].min() >= 0 and t["boxes"].max() <= 64
            assert (t["boxes"][:, 2:] > t["boxes"][:, :2]).all() and 0 <= t["labels"].min() and t["labels"].max() < 5
    n = 0
    for images, targets in dm.val_dataloader():
        assert images.shape[1:] == (3, 64, 64)
        for t in targets:
            anns = dm.val_coco.imgToAnns[t["image_id"]]
            back = scale_boxes(t["boxes"], (64, 64), t["orig_size"])
            expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
            assert torch.allclose(back, expected.float(), atol=1e-3)
            n += 1
    assert n == TINY["num_val"]
    pickle.loads(pickle.dumps(dm))  # picklable for spawn-based workers / DDP
    # predict: an image folder
    folder = tmp_path / "pred"
    folder.mkdir()
    Image.new("RGB", (50, 30)).save(folder / "x.png")
    dm2 = CocoDetectionDataModule(
        image_size=64, batch_size=2, num_workers=0, predict_images=str(folder), shapes_root=tiny_shapes["root"],
        shapes_num_train=16, shapes_num_val=8, shapes_image_size=96,
    )
    dm2.setup("predict")
    images, targets = next(iter(dm2.predict_dataloader()))
    assert images.shape == (1, 3, 64, 64) and targets[0]["file_name"] == "x.png" and targets[0]["orig_size"] == (30, 50)


def test_datamodule_workers_and_custom_paths(tiny_shapes):
    dm = CocoDetectionDataModule(
        train_images=tiny_shapes["train_images"],
        train_annotations=tiny_shapes["train_annotations"],
        val_images=tiny_shapes["val_images"],
        val_annotations=tiny_shapes["val_annotations"],
        image_size=48,
        batch_size=8,
        num_workers=2,
        augment="flip",
    )
    assert dm.num_classes == 5  # read from the json before setup
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(b[0].shape == (8, 3, 48, 48) for b in batches)
    with pytest.raises(ValueError, match="all of"):
        CocoDetectionDataModule(train_images="x")


def test_detection_prediction_folder_recurses_and_leaves_hidden_files_out(tmp_path):
    """The detection data module's predict folder is walked like every other folder of the project: recursively,
    sorted, hidden files (a macOS ``._x.jpg``) and folders left out."""
    from mobilevision.data import ImageFolderDataset, detection_eval_transforms

    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    for name, size in (("b.jpg", (30, 20)), ("sub/a.png", (20, 30)), ("sub/deep/c.heic", (24, 24)),
                       (".git/x.jpg", (8, 8))):
        Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(tmp_path / name)
    (tmp_path / "._b.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "notes.txt").write_text("x")
    ds = ImageFolderDataset(tmp_path, detection_eval_transforms(32))
    assert ds.files == ["b.jpg", os.path.join("sub", "a.png"), os.path.join("sub", "deep", "c.heic")]
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 32, 32) and target["file_name"] == ds.files[i]
    assert ds[1][1]["orig_size"] == (30, 20)
