"""Tests of the classification data: image folders, benchmark layouts, glyphs generator, transforms, data module."""

from __future__ import annotations

import io

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data import (
    GLYPH_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassificationDataModule,
    ClassificationDataset,
    ImageDecodeError,
    classification_eval_transforms,
    classification_train_transforms,
    ensure_glyphs_dataset,
    load_benchmark_split,
    render_glyph_image,
    scan_image_folder,
)

TINY_GLYPHS = {"glyphs_train_per_class": 2, "glyphs_val_per_class": 1, "glyphs_image_size": 64, "glyphs_seed": 0}


def _save(path, size=(40, 30), color=(200, 30, 30), mode="RGB", fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "RGB":
        img = Image.new("RGB", size, color)
    elif mode == "L":
        img = Image.new("L", size, color[0])
    elif mode == "RGBA":
        img = Image.new("RGBA", size, (*color, 128))
    elif mode == "P":
        img = Image.new("RGB", size, color).convert("P")
    else:
        raise ValueError(mode)
    img.save(path, format=fmt)
    return path


def _make_folder(root, train=("cat", "dog", "eel"), val=("cat", "dog", "eel"), n_train=3, n_val=2):
    for split, classes, n in (("train", train, n_train), ("val", val, n_val)):
        for c in classes:
            for i in range(n):
                _save(os.path.join(root, split, c, f"{i}.jpg"), color=(40 * i, 80, 120))
    return str(root)


def _dm(**kwargs):
    kwargs = {"image_size": 32, "batch_size": 4, "num_workers": 0, **kwargs}
    return ClassificationDataModule(**kwargs)


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------


def test_folder_datamodule_batches(tmp_path):
    root = _make_folder(tmp_path)
    dm = _dm(dataset="folder", root=root)
    assert dm.num_classes == 3 and dm.class_names == ["cat", "dog", "eel"]  # before setup
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert labels.tolist() == [0, 0, 1, 1]
    assert len(dm.val_dataset) == 6 and len(dm.train_dataset) == 9
    assert next(iter(dm.test_dataloader()))[0].shape == (4, 3, 32, 32)
    assert len(dm.hparams) and dm.hparams["dataset"] == "folder"


def test_val_uses_train_class_mapping(tmp_path):
    root = _make_folder(tmp_path, train=("a", "b", "c"), val=("b", "c"))
    dm = _dm(dataset="folder", root=root)
    dm.setup("validate")  # val alone still uses the training folders' order
    ds = dm.val_dataset
    for path, label in zip(ds.files, ds.labels):
        assert label == {"b": 1, "c": 2}[os.path.basename(os.path.dirname(path))]
    assert ds.class_names == ["a", "b", "c"]


def test_val_class_missing_from_train(tmp_path):
    root = _make_folder(tmp_path, train=("a", "b"), val=("a", "b", "zebra"))
    dm = _dm(dataset="folder", root=root)
    with pytest.raises(ValueError, match="'zebra'"):
        dm.setup("fit")


def test_empty_class_folder(tmp_path):
    _make_folder(tmp_path)
    os.makedirs(tmp_path / "train" / "fox")
    (tmp_path / "train" / "fox" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"fox.*contains no images"):
        scan_image_folder(tmp_path / "train")


def test_corrupt_image_names_file(tmp_path):
    root = _make_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    # a header that cannot be read: an error when the dataset is built (setup), not in a worker mid-epoch
    with pytest.raises(ImageDecodeError, match=r"train: 1 of 10 images cannot be read:\n.*bad.jpg"):
        ClassificationDataset.from_folder(root + "/train")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        ClassificationDataset.from_folder(root + "/train", cache_images=True)
    # a good header over damaged data: named when decoded
    good = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(good, "PNG")
    bad.unlink()
    (tmp_path / "train" / "dog" / "cut.png").write_bytes(good.getvalue()[:60])
    ds = ClassificationDataset.from_folder(root + "/train")
    with pytest.raises(ImageDecodeError, match="cut.png"):
        ds[ds.files.index(str(tmp_path / "train" / "dog" / "cut.png"))]


def test_non_image_files_skipped_and_counted(tmp_path, caplog):
    root = _make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("x")
    (tmp_path / "train" / "dog" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "train" / "dog" / "._0.jpg").write_bytes(b"\0\5\26\7 macOS resource fork")  # hidden: left out
    (tmp_path / "train" / "README.txt").write_text("outside the class folders")
    with caplog.at_level(logging.WARNING, logger="mobilevision.data.classification"):
        ds = ClassificationDataset.from_folder(root + "/train")
    assert len(ds) == 9
    assert ds.stats["skipped_non_image"] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 non-image" in warnings[0].getMessage()


def test_grayscale_rgba_palette(tmp_path):
    for mode in ("L", "RGBA", "P"):
        _save(str(tmp_path / "train" / "x" / f"{mode}.png"), size=(20, 10), mode=mode)
    ds = ClassificationDataset.from_folder(tmp_path / "train")
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (10, 20, 3) and image.dtype == np.uint8 and label == 0


# --------------------------------------------------------------------------------------------
# benchmark layouts
# --------------------------------------------------------------------------------------------

DOG_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02086240-Shih-Tzu"]


def _make_dogs(root, fmt):
    train, test = [], []
    for c, folder in enumerate(DOG_FOLDERS):
        for i in range(3):
            rel = f"{folder}/{folder.split('-')[0]}_{i}.jpg"
            _save(os.path.join(root, "Images", *rel.split("/")))
            (train if i < 2 else test).append((rel, c + 1))
    os.makedirs(os.path.join(root, "lists"))
    test = test[1:]  # the test list lacks the first breed: its labels must still follow the train mapping
    for name, items in (("train_list", train), ("test_list", test)):
        if fmt == "txt":
            with open(os.path.join(root, "lists", name + ".txt"), "w") as f:
                f.writelines(f"{rel} {label}\n" for rel, label in items)
        else:
            import scipy.io

            scipy.io.savemat(
                os.path.join(root, "lists", name + ".mat"),
                {
                    "file_list": np.array([r for r, _ in items], dtype=object).reshape(-1, 1),
                    "labels": np.array([lab for _, lab in items], dtype=np.float64).reshape(-1, 1),
                },
            )
    return train, test


@pytest.mark.parametrize("fmt", ["txt", "mat"])
def test_stanford_dogs(tmp_path, fmt):
    if fmt == "mat":
        pytest.importorskip("scipy.io")
    train, test = _make_dogs(str(tmp_path), fmt)
    tr = load_benchmark_split("stanford_dogs", tmp_path, "train")
    va = load_benchmark_split("stanford_dogs", tmp_path, "val")
    assert tr.class_names == ["Chihuahua", "Japanese_spaniel", "Shih-Tzu"] == va.class_names
    assert tr.labels.tolist() == [lab - 1 for _, lab in train]
    assert va.labels.tolist() == [lab - 1 for _, lab in test] == [1, 2]
    assert tr.files[0].endswith(os.path.join("Images", "n02085620-Chihuahua", "n02085620_0.jpg"))
    dm = _dm(dataset="stanford_dogs", root=str(tmp_path))
    assert dm.num_classes == 3
    dm.setup("fit")
    assert next(iter(dm.val_dataloader()))[1].tolist() == [1, 2]


def test_stanford_dogs_wrong_official_label(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    _make_dogs(str(tmp_path), "mat")

    path = os.path.join(tmp_path, "lists", "train_list.mat")
    mat = scipy_io.loadmat(path)
    mat["labels"][0, 0] = 3
    scipy_io.savemat(path, {"file_list": mat["file_list"], "labels": mat["labels"]})
    with pytest.raises(ValueError, match="n02085620_0.jpg"):
        load_benchmark_split("stanford_dogs", tmp_path, "train")


def _make_cub(root):
    cub = os.path.join(root, "CUB_200_2011")
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images, labels, split = [], [], []
    k = 0
    for c, cname in enumerate(classes, 1):
        for i in range(3):
            k += 1
            rel = f"{cname}/{cname.split('.')[1]}_{i}.jpg"
            _save(os.path.join(cub, "images", *rel.split("/")))
            images.append(f"{k} {rel}")
            labels.append(f"{k} {c}")
            split.append(f"{k} {1 if i < 2 else 0}")
    for name, lines in (
        ("classes.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)]),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
    ):
        with open(os.path.join(cub, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return cub


def test_cub200(tmp_path):
    cub = _make_cub(str(tmp_path))
    for root in (str(tmp_path), cub):  # the parent or CUB_200_2011 itself
        tr = load_benchmark_split("cub200", root, "train")
        va = load_benchmark_split("cub200", root, "val")
        assert tr.class_names == ["Black_footed_Albatross", "Laysan_Albatross"]
        assert tr.labels.tolist() == [0, 0, 1, 1] and va.labels.tolist() == [0, 1]
        assert all("_2.jpg" in f for f in va.files)
    os.remove(os.path.join(cub, "images", "002.Laysan_Albatross", "Laysan_Albatross_2.jpg"))
    with pytest.raises(FileNotFoundError, match="Laysan_Albatross_2.jpg"):
        load_benchmark_split("cub200", cub, "val")
    dm = _dm(dataset="cub200", root=cub)
    assert dm.num_classes == 2 and dm.class_names == ["Black_footed_Albatross", "Laysan_Albatross"]


@pytest.mark.parametrize("name,folder,n", [("flowers102", "flowers-102", 102), ("cifar10", "cifar-10-batches-py", 10),
                                          ("food101", "food-101", 101), ("stanford_cars", "stanford_cars", 196)])
def test_torchvision_dataset_missing(tmp_path, monkeypatch, name, folder, n):
    import torchvision.datasets.utils as tvu

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    for fn in ("download_url", "download_and_extract_archive", "download_file_from_google_drive"):
        monkeypatch.setattr(tvu, fn, no_download, raising=False)
    dm = _dm(dataset=name, root=str(tmp_path))
    assert dm.num_classes == n  # known without the data
    with pytest.raises(FileNotFoundError, match=folder) as info:
        dm.setup("fit")
    assert "never downloads" in str(info.value) or "cannot download" in str(info.value)
    assert not os.listdir(tmp_path)


def test_benchmark_needs_root():
    with pytest.raises(ValueError, match="root"):
        ClassificationDataModule(dataset="cub200")
    with pytest.raises(ValueError, match="dataset must be one of"):
        ClassificationDataModule(dataset="imagenet22k")


# --------------------------------------------------------------------------------------------
# glyphs
# --------------------------------------------------------------------------------------------


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".jpg"):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    out[os.path.relpath(os.path.join(dirpath, f), root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def tiny_glyphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("glyphs") / "data"
    ensure_glyphs_dataset(root, num_train_per_class=2, num_val_per_class=1, image_size=64, seed=0, workers=1)
    return root


def test_glyphs_deterministic_and_balanced(tiny_glyphs, tmp_path):
    again = ensure_glyphs_dataset(tmp_path / "again", 2, 1, 64, 0, workers=2)["root"]
    a, b = _tree_bytes(tiny_glyphs), _tree_bytes(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)  # identical bytes, 1 or 2 processes
    assert len(a) == 10 * 3
    for split, n in (("train", 2), ("val", 1)):
        assert sorted(os.listdir(tiny_glyphs / split)) == list(GLYPH_CLASSES)
        for c in GLYPH_CLASSES:
            assert len(os.listdir(tiny_glyphs / split / c)) == n
    other = _tree_bytes(ensure_glyphs_dataset(tmp_path / "other", 2, 1, 64, 1, workers=1)["root"])
    assert sum(a[k] != other[k] for k in a) == len(a)
    assert np.array_equal(render_glyph_image(5, "spotted", 96), render_glyph_image(5, "spotted", 96))
    assert render_glyph_image(5, "spotted", 96).shape == (96, 96, 3)


def test_glyphs_regenerate_on_param_change(tmp_path):
    root = tmp_path / "g"
    ensure_glyphs_dataset(root, 1, 1, 48, 0, workers=1)
    mtime = os.path.getmtime(root / "train" / "plain" / "0000.jpg")
    ensure_glyphs_dataset(root, 1, 1, 48, 0, workers=1)
    assert os.path.getmtime(root / "train" / "plain" / "0000.jpg") == mtime  # complete: skipped
    ensure_glyphs_dataset(root, 2, 1, 48, 0, workers=1)
    assert len(os.listdir(root / "train" / "plain")) == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError):
        ensure_glyphs_dataset(tmp_path / "foreign", 1, 1, 48, 0, workers=1)


def test_glyphs_species_differ_only_in_details():
    """Same random stream, different species: same pose/background, a small differing area."""
    base = render_glyph_image(3, "plain", 128, noise=False).astype(int)
    for species in GLYPH_CLASSES:
        if species == "plain":
            continue
        diff = np.abs(render_glyph_image(3, species, 128, noise=False).astype(int) - base).max(-1) > 30
        assert 3 < diff.sum() < 0.06 * 128 * 128, species


@pytest.mark.parametrize("size", [96, 128])
def test_glyphs_datamodule_resolution(tiny_glyphs, size):
    dm = _dm(root=str(tiny_glyphs), image_size=size, cache_images=size == 96, **TINY_GLYPHS)
    assert dm.num_classes == 10 and dm.class_names == list(GLYPH_CLASSES)
    dm.prepare_data()
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, size, size)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, size, size) and labels.tolist() == [0, 1, 2, 3]


def test_predict_folder(tiny_glyphs, tmp_path):
    _save(str(tmp_path / "p" / "a.png"), mode="L")
    (tmp_path / "p" / "b.txt").write_text("x")
    dm = _dm(root=str(tiny_glyphs), predict_images=str(tmp_path / "p"), **TINY_GLYPHS)
    dm.setup("predict")
    images, labels = next(iter(dm.predict_dataloader()))
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [-1]


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------


def test_eval_transform_resize_crop_normalize():
    # 100x200 image, left half black / right half white; S=64, ratio 0.5 -> short side 128, crop 64 centre.
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 100:] = 255
    crop = classification_eval_transforms(64, 0.5, to_tensor=False)(img)
    assert crop.shape == (64, 64, 3)
    assert crop[:, :30].max() < 10 and crop[:, 34:].min() > 245  # the centre of the 128x256 resize
    t = classification_eval_transforms(64, 0.875)(np.full((50, 60, 3), 255, np.uint8))
    assert t.shape == (3, 64, 64) and t.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(t.mean((1, 2)), expected, atol=1e-4)
    mean_img = np.broadcast_to(np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8), (40, 40, 3)).copy()
    assert classification_eval_transforms(32)(mean_img).abs().max() < 0.03


@pytest.mark.parametrize("augment", ["standard", "randaugment", "none"])
def test_train_transforms(augment):
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    tf = classification_train_transforms(48, augment, min_crop_scale=0.08)
    torch.manual_seed(1)
    a = [tf(img) for _ in range(4)]
    torch.manual_seed(1)
    b = [tf(img) for _ in range(4)]
    assert all(x.shape == (3, 48, 48) and x.dtype == torch.float32 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # reproducible from torch's seed
    if augment != "none":
        assert not all(torch.equal(a[0], x) for x in a[1:])  # but random
    clone = pickle.loads(pickle.dumps(tf))  # DataLoader workers under spawn
    torch.manual_seed(1)
    assert torch.equal(clone(img), a[0])
    with pytest.raises(ValueError, match="augment"):
        classification_train_transforms(48, "autoaugment")
