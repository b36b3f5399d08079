"""COCO files as annotation tools export them: scored, loaded and evaluated through the real paths.

Each fixture is written from the tool's documented export shape:

* Roboflow "COCO JSON": image and annotation ids from 0, a placeholder category 0 named after the dataset
  (supercategory "none", no annotations) that is the supercategory of the real classes;
* CVAT "COCO 1.0": ids from 1, ``segmentation`` (polygons, RLE for crowd), ``attributes``; two task exports
  merged (image ids offset, annotation ids repeated);
* Label Studio "COCO": ids from 0 (categories too), ``file_name`` under ``images/`` (also with a Windows
  ``\\``), ``width``/``height`` of the un-rotated file for EXIF-rotated phone photos;
* hand-written: no ``id`` / ``area`` / ``iscrowd`` in annotations, no ``width`` / ``height``;
* merged exports: two files numbered alike, concatenated.

Perfect detections (the ground-truth boxes, score 1) must score exactly 1.0 with both backends.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.coco_format import read_coco
from mobilevision.data import CocoDetection, CocoDetectionDataModule, ImageDecodeError, ImageSizeMismatchError
from mobilevision.data.image_io import load_rgb_image, read_image_size
from mobilevision.cli.eval import main as eval_main
from mobilevision.evaluation.coco_map import BACKENDS, COCOEvaluator, evaluate_results_file

# file -> ((width, height) as displayed, [(class, [x, y, w, h]), ...])
PHOTOS = {
    "p1.jpg": ((64, 48), [("cat", [4, 6, 20, 16]), ("dog", [30, 10, 24, 30])]),
    "p2.jpg": ((48, 64), [("dog", [2, 2, 40, 30]), ("dog", [10, 36, 20, 20]), ("cat", [0, 40, 12, 24])]),
    "p3.jpg": ((64, 48), [("cat", [8, 8, 30, 30])]),
    "p4.jpg": ((64, 48), []),  # an image without objects
}
CLASSES = ("cat", "dog")


def _write_photos(folder, names=PHOTOS, rotate: tuple[str, ...] = ()):
    """JPEGs of the PHOTOS sizes; ``rotate``: stored raw (transposed) with EXIF orientation 6."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        (w, h), _ = PHOTOS[name.rsplit("/", 1)[-1].split("-")[-1]]
        exif = Image.Exif()
        if name in rotate:
            w, h = h, w
            exif[0x0112] = 6
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name, format="JPEG", quality=90, exif=exif)


def _objects():
    for name, ((w, h), objs) in PHOTOS.items():
        yield name, w, h, objs


def roboflow(project="pets-x1y2") -> dict:
    cats = [{"id": 0, "name": project, "supercategory": "none"}]
    cats += [{"id": i + 1, "name": c, "supercategory": project} for i, c in enumerate(CLASSES)]
    images, anns = [], []
    for i, (name, w, h, objs) in enumerate(_objects()):
        images.append({"id": i, "license": 1, "file_name": name, "height": h, "width": w,
                       "date_captured": "2024-05-01T10:00:00+00:00"})
        for cls, box in objs:
            anns.append({"id": len(anns), "image_id": i, "category_id": CLASSES.index(cls) + 1, "bbox": box,
                         "area": box[2] * box[3], "segmentation": [], "iscrowd": 0})
    return {"info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com"},
            "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
            "categories": cats, "images": images, "annotations": anns}


def _cvat_task(items) -> dict:
    cats = [{"id": i + 1, "name": c, "supercategory": ""} for i, c in enumerate(CLASSES)]
    images, anns = [], []
    for name, w, h, objs in items:
        images.append({"id": len(images) + 1, "width": w, "height": h, "file_name": name, "license": 0,
                       "flickr_url": "", "coco_url": "", "date_captured": 0})
        for k, (cls, (x, y, bw, bh)) in enumerate(objs):
            # every other object a polygon (a diamond in its box): area is the polygon's, bbox its extent
            poly = [[x + bw / 2, y, x + bw, y + bh / 2, x + bw / 2, y + bh, x, y + bh / 2]] if k % 2 else []
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": CLASSES.index(cls) + 1,
                         "segmentation": poly, "area": bw * bh / 2 if poly else bw * bh, "bbox": [x, y, bw, bh],
                         "iscrowd": 0, "attributes": {"occluded": False, "rotation": 0.0}})
    return {"licenses": [{"name": "", "id": 0, "url": ""}],
            "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
            "categories": cats, "images": images, "annotations": anns}


def cvat_merged() -> dict:
    """Two CVAT task exports concatenated: image ids offset, annotation ids repeated (1, 2, ... in each)."""
    items = list(_objects())
    a, b = _cvat_task(items[:2]), _cvat_task(items[2:])
    # a crowd region in task b (CVAT writes an uncompressed RLE for it)
    w, h = b["images"][0]["width"], b["images"][0]["height"]
    b["annotations"].append({"id": len(b["annotations"]) + 1, "image_id": 1, "category_id": 2, "iscrowd": 1,
                             "segmentation": {"counts": [w * h - 10, 10], "size": [h, w]}, "area": 10.0,
                             "bbox": [50, 40, 10, 1], "attributes": {"occluded": False}})
    offset = len(a["images"])
    for img in b["images"]:
        img["id"] += offset
    for ann in b["annotations"]:
        ann["image_id"] += offset
    return {**a, "images": a["images"] + b["images"], "annotations": a["annotations"] + b["annotations"]}


def label_studio(raw_sizes: tuple[str, ...] = ()) -> dict:
    """Label Studio COCO export; ``raw_sizes``: photos whose width/height are given un-rotated."""
    images, anns = [], []
    for i, (name, w, h, objs) in enumerate(_objects()):
        if name in raw_sizes:
            w, h = h, w
        sep = "\\" if i == 1 else "/"
        images.append({"width": w, "height": h, "id": i, "file_name": f"images{sep}3f2a9c1e-{name}"})
        for cls, box in objs:
            anns.append({"id": len(anns), "image_id": i, "category_id": CLASSES.index(cls), "segmentation": [],
                         "bbox": box, "ignore": 0, "iscrowd": 0, "area": box[2] * box[3]})
    return {"images": images, "categories": [{"id": i, "name": c} for i, c in enumerate(CLASSES)],
            "annotations": anns,
            "info": {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
                     "date_created": "2024-05-01 10:00:00.000000"}}


def hand_written() -> dict:
    """No annotation ids, no area / iscrowd, no width / height; image ids of one's own choosing."""
    images = [{"id": 10 * (i + 1), "file_name": name} for i, (name, *_ ) in enumerate(_objects())]
    anns = [{"image_id": 10 * (i + 1), "category_id": 7 if cls == "cat" else 3, "bbox": box}
            for i, (_, _, _, objs) in enumerate(_objects()) for cls, box in objs]
    return {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]}


def merged_label_studio() -> dict:
    """Two Label Studio exports (ids from 0 in each) concatenated by hand, image ids offset."""
    a, b = label_studio(), label_studio()
    a["images"], a["annotations"] = a["images"][:2], [x for x in a["annotations"] if x["image_id"] < 2]
    b["images"] = b["images"][2:]
    b["annotations"] = [dict(x, id=k) for k, x in enumerate(y for y in b["annotations"] if y["image_id"] >= 2)]
    return {**a, "images": a["images"] + b["images"], "annotations": a["annotations"] + b["annotations"]}


EXPORTS = {"roboflow": roboflow, "cvat_merged": cvat_merged, "label_studio": label_studio,
           "hand_written": hand_written, "merged": merged_label_studio}


def _perfect(gt: dict) -> list[dict]:
    """The ground-truth boxes as detections, score 1 (crowd regions are not objects)."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a.get("iscrowd")]


def test_fixtures_have_the_problems_of_real_exports():
    ids = {k: [a.get("id") for a in f()["annotations"]] for k, f in EXPORTS.items()}
    assert 0 in ids["roboflow"] and 0 in ids["label_studio"]
    for k in ("cvat_merged", "merged"):
        assert len(set(ids[k])) < len(ids[k]), k
    assert ids["hand_written"] == [None] * 6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", EXPORTS)
def test_perfect_detections_score_one(kind, backend, tmp_path):
    gt = EXPORTS[kind]()
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(_perfect(gt)))
    before = copy.deepcopy(gt)
    stats = evaluate_results_file(gt_path, dt_path, backend=backend)
    assert stats["AP"] == 1.0 and stats["AP50"] == 1.0 and stats["AR100"] == 1.0, stats
    assert set(stats["per_category"]) == {"cat", "dog"}  # no placeholder class
    assert set(stats["per_category"].values()) == {1.0}

    # the accumulator, from a dict, with per-image tensors
    ev = COCOEvaluator(gt, backend=backend)
    label = {c: i for i, c in enumerate(ev.category_ids)}
    for img in gt["images"]:
        dets = [d for d in _perfect(gt) if d["image_id"] == img["id"]]
        boxes = torch.tensor([d["bbox"] for d in dets], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        ev.update({"image_id": img["id"], "boxes": boxes, "scores": torch.ones(len(dets)),
                   "labels": torch.tensor([label[d["category_id"]] for d in dets], dtype=torch.long)})
    assert ev.compute()["AP"] == 1.0
    assert gt == before  # the caller's dict is left alone


def test_tools_eval_on_an_export(tmp_path, capsys):
    gt = roboflow()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(_perfect(gt)))
    for backend in BACKENDS:
        out = tmp_path / f"{backend}.json"
        assert eval_main(["coco", "--annotations", str(tmp_path / "gt.json"), "--results", str(tmp_path / "dt.json"),
                          "--backend", backend, "--json-out", str(out)]) == 0
        assert json.loads(out.read_text())["AP"] == 1.0


def test_read_coco_renumbers_and_defaults():
    data = read_coco(hand_written())
    assert [a["id"] for a in data["annotations"]] == list(range(1, 7))
    assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in data["annotations"])
    robo = read_coco(roboflow())
    assert [c["name"] for c in robo["categories"]] == ["cat", "dog"]  # placeholder left out
    assert robo["annotations"][0]["id"] == 1 and robo["images"][0]["id"] == 0  # image ids are kept
    # a category named like the supercategory of no other category is not a placeholder
    own = {"images": [], "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    assert len(read_coco(own)["categories"]) == 1
    # two exports of other classes on the same images, concatenated: images listed twice are one image each
    a, b = roboflow(), roboflow()
    a["annotations"] = [x for x in a["annotations"] if x["category_id"] == 1]
    b["annotations"] = [x for x in b["annotations"] if x["category_id"] == 2]
    both = read_coco({**a, "images": a["images"] + b["images"], "annotations": a["annotations"] + b["annotations"],
                      "categories": a["categories"] + b["categories"]})
    assert len(both["images"]) == 4 and len(both["annotations"]) == 6 and len(both["categories"]) == 2


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"].append(dict(d["images"][1], id=0)),
     r"image ids used by different images: 0 \(p1.jpg, p2.jpg\)"),
    (lambda d: d["categories"].append({"id": 1, "name": "bird"}), "category id 1 is both 'cat' and 'bird'"),
    (lambda d: d["categories"].append({"id": 9, "name": "cat"}), "category names used by several ids"),
    (lambda d: d["annotations"][2].update(category_id=5), r"annotation id 2 \(#3 in the file, image p2.jpg\) "
                                                          "has unknown category_id 5"),
    (lambda d: d["annotations"][0].update(image_id=99), "refers to image_id 99"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "malformed bbox"),
    (lambda d: d.pop("categories"), "no categories"),
])
def test_read_coco_refuses_what_cannot_be_scored(change, message):
    data = roboflow()
    change(data)
    with pytest.raises(ValueError, match=message):
        read_coco(data, name="export.json")


# ----------------------------------------------------------------------------- dataset / data module
def _export_dir(tmp_path, kind: str, raw_sizes=(), rotate=()) -> tuple[str, str]:
    data = EXPORTS[kind]() if kind != "label_studio" else label_studio(raw_sizes)
    root = tmp_path / kind
    names = [img["file_name"].replace("\\", "/") for img in data["images"]]
    _write_photos(root, names, rotate=tuple(n for n in names if n.split("-")[-1] in rotate))
    path = root / "_annotations.coco.json"
    path.write_text(json.dumps(data))
    return str(root), str(path)


def _perfect_from_dataset(ds: CocoDetection) -> list[dict]:
    out = []
    for i in range(len(ds)):
        boxes, labels = ds.get_annotations(i)
        out.append({"image_id": ds.ids[i], "boxes": torch.from_numpy(boxes), "scores": torch.ones(len(boxes)),
                    "labels": torch.from_numpy(labels)})
    return out


@pytest.mark.parametrize("kind", EXPORTS)
def test_datamodule_scores_perfect_detections_one(kind, tmp_path):
    images, ann = _export_dir(tmp_path, kind)
    dm = CocoDetectionDataModule(images, ann, images, ann, image_size=32, batch_size=2, num_workers=0)
    assert sorted(dm.category_names) == ["cat", "dog"]  # before setup, from the training file
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.train_dataset.stats["boxes"] == 6
    x, targets = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32)
    for backend in BACKENDS:
        ev = COCOEvaluator(dm.val_coco, label_to_category_id=dm.label_to_category_id, backend=backend)
        ev.update(_perfect_from_dataset(dm.val_dataset))
        stats = ev.compute()
        assert stats["AP"] == 1.0 and stats["AR100"] == 1.0, (backend, stats)


def test_val_categories_matched_by_name(tmp_path):
    """Train on CVAT (cat=1, dog=2), validate on Label Studio (cat=0, dog=1) and on a file listing them reversed."""
    t_images, t_ann = _export_dir(tmp_path, "cvat_merged")
    v_images, v_ann = _export_dir(tmp_path, "label_studio")
    dm = CocoDetectionDataModule(t_images, t_ann, v_images, v_ann, image_size=32, batch_size=2, num_workers=0)
    assert dm.label_to_category_id == [1, 2]
    dm.setup("validate")
    assert dm.val_dataset.category_id_in_file == {1: 0, 2: 1}
    ev = COCOEvaluator(dm.val_coco, label_to_category_id=dm.label_to_category_id)
    ev.update(_perfect_from_dataset(dm.val_dataset))
    assert ev.compute()["AP"] == 1.0
    # the val annotations, re-expressed in training ids, are the file's boxes and classes
    raw = json.loads(open(v_ann).read())
    names = {c["id"]: c["name"] for c in raw["categories"]}
    got = sorted((a["image_id"], dm.category_names[dm.label_to_category_id.index(a["category_id"])], a["bbox"])
                 for a in dm.val_coco.dataset["annotations"])
    assert got == sorted((a["image_id"], names[a["category_id"]], [float(v) for v in a["bbox"]])
                         for a in raw["annotations"])

    reversed_ids = json.loads(open(v_ann).read())
    for c in reversed_ids["categories"]:
        c["id"] = 1 - c["id"]
    for a in reversed_ids["annotations"]:
        a["category_id"] = 1 - a["category_id"]
    path = tmp_path / "reversed.json"
    path.write_text(json.dumps(reversed_ids))
    ds = CocoDetection(v_images, path, categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])
    assert ds.category_id_in_file == {1: 1, 2: 0}
    for i in range(len(ds)):
        assert ds.get_annotations(i)[1].tolist() == dm.val_dataset.get_annotations(i)[1].tolist()

    # a val category the training file does not know is an error naming it and the file
    unknown = json.loads(open(v_ann).read())
    unknown["categories"][1]["name"] = "Dog"
    path.write_text(json.dumps(unknown))
    with pytest.raises(ValueError, match=r"reversed.json: categories 'Dog' \(id 1, 3 annotations\) are not training"):
        CocoDetection(v_images, path, categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])


def test_empty_categories_reported_and_dropped(tmp_path, caplog):
    images, ann = _export_dir(tmp_path, "label_studio")
    train = json.loads(open(ann).read())
    train["categories"].append({"id": 2, "name": "bird"})
    train_path = tmp_path / "train.json"
    train_path.write_text(json.dumps(train))
    val = copy.deepcopy(train)
    val["annotations"].append({"id": 99, "image_id": 3, "category_id": 2, "bbox": [1, 1, 9, 9]})
    val_path = tmp_path / "val.json"
    val_path.write_text(json.dumps(val))

    with caplog.at_level(logging.WARNING):
        kept = CocoDetectionDataModule(images, str(train_path), images, str(val_path), num_workers=0)
        assert kept.category_names == ["cat", "dog", "bird"]
    assert "without training annotations: 'bird' (id 2)" in caplog.text and "drop_empty_categories" in caplog.text
    kept.setup("validate")
    assert kept.val_dataset.stats["boxes"] == 7

    caplog.clear()
    dropped = CocoDetectionDataModule(images, str(train_path), images, str(val_path), num_workers=0,
                                      drop_empty_categories=True)
    with caplog.at_level(logging.WARNING):
        assert dropped.category_names == ["cat", "dog"] and dropped.label_to_category_id == [0, 1]
        dropped.setup("fit")
    assert "left out the annotations of 'bird' (id 2, 1 annotations)" in caplog.text
    assert dropped.val_dataset.stats["boxes"] == 6 and len(dropped.val_coco.dataset["annotations"]) == 6


def test_sizes_checked_before_training_with_exif_hint(tmp_path):
    # Label Studio gives the un-rotated size of EXIF-rotated phone photos
    images, ann = _export_dir(tmp_path, "label_studio", raw_sizes=("p2.jpg",), rotate=("p2.jpg",))
    assert read_image_size(f"{images}/images/3f2a9c1e-p2.jpg") == (48, 64)  # displayed: rotated
    data = json.loads(open(ann).read())
    data["images"][2]["width"] = 65  # and one plain mistake
    open(ann, "w").write(json.dumps(data))
    dm = CocoDetectionDataModule(images, ann, images, ann, num_workers=0)
    with pytest.raises(ImageSizeMismatchError) as err:
        dm.setup("fit")  # no image is decoded: header reads
    msg = str(err.value)
    assert "2 of 4 images" in msg and "_annotations.coco.json" in msg
    assert "3f2a9c1e-p2.jpg: image 48x64, annotation file 64x48 (swapped)" in msg
    assert "3f2a9c1e-p3.jpg: image 64x48, annotation file 65x48" in msg
    assert "EXIF orientation" in msg and "Label Studio" in msg
    # with the displayed size the same files load, rotated
    images2, ann2 = _export_dir(tmp_path / "ok", "label_studio", rotate=("p2.jpg",))
    ds = CocoDetection(images2, ann2)
    assert ds[1][0].shape == (64, 48, 3)


@pytest.mark.parametrize("file_name", ["../p1.jpg", "sub/../../p1.jpg", "/tmp/p1.jpg", "C:\\data\\p1.jpg",
                                       "\\\\server\\share\\p1.jpg"])
def test_file_names_leaving_the_image_folder_refused(file_name, tmp_path):
    _write_photos(tmp_path / "images", ["p1.jpg"])
    data = {"images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}], "annotations": [],
            "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"a\.json: image id 1: file_name .*p1\.jpg.* points outside"):
        CocoDetection(tmp_path / "images", tmp_path / "a.json")


def test_file_names_with_subfolders_and_backslashes(tmp_path):
    _write_photos(tmp_path / "images" / "train", ["p1.jpg"])
    data = {"images": [{"id": 1, "file_name": "train\\p1.jpg"}, {"id": 2, "file_name": "./train/sub/../p1.jpg"}],
            "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    ds = CocoDetection(tmp_path / "images", data)
    assert ds[0][1]["orig_size"] == (48, 64) and ds.image_path(0) == ds.image_path(1)


# ----------------------------------------------------------------------------- images of more than 8 bits
def test_16_bit_and_float_images_scaled_not_saturated(tmp_path):
    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    got = load_rgb_image(tmp_path / "gray16.png")
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
    assert np.array_equal(got[..., 0], (ramp >> 8).astype(np.uint8)) and (got[..., 0] == got[..., 2]).all()
    assert got.min() == 0 and got.max() == 251  # was: everything above 255 saturated to white

    Image.fromarray(ramp).save(tmp_path / "gray16.tif")  # TIFF: same
    assert np.array_equal(load_rgb_image(tmp_path / "gray16.tif"), got)
    pgm = b"P5\n64 48\n65535\n" + ramp.astype(">u2").tobytes()  # Pillow opens 16-bit PGM as 32-bit "I"
    (tmp_path / "gray16.pgm").write_bytes(pgm)
    assert np.array_equal(load_rgb_image(tmp_path / "gray16.pgm"), got)

    floats = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    Image.fromarray(floats).save(tmp_path / "float.tif")
    got = load_rgb_image(tmp_path / "float.tif")
    assert np.array_equal(got[..., 1], np.rint(floats * 255).astype(np.uint8))

    Image.fromarray(floats * 1000).save(tmp_path / "float_hdr.tif")
    with pytest.raises(ImageDecodeError, match=r"float_hdr\.tif.*outside \[0, 1\]"):
        load_rgb_image(tmp_path / "float_hdr.tif")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "int32.tif")
    with pytest.raises(ImageDecodeError, match=r"int32\.tif.*outside 16 bits"):
        load_rgb_image(tmp_path / "int32.tif")


def test_16_bit_gray_and_rgb_agree(tmp_path):
    """Pillow keeps the high byte of 16-bit RGB PNGs; 16-bit grayscale gets the same."""
    import struct
    import zlib

    value = 0x9A7F

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def png(color_type, channels):
        rows = b"".join(b"\x00" + np.full(4 * channels, value, ">u2").tobytes() for _ in range(4))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, color_type, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

    (tmp_path / "rgb16.png").write_bytes(png(2, 3))
    (tmp_path / "gray16.png").write_bytes(png(0, 1))
    rgb, gray = load_rgb_image(tmp_path / "rgb16.png"), load_rgb_image(tmp_path / "gray16.png")
    assert (rgb == value >> 8).all() and np.array_equal(rgb, gray)


# ----------------------------------------------------------------------------- a checkpoint's classes
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_cli_checkpoint_uses_its_own_classes(backend, tmp_path, monkeypatch):
    """A model trained with labels (dog=2, cat=1) evaluated on a Label Studio file (cat=0, dog=1) with perfect
    detections: 1.0 iff the checkpoint's mapping is used and matched by name; the results it writes are in the
    file's ids, so evaluating them against the file gives 1.0 again."""
    from mobilevision.evaluation.coco_map import scale_boxes
    from mobilevision.tasks import DetectionTask

    images, ann = _export_dir(tmp_path, "label_studio")
    task = DetectionTask(backbone="mobilenet_v2", width=0.35, num_classes=2, image_size=32,
                         label_to_category_id=[2, 1], category_names=["dog", "cat"])
    data_args = {"train_images": "gone", "train_annotations": "gone.json", "val_images": "gone",
                 "val_annotations": "gone.json", "image_size": 32, "batch_size": 2, "num_workers": 0}
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "datamodule_hyper_parameters": data_args}, ckpt)

    def perfect(self, outputs, targets):  # the targets as detections: labels are the checkpoint's labels
        return [{"image_id": int(t["image_id"]), "scores": torch.ones(len(t["labels"])), "labels": t["labels"],
                 "boxes": scale_boxes(t["boxes"], outputs["image_size"], t["orig_size"])} for t in targets]

    monkeypatch.setattr(DetectionTask, "_detections", perfect)
    out, dt = tmp_path / "stats.json", tmp_path / "dt.json"
    assert eval_main(["coco", "--checkpoint", str(ckpt), "--images", images, "--annotations", ann,
                      "--backend", backend, "--json-out", str(out), "--results-out", str(dt)]) == 0
    stats = json.loads(out.read_text())
    assert stats["AP"] == pytest.approx(1.0, abs=1e-9) and set(stats["per_category"]) == {"cat", "dog"}
    assert {r["category_id"] for r in json.loads(dt.read_text())} == {0, 1}
    assert evaluate_results_file(ann, dt, backend=backend)["AP"] == pytest.approx(1.0, abs=1e-9)
