"""Tests of mobilevision.data.segmentation and the shapes masks: layouts, label mappings, input errors, transforms,
batches. Every dataset is a tiny fake tree in tmp_path; nothing is downloaded."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data import (
    IMAGENET_MEAN,
    SHAPES_CATEGORIES,
    SHAPES_SEGMENTATION_CLASSES,
    VOC_CLASSES,
    SegmentationDataModule,
    SegmentationDataset,
    ensure_shapes_dataset,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from mobilevision.data import shapes as shapes_mod
from mobilevision.masks import voc_colormap
from mobilevision.data.segmentation import pair_by_stem
from mobilevision.masks import read_index_mask

SHAPES = {"num_train": 24, "num_val": 6, "image_size": 96, "seed": 0}
RGB = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 200, 0)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return ensure_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data", **SHAPES)


def _image(path, h, w, value=None, exif_orientation=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.full((h, w, 3), 128, np.uint8) if value is None else value
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    Image.fromarray(arr).save(path, **kwargs)


def _mask(path, labels, palette=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(np.asarray(labels, np.uint8))
    if palette:
        img.putpalette(voc_colormap().tobytes())
    img.save(path)


def _labels(h, w):
    """Three vertical bands: 0 | 1 | 2."""
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 3: 2 * w // 3] = 1
    lab[:, 2 * w // 3:] = 2
    return lab


# --------------------------------------------------------------------------------------------
# shapes masks
# --------------------------------------------------------------------------------------------


def test_shapes_masks_agree_with_boxes(shapes):
    assert set(shapes) >= {"train_masks", "val_masks"}
    palette = voc_colormap().ravel().tolist()
    for split in ("train", "val"):
        coco = json.load(open(shapes[f"{split}_annotations"]))
        for image in coco["images"]:
            path = os.path.join(shapes[f"{split}_masks"], image["file_name"].replace(".jpg", ".png"))
            with Image.open(path) as m:
                assert m.mode == "P" and m.getpalette()[:len(palette)] == palette
            mask = read_index_mask(path)
            assert mask.shape == (image["height"], image["width"]) and mask.max() <= 5
            anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            for c, cat in enumerate(SHAPES_CATEGORIES, start=1):
                boxes = [a for a in anns if a["category_id"] == cat["id"]]
                pixels = mask == c
                assert pixels.sum() == sum(a["area"] for a in boxes), (path, cat["name"])
                union = np.zeros_like(pixels)
                for a in boxes:
                    x, y, w, h = a["bbox"]
                    union[y:y + h, x:x + w] = True
                    box = pixels[y:y + h, x:x + w]
                    assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any(), (path, a)
                assert not (pixels & ~union).any(), (path, cat["name"])
    # the images are what the (unchanged) renderer writes: mask writing consumes no random numbers
    img, _ = shapes_mod.render_shapes_image(shapes_mod._image_rng(0, "train", 3), SHAPES["image_size"])
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90, subsampling=0)
    assert open(os.path.join(shapes["train_images"], "000004.jpg"), "rb").read() == buf.getvalue()
    # a dataset without its masks is incomplete and regenerated
    os.remove(os.path.join(shapes["val_masks"], "000001.png"))
    ensure_shapes_dataset(shapes["root"], **SHAPES)
    assert os.path.isfile(os.path.join(shapes["val_masks"], "000001.png"))


def test_shapes_datamodule_batches(shapes):
    dm = SegmentationDataModule(shapes_root=shapes["root"], shapes_num_train=SHAPES["num_train"],
                                shapes_num_val=SHAPES["num_val"], shapes_image_size=SHAPES["image_size"],
                                crop_size=64, batch_size=4, num_workers=0)
    assert (dm.num_classes, dm.class_names, dm.image_size, dm.ignore_index) == (6, list(SHAPES_SEGMENTATION_CLASSES),
                                                                                64, 255)
    images, masks = next(iter(dm.train_dataloader()))
    assert pickle.loads(pickle.dumps(dm.train_dataset)).samples.names == dm.train_dataset.samples.names  # workers
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (4, 64, 64) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 96, 96) and len(targets) == 4  # eval_batch_size: batch_size for shapes
    t = targets[0]
    assert t["file_name"] == "000001.jpg" and t["input_size"] == t["orig_size"] == (96, 96)
    assert t["mask"].dtype == torch.int64 and t["mask"].shape == (96, 96)


# --------------------------------------------------------------------------------------------
# transforms and collate
# --------------------------------------------------------------------------------------------


def test_train_transform_keeps_image_and_mask_aligned():
    h, w = 90, 120
    lab = _labels(h, w)
    colors = np.array([RGB[0], RGB[1], RGB[2]], np.uint8)
    image = colors[lab]
    fill = np.array([round(m * 255) for m in IMAGENET_MEAN])
    transform = segmentation_train_transforms(96, 0.5, 2.0, photometric=False, to_tensor=False)
    padded = 0
    for _ in range(25):
        img, mask = transform(image, lab)
        assert img.shape == (96, 96, 3) and mask.shape == (96, 96)
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 255}
        pad = mask == 255
        padded += pad.any()
        assert (img[pad] == fill).all()  # padding: mean colour, ignored
        # pixels well inside a region (5x5 neighbourhood of one label) have that label's colour
        m = np.pad(mask.astype(int), 2, constant_values=-1)
        inner = np.ones_like(mask, bool)
        for dy in range(5):
            for dx in range(5):
                inner &= m[dy:dy + 96, dx:dx + 96] == mask
        inner &= ~pad
        assert inner.sum() > 1000
        nearest = np.abs(img[inner][:, None].astype(int) - colors[None].astype(int)).sum(-1).argmin(1)
        assert (nearest == mask[inner]).all()
    assert padded  # scales < 96/90 pad
    tensor_transform = segmentation_train_transforms(64)
    img, mask = tensor_transform(image, lab)
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and mask.shape == (64, 64)


def test_eval_collate_pads_and_keeps_original_masks(tmp_path):
    for name, (h, w) in {"a": (40, 60), "b": (50, 30)}.items():
        _image(str(tmp_path / "img" / f"{name}.png"), h, w)
        _mask(str(tmp_path / "msk" / f"{name}.png"), _labels(h, w))
    samples = pair_by_stem(str(tmp_path / "img"), str(tmp_path / "msk"), ["x", "y", "z"], "t")
    ds = SegmentationDataset(samples, segmentation_eval_transforms(20))
    images, targets = segmentation_collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 33, 30)  # shorter side -> 20: 20x30 and 33x20
    assert [t["input_size"] for t in targets] == [(20, 30), (33, 20)]
    assert [t["orig_size"] for t in targets] == [(40, 60), (50, 30)]
    assert [tuple(t["mask"].shape) for t in targets] == [(40, 60), (50, 30)]
    assert [t["file_name"] for t in targets] == ["a.png", "b.png"]
    assert (images[0, :, 20:] == 0).all() and (images[1, :, :, 20:] == 0).all()
    assert torch.equal(targets[1]["mask"], torch.from_numpy(_labels(50, 30).astype(np.int64)))


# --------------------------------------------------------------------------------------------
# folder layouts
# --------------------------------------------------------------------------------------------


def _plain(root, names=("a", "b"), val=("c",), size=(24, 36)):
    for split, stems in (("train", names), ("val", val)):
        for s in stems:
            _image(str(root / "images" / split / f"{s}.jpg"), *size)
            _mask(str(root / "masks" / split / f"{s}.png"), _labels(*size))


def _dm(root, **kwargs):
    return SegmentationDataModule(dataset="folder", root=str(root), crop_size=32, batch_size=2, num_workers=0,
                                  **kwargs)


def test_plain_layout_palette_masks_read_as_indices(tmp_path):
    _plain(tmp_path)
    _image(str(tmp_path / "images" / "val" / "sub" / "d.jpg"), 24, 36)
    _mask(str(tmp_path / "masks" / "val" / "sub" / "d.png"), _labels(24, 36))
    with pytest.raises(ValueError, match="class_names"):
        _dm(tmp_path).num_classes
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    dm = _dm(tmp_path)
    assert dm.class_names == ["sky", "road", "car"]
    dm.setup("fit")
    assert [dm.val_dataset[i][1]["file_name"] for i in range(2)] == ["c.jpg", "sub/d.jpg"]
    assert torch.equal(dm.val_dataset[1][1]["mask"], torch.from_numpy(_labels(24, 36).astype(np.int64)))
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.dtype == torch.int64
    # explicit folders + class_names
    dm = SegmentationDataModule(dataset="folder", train_images=str(tmp_path / "images" / "train"),
                                train_masks=str(tmp_path / "masks" / "train"),
                                val_images=str(tmp_path / "images" / "val"), val_masks=str(tmp_path / "masks" / "val"),
                                class_names=["a", "b", "c"], crop_size=32, num_workers=0)
    dm.setup("validate")
    assert dm.num_classes == 3 and len(dm.val_dataset) == 2


def test_cvat_layout_maps_colours(tmp_path):
    colours = {"background": (0, 0, 0), "road": (128, 64, 128), "car": (0, 0, 142)}
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n"
                                           + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in colours.items()))
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n")
    (sets / "val.txt").write_text("c\n")
    lab = _labels(20, 30)
    rgb = np.array(list(colours.values()), np.uint8)[lab]
    rgb[0, 0] = (224, 224, 192)  # VOC border colour -> ignored
    for s in "abc":
        _image(str(tmp_path / "JPEGImages" / f"{s}.jpg"), 20, 30)
        os.makedirs(tmp_path / "SegmentationClass", exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / f"{s}.png")
    dm = _dm(tmp_path)
    assert dm.class_names == ["background", "road", "car"]
    dm.setup("validate")
    expected = lab.astype(np.int64)
    expected[0, 0] = 255
    assert torch.equal(dm.val_dataset[0][1]["mask"], torch.from_numpy(expected))
    # an unknown colour: error naming the file and the colour
    bad = rgb.copy()
    bad[5, 5] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "SegmentationClass" / "b.png")
    with pytest.raises(ValueError, match=r"b\.png: colour\(s\) \(1, 2, 3\)"):
        _dm(tmp_path).setup("fit")
    # train.txt without val.txt: asks for val
    (sets / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        _dm(tmp_path).setup("validate")
    # only CVAT's "default" subset: split by file name, every image in exactly one split, a warning
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / "b.png")
    (sets / "train.txt").unlink()
    stems = [f"img{i:02d}" for i in range(30)]
    (sets / "default.txt").write_text("".join(f"{n}\n" for n in stems))
    for n in stems:
        _image(str(tmp_path / "JPEGImages" / f"{n}.jpg"), 20, 30)
        Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / f"{n}.png")
    dm = _dm(tmp_path)
    dm.setup("fit")
    train, val = set(dm.train_dataset.samples.names), set(dm.val_dataset.samples.names)
    assert val and not train & val and train | val == {f"{n}.jpg" for n in stems}


def test_roboflow_layout(tmp_path):
    for split, stems in (("train", ("x_jpg.rf.1", "y_jpg.rf.2")), ("valid", ("z_jpg.rf.3",))):
        (tmp_path / split).mkdir()
        (tmp_path / split / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, cat\n2, dog\n")
        for s in stems:
            _image(str(tmp_path / split / f"{s}.jpg"), 20, 30)
            _mask(str(tmp_path / split / f"{s}_mask.png"), _labels(20, 30), palette=False)
    dm = _dm(tmp_path)
    assert dm.class_names == ["background", "cat", "dog"]
    dm.setup("fit")
    assert len(dm.train_dataset) == 2 and len(dm.val_dataset) == 1
    image, target = dm.val_dataset[0]
    assert target["file_name"] == "z_jpg.rf.3.jpg"
    assert torch.equal(target["mask"], torch.from_numpy(_labels(20, 30).astype(np.int64)))


def test_bad_inputs_name_the_files(tmp_path, caplog):
    _plain(tmp_path, names=("a", "b", "c", "d", "e"))
    (tmp_path / "classes.txt").write_text("x\ny\nz\n")
    train_masks = tmp_path / "masks" / "train"
    os.remove(train_masks / "b.png")  # missing mask
    with pytest.raises(FileNotFoundError, match=r"b\.jpg: no mask .*b\.png not found"):
        _dm(tmp_path).setup("fit")
    _mask(str(train_masks / "c.png"), _labels(20, 36))  # size mismatch
    lab = _labels(24, 36)
    lab[3, 3] = 7
    _mask(str(train_masks / "d.png"), lab)  # label out of range
    # a phone photo: stored 36x24 with EXIF "rotate 90" (displayed 24x36); its mask was made from the stored pixels
    _image(str(tmp_path / "images" / "train" / "e.jpg"), 24, 36, exif_orientation=6)
    with pytest.raises(ValueError) as err:
        _dm(tmp_path).setup("fit")
    msg = str(err.value)
    assert "4 of 5 samples are unusable" in msg and "skip_bad=True" in msg
    assert "c.png: mask is 36x20 but its image" in msg and "c.jpg is 36x24" in msg
    assert "d.png: mask value(s) [7] are not classes 0..2" in msg
    assert "e.png: mask is 36x24 but its image" in msg and "e.jpg is 24x36" in msg
    assert msg.count("before its EXIF orientation (6") == 1  # only e.jpg gets the hint
    caplog.set_level(logging.WARNING)
    dm = _dm(tmp_path, skip_bad=True)
    dm.setup("fit")
    assert len(dm.train_dataset) == 1 and dm.train_dataset.stats == {"images": 1, "skipped": 4}
    assert any("skipped 4 of 5 samples" in r.getMessage() and "b.jpg" in r.getMessage() for r in caplog.records)


def test_unknown_layout_and_missing_classes(tmp_path):
    with pytest.raises(ValueError, match="class_names="):
        _dm(tmp_path).num_classes
    with pytest.raises(FileNotFoundError, match="unknown layout.*CVAT.*Roboflow"):
        _dm(tmp_path, class_names=["a", "b"]).setup("fit")
    with pytest.raises(ValueError, match="needs root"):
        SegmentationDataModule(dataset="voc")
    with pytest.raises(ValueError, match="num_classes=3"):
        _dm(tmp_path, class_names=["a", "b"], num_classes=3).num_classes


# --------------------------------------------------------------------------------------------
# benchmarks (fake trees)
# --------------------------------------------------------------------------------------------


def _voc(root, train=("2007_000032", "2007_000039"), val=("2007_000033",)):
    voc = root / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("".join(s + "\n" for s in train))
    (sets / "val.txt").write_text("".join(s + "\n" for s in val))
    lab = _labels(20, 30)
    lab[0] = 255  # object border
    lab[5, 5] = 15
    for s in (*train, *val):
        _image(str(voc / "JPEGImages" / f"{s}.jpg"), 20, 30)
        _mask(str(voc / "SegmentationClass" / f"{s}.png"), lab)
    return voc, lab


def test_voc(tmp_path):
    voc, lab = _voc(tmp_path)
    dm = SegmentationDataModule(dataset="voc", root=str(tmp_path), voc_sbd=False, crop_size=16, num_workers=0)
    assert dm.class_names == list(VOC_CLASSES) and dm.eval_batch_size == 1
    dm.setup("fit")
    assert len(dm.train_dataset) == 2
    _, target = dm.val_dataset[0]
    assert target["file_name"] == "2007_000033.jpg"
    assert torch.equal(target["mask"], torch.from_numpy(lab.astype(np.int64)))  # palette indices, 255 kept
    with pytest.raises(FileNotFoundError, match="voc_sbd=False"):
        SegmentationDataModule(dataset="voc", root=str(tmp_path), num_workers=0).setup("fit")


def test_voc_sbd_and_trainaug(tmp_path):
    from scipy.io import savemat

    voc, _ = _voc(tmp_path / "a")
    sbd = tmp_path / "a" / "SBD"
    (sbd / "cls").mkdir(parents=True)
    seg = _labels(20, 30)
    for s in ("2007_000032", "2007_000033", "2008_000001"):  # a VOC train image, the VOC val image, a new one
        _image(str(sbd / "img" / f"{s}.jpg"), 20, 30)
        savemat(sbd / "cls" / f"{s}.mat", {"GTcls": {"Segmentation": seg, "CategoriesPresent": np.array([1, 2])}})
    (sbd / "train.txt").write_text("2007_000032\n2007_000033\n")
    (sbd / "val.txt").write_text("2008_000001\n")
    dm = SegmentationDataModule(dataset="voc", root=str(tmp_path / "a"), crop_size=16, num_workers=0)
    dm.setup("fit")
    files = [os.path.basename(p) for p in dm.train_dataset.samples.masks]
    assert files == ["2007_000032.png", "2007_000039.png", "2008_000001.mat"]  # VOC val left out, VOC masks first
    assert np.array_equal(dm.train_dataset.load(2)[1], seg)
    # the SegmentationClassAug / trainaug.txt layout
    voc, _ = _voc(tmp_path / "b")
    (voc / "ImageSets" / "Segmentation" / "trainaug.txt").write_text("2007_000032\n2007_000039\n2008_000002\n")
    _image(str(voc / "JPEGImages" / "2008_000002.jpg"), 20, 30)
    for s in ("2007_000032", "2007_000039", "2008_000002"):
        _mask(str(voc / "SegmentationClassAug" / f"{s}.png"), seg, palette=False)
    dm = SegmentationDataModule(dataset="voc", root=str(tmp_path / "b" / "VOCdevkit"), crop_size=16, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_dataset) == 3 and "SegmentationClassAug" in dm.train_dataset.samples.masks[2]


def test_ade20k_label_mapping(tmp_path, caplog):
    base = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 2], [150, 1, 0]], np.uint8)
    for sub in ("training", "validation"):
        for k in (1, 2):
            name = f"ADE_{sub[:5]}_0000000{k}"
            _image(str(base / "images" / sub / f"{name}.jpg"), 2, 3)
            _mask(str(base / "annotations" / sub / f"{name}.png"), raw, palette=False)
    dm = SegmentationDataModule(dataset="ade20k", root=str(tmp_path), crop_size=16, num_workers=0)
    assert dm.num_classes == 150 and dm.class_names[:3] == ["wall", "building", "sky"]
    dm.setup("fit")
    _, target = dm.val_dataset[0]
    assert target["mask"].tolist() == [[255, 0, 1], [149, 0, 255]] and target["file_name"] == "ADE_valid_00000001.jpg"
    # benchmark masks are checked when loaded
    _mask(str(base / "annotations" / "validation" / "ADE_valid_00000002.png"), [[0, 1, 200], [151, 1, 0]],
          palette=False)
    with pytest.raises(ValueError, match=r"ADE_valid_00000002\.png: mask value\(s\) \[151, 200\]"):
        dm.val_dataset[1]
    dm = SegmentationDataModule(dataset="ade20k", root=str(tmp_path), crop_size=16, num_workers=0, skip_bad=True)
    dm.setup("validate")
    caplog.set_level(logging.WARNING)
    assert (dm.val_dataset[1][1]["mask"] == 255).all()
    assert any("ADE_valid_00000002.png" in r.getMessage() for r in caplog.records)


def test_cityscapes_label_mapping(tmp_path):
    raw = np.array([[0, 7, 8], [26, 33, 4]], np.uint8)
    for split in ("train", "val"):
        for k in (19, 20):
            stem = f"aachen_000000_0000{k}"
            _image(str(tmp_path / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"), 2, 3)
            _mask(str(tmp_path / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png"), raw, palette=False)
    dm = SegmentationDataModule(dataset="cityscapes", root=str(tmp_path), crop_size=16, num_workers=0)
    assert dm.num_classes == 19 and dm.class_names[0] == "road" and dm.class_names[-1] == "bicycle"
    dm.setup("fit")
    assert len(dm.train_dataset) == 2
    _, target = dm.val_dataset[0]
    assert target["file_name"] == "aachen/aachen_000000_000019_leftImg8bit.png"
    assert target["mask"].tolist() == [[255, 0, 1], [13, 18, 255]]


def test_predict_folder(tmp_path):
    _image(str(tmp_path / "p" / "one.jpg"), 20, 30)
    _image(str(tmp_path / "p" / "two.png"), 10, 12)
    dm = SegmentationDataModule(dataset="folder", root=str(tmp_path), class_names=["a", "b"], num_workers=0,
                                predict_images=str(tmp_path / "p"))
    dm.setup("predict")
    images, targets = next(iter(dm.predict_dataloader()))
    assert images.shape == (1, 3, 20, 30) and targets[0]["mask"] is None and targets[0]["file_name"] == "one.jpg"


def test_binary_masks_of_0_and_255(tmp_path):
    """Foreground masks saved as 0 / 255 would train on class 0 alone (255 is the ignore index): an error that says
    so, and binary_masks=True reads them as classes 0 and 1."""
    fg = np.zeros((24, 36), np.uint8)
    fg[5:15, 10:30] = 255
    for split, stems in (("train", "ab"), ("val", "c")):
        for s in stems:
            _image(str(tmp_path / "images" / split / f"{s}.jpg"), 24, 36)
            os.makedirs(tmp_path / "masks" / split, exist_ok=True)
            Image.fromarray(fg, mode="L").save(tmp_path / "masks" / split / f"{s}.png")
    with pytest.raises(ValueError, match=r"only the values 0 and 255.*binary_masks=True"):
        _dm(tmp_path, class_names=["background", "object"]).setup("fit")
    dm = _dm(tmp_path, class_names=["background", "object"], binary_masks=True)
    dm.setup("validate")
    assert torch.equal(dm.val_dataset[0][1]["mask"], torch.from_numpy((fg > 0).astype(np.int64)))
