"""mobilevision predict: sources (folders, hidden and corrupt files, odd image formats, EXIF, globs, videos), the
COCO results of detection in original pixels, checkpoint vs ONNX, classification and geolocalization CSVs, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.cli import main as cli_main
from mobilevision.cli.eval import main as eval_main
from mobilevision.cli.predict import main
from mobilevision.data.image_io import load_rgb_image
from mobilevision.data.sources import iter_frames, iter_sources, resolve_sources
from mobilevision.deploy import Predictor, export_onnx, load_any_task
from mobilevision.deploy.formats import export_model
from mobilevision.detection.postprocess import select_detections
from mobilevision.evaluation.geolocalization import read_locations_csv
from mobilevision.geo import build_partition, load_cities
from mobilevision.masks import read_index_mask
from mobilevision.tasks import ClassificationTask, DetectionTask, GeolocalizationTask, SegmentationTask

pytestmark = pytest.mark.usefixtures("one_thread")

CATEGORIES = ["cat", "dog, big", "car"]
CATEGORY_IDS = [1, 5, 7]
CLASSES = ["apple", "b, c", "d", "e"]
IMAGES = ["a.jpg", "sub/b.png", "sub/rot.jpg", "sub/deep/c16.png"]  # os.walk order: a folder's files first
SIZES = {"a.jpg": (90, 60), "sub/b.png": (40, 50), "sub/rot.jpg": (70, 40), "sub/deep/c16.png": (56, 44)}  # (w, h)
VIDEO_FRAMES = 7


def save_ckpt(task: torch.nn.Module, path: Path) -> Path:
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path


def calibrate(task: torch.nn.Module, params, std: float = 0.2) -> torch.nn.Module:
    """Random ``params`` (the predictor) and BatchNorm statistics of random images: outputs that differ from image
    to image, unlike those of a fresh network."""
    for m in task.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # one batch: its statistics
    with torch.no_grad():
        for p in list(params):
            p.normal_(0.0, std)
        task.train().model(torch.rand(16, 3, 64, 64))
    return task.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight checkpoints of the three tasks, with outputs that depend on the image: for detection a
    few dozen boxes per image above 0.25, well apart in score (no near-ties for the two runtimes to order apart)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    det = DetectionTask(backbone="mobilenet_v2", width=0.25, num_classes=3, image_size=64, category_names=CATEGORIES,
                        label_to_category_id=CATEGORY_IDS)
    calibrate(det, det.model.head.parameters())
    with torch.no_grad():
        for predictor in det.model.head.classification:  # background logit + 3: fewer boxes than the cap of 100
            predictor[-1].bias[0::4] += 3.0
    cls = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=4, image_size=64, class_names=CLASSES)
    c = load_cities()
    part, _ = build_partition(c.latitude, c.longitude, max_per_cell=300, min_per_cell=30)
    geo = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=part, image_size=64)
    for task in (cls, geo):
        calibrate(task, [task.model.fc.weight])
    return {name: save_ckpt(task, root / f"{name}.ckpt") for name, task in
            (("detection", det), ("classification", cls), ("geolocalization", geo))}


@pytest.fixture(scope="module")
def det_onnx(models, tmp_path_factory) -> Path:
    task, ckpt = load_any_task(models["detection"])
    return export_onnx(task, tmp_path_factory.mktemp("onnx") / "det.onnx", ckpt=ckpt)


def noise(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)), np.ones((4, 4, 1)))[:h, :w]
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """A folder tree (nested, grayscale, 16-bit, EXIF-rotated, hidden, corrupt, non-image) and a short video."""
    root = tmp_path_factory.mktemp("sources")
    src = root / "images"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / ".hidden").mkdir()
    Image.fromarray(noise(60, 90, 1)).save(src / "a.jpg", quality=95)
    Image.fromarray(noise(50, 40, 2)[:, :, 0]).save(src / "sub" / "b.png")  # grayscale
    Image.fromarray((noise(44, 56, 3)[:, :, 1].astype(np.uint16) * 257)).save(src / "sub" / "deep" / "c16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 70 high, displayed rotated: 70 x 40
    Image.fromarray(noise(70, 40, 4)).save(src / "sub" / "rot.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(noise(30, 30, 5)).save(src / ".hidden" / "x.jpg")
    (src / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "notes.txt").write_text("not an image")
    video = root / "clip.mp4"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for k in range(VIDEO_FRAMES):
        out.write(cv2.cvtColor(noise(48, 64, 10 + k), cv2.COLOR_RGB2BGR))
    out.release()
    return src, video


@pytest.fixture(scope="module")
def det_fixed(models, tmp_path_factory) -> dict[str, Path]:
    """The detection checkpoint as files of a fixed batch of 2: ExecuTorch (XNNPACK) and ONNX."""
    out = tmp_path_factory.mktemp("fixed")
    task, ckpt = load_any_task(models["detection"])
    return {"pte": export_model(task, out / "det.pte", "executorch", ckpt=ckpt, batch=2),
            "onnx_b2": export_model(task, out / "det_b2.onnx", "onnx", ckpt=ckpt, batch=2)}


@pytest.fixture(scope="module")
def det_runs(models, det_onnx, det_fixed, sources, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """``mobilevision predict`` of the detection checkpoint, its ONNX file and its fixed-batch files (batches of 3
    given to files of 2: a full batch and a padded one) on the folder and the video."""
    src, video = sources
    runs = {}
    for name, model in (("ckpt", models["detection"]), ("onnx", det_onnx), *det_fixed.items()):
        out = tmp_path_factory.mktemp(f"pred_{name}")
        err = _run([*map(str, ("--model", model, "--source", src, video, "--output", out)),
                    "--vid-stride", "2", "--batch-size", "3", "--quiet"])
        runs[name] = (out, err)
    return runs


def _run(argv: list[str]) -> str:
    """Run the command through ``mobilevision``'s dispatcher, expect success, return what it printed on stderr."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli_main(["predict", *argv])
    assert code == 0, err.getvalue()
    return err.getvalue()


def expected_detections(predictor: Predictor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xywh boxes in the image's pixels by hand: the network-input detections scaled by original / input size."""
    m = predictor.meta
    out = predictor.outputs(predictor.preprocess(image)[None])
    det = select_detections(out["boxes"], out["scores"], 0.25, m["topk_candidates"], m["nms_thresh"],
                            m["detections_per_img"])[0]
    h, w = image.shape[:2]
    xyxy = det["boxes"].double().numpy() * np.array([w / 64, h / 64, w / 64, h / 64])
    xyxy = np.clip(xyxy, 0, [w, h, w, h])
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1), det["scores"].numpy()


# -- detection ---------------------------------------------------------------------------------------------
def test_detection_outputs(det_runs, models, sources):
    from pycocotools.coco import COCO

    src, video = sources
    out, err = det_runs["ckpt"]
    index = json.loads((out / "images.json").read_text())
    names = [(im["file_name"], im.get("frame")) for im in index["images"]]
    assert names == [(n, None) for n in IMAGES] + [("clip.mp4", k) for k in (0, 2, 4, 6)]
    assert [im["id"] for im in index["images"]] == list(range(1, 9))
    for im in index["images"][:4]:
        assert (im["width"], im["height"]) == SIZES[im["file_name"]]  # displayed orientation for rot.jpg
    # the corrupt file is named in the summary; hidden files and non-images are not even looked at
    assert "skipped 1 file" in err and "broken.jpg" in err
    assert "._a.jpg" not in err and "x.jpg" not in err and "notes.txt" not in err
    assert (out / "skipped.txt").read_text().startswith(str(src / "broken.jpg"))

    # an independent reader: pycocotools against a ground truth built here
    records = json.loads((out / "predictions.json").read_text())
    assert records, "the random head should give detections above 0.25"
    gt = COCO()
    gt.dataset = {"images": [{"id": i + 1, "file_name": n, "width": SIZES.get(n, (64, 48))[0],
                              "height": SIZES.get(n, (64, 48))[1]} for i, (n, _) in enumerate(names)],
                  "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CATEGORIES)],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
                                   "iscrowd": 0}]}
    gt.createIndex()
    dt = gt.loadRes([{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in records])
    assert len(dt.getAnnIds()) == len(records)
    assert {r["category_id"] for r in records} <= set(CATEGORY_IDS)
    assert all(r["score"] >= 0.25 and r["category_name"] == CATEGORIES[CATEGORY_IDS.index(r["category_id"])]
               for r in records)
    by_image = {i: [r for r in records if r["image_id"] == i] for i in range(1, 9)}
    assert all(by_image[i][0]["file_name"] == "clip.mp4" and by_image[i][0]["frame"] == 2 * (i - 5)
               for i in range(5, 9) if by_image[i])

    # boxes in original pixels: the network-input boxes scaled by hand
    predictor = Predictor(models["detection"])
    frames = dict(iter_frames(video, 2))
    for image_id, image in ((1, load_rgb_image(src / "a.jpg")), (3, load_rgb_image(src / "sub" / "rot.jpg")),
                            (6, frames[2])):
        boxes, scores = expected_detections(predictor, image)
        got = by_image[image_id]
        assert len(got) == len(boxes) > 0
        np.testing.assert_allclose([r["bbox"] for r in got], boxes, atol=1e-3)
        np.testing.assert_allclose([r["score"] for r in got], scores, atol=1e-4)

    # drawn images keep the relative names and the displayed size; the video keeps the kept frames
    for name in IMAGES:
        assert Image.open(out / "images" / name).size == SIZES[name]
    cap = cv2.VideoCapture(str(out / "clip_pred.mp4"))
    frames_out = []
    while (ok := cap.read())[0]:
        frames_out.append(ok[1])
    cap.release()
    assert len(frames_out) == 4 and frames_out[0].shape == (48, 64, 3)


@pytest.mark.parametrize("exported", ["onnx", "pte", "onnx_b2"])
def test_checkpoint_and_exported_files_write_the_same_predictions(det_runs, exported):
    a = json.loads((det_runs["ckpt"][0] / "predictions.json").read_text())
    b = json.loads((det_runs[exported][0] / "predictions.json").read_text())
    assert len(a) == len(b) > 0
    key = ("image_id", "category_id", "file_name", "category_name", "frame")
    assert [[r.get(k) for k in key] for r in a] == [[r.get(k) for k in key] for r in b]
    np.testing.assert_allclose([r["bbox"] for r in a], [r["bbox"] for r in b], atol=1e-3)
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    runtime = "executorch (XNNPACK)" if exported == "pte" else "onnxruntime"
    assert runtime in det_runs[exported][1] and (det_runs[exported][0] / "clip_pred.mp4").is_file()


# -- classification and geolocalization --------------------------------------------------------------------
def test_classification_csv_from_a_glob(models, sources, tmp_path):
    src, _ = sources
    out = tmp_path / "cls"
    _run(["--model", str(models["classification"]), "--source", f"{src}/**/*.png", str(src / "a.jpg"),
          "--output", str(out), "--batch-size", "2"])
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["sub/b.png", "sub/deep/c16.png", "a.jpg"]
    assert list(rows[0]) == ["file", "frame", "label", "score", *[c for i in range(1, 5) for c in (f"top{i}",
                                                                                                   f"top{i}_score")]]
    predictor = Predictor(models["classification"])
    expected = predictor([load_rgb_image(src / "sub" / "b.png")])[0]
    assert rows[0]["label"] == expected["name"] == rows[0]["top1"]
    assert float(rows[0]["score"]) == pytest.approx(expected["score"], abs=1e-5)
    for r in rows:
        assert sorted(r[f"top{i}"] for i in range(1, 5)) == sorted(CLASSES)  # "b, c" quoted and read back whole
        scores = [float(r[f"top{i}_score"]) for i in range(1, 5)]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-4)


def test_geolocalization_csv_is_evaluable_and_mapped(models, sources, tmp_path):
    src, video = sources
    out = tmp_path / "geo"
    _run(["--model", str(models["geolocalization"]), "--source", str(src), str(video), "--vid-stride", "3",
          "--output", str(out)])
    ids, lat, lon = read_locations_csv(out / "predictions.csv")
    assert ids == IMAGES + ["clip.mp4#0", "clip.mp4#3", "clip.mp4#6"]
    assert len(set(lat.tolist())) > 1
    expected = Predictor(models["geolocalization"])([load_rgb_image(src / "sub" / "rot.jpg")])[0]
    assert (lat[2], lon[2]) == pytest.approx((expected["latitude"], expected["longitude"]), abs=1e-5)
    with open(out / "predictions.csv", newline="") as f:
        assert next(csv.DictReader(f))["cell"] != ""
    gt = tmp_path / "gt.csv"
    with open(gt, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "latitude", "longitude"])
        w.writerows([i, 48.85, 2.35] for i in ids)
    assert eval_main(["geolocalization", "--predictions", str(out / "predictions.csv"), "--ground-truth", str(gt),
                      "--no-reference"]) == 0
    with Image.open(out / "map.png") as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_segmentation_masks_overlays_and_video(sources, tmp_path):
    """Index masks at each image's displayed size (EXIF-rotated, grayscale, 16-bit, nested), equal to the Predictor's;
    overlays; the video drawn as an mp4 with one CSV row per kept frame."""
    torch.manual_seed(0)
    seg = SegmentationTask(backbone="mobilenet_v2", width=0.35, num_classes=4, image_size=64, head="lraspp",
                           class_names=["background", "a", "b", "c"])
    calibrate(seg, [p for n, p in seg.model.head.named_parameters() if "classifier" in n], std=2.0)
    model = save_ckpt(seg, tmp_path / "seg.ckpt")
    src, video = sources
    out = tmp_path / "seg"
    _run(["--model", str(model), "--source", str(src), str(video), "--vid-stride", "3", "--output", str(out)])
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == IMAGES + ["clip.mp4"] * 3
    sizes = {"a.jpg": (60, 90), "sub/b.png": (50, 40), "sub/deep/c16.png": (44, 56), "sub/rot.jpg": (40, 70)}
    predictor = Predictor(model)
    for name, size in sizes.items():
        mask = read_index_mask(out / "masks" / (name.rsplit(".", 1)[0] + ".png"))
        assert mask.shape == size
        np.testing.assert_array_equal(mask, predictor([load_rgb_image(src / name)])[0]["mask"])
        assert (out / "overlays" / (name.rsplit(".", 1)[0] + ".png")).is_file()
    assert len({int(v) for name in sizes for v in np.unique(read_index_mask(out / "masks" / (name.rsplit(".", 1)[0]
                                                                                               + ".png")))}) > 1
    cap = cv2.VideoCapture(str(out / "clip_pred.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_predictions_take_the_ids_of_the_users_ground_truth(det_runs, models, sources, tmp_path, capsys):
    """``--annotations GT.json``: image ids from the user's file (by file name; a base name when unique), category
    ids by name (the file's ids differ from training's), so that ``eval coco`` scores the predictions."""
    src, _ = sources
    plain = [r for r in json.loads((det_runs["ckpt"][0] / "predictions.json").read_text()) if "frame" not in r]
    names = IMAGES + ["broken.jpg"]
    gt_ids = {n: 100 - 7 * k for k, n in enumerate(names)}  # unrelated to the source order
    gt_cats = {"car": 30, "cat": 10, "dog, big": 20}
    size = {**SIZES, "broken.jpg": (10, 10)}
    gt = {"images": [{"id": gt_ids[n], "file_name": ("export/" + n.rsplit("/", 1)[-1]) if n == "sub/rot.jpg" else n,
                      "width": size[n][0], "height": size[n][1]} for n in names],
          "categories": [{"id": i, "name": n} for n, i in gt_cats.items()],
          "annotations": [{"id": 1, "image_id": gt_ids["a.jpg"], "category_id": 10, "bbox": [5, 5, 30, 20],
                           "area": 600, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "out"
    _run(["--model", str(models["detection"]), "--source", str(src), "--output", str(out), "--quiet",
          "--annotations", str(tmp_path / "gt.json")])
    got = json.loads((out / "predictions.json").read_text())
    want = [dict(r, image_id=gt_ids[r["file_name"]], category_id=gt_cats[r["category_name"]]) for r in plain]
    assert got == want and len(got) > 10
    assert cli_main(["eval", "coco", "--annotations", str(tmp_path / "gt.json"), "--results",
                     str(out / "predictions.json")]) == 0
    # an image the file does not list: named, before any work
    gt["images"], gt["annotations"] = gt["images"][1:], []
    (tmp_path / "gt2.json").write_text(json.dumps(gt))
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(models["detection"]), "--source", str(src), "--output",
                     str(tmp_path / "o2"), "--annotations", str(tmp_path / "gt2.json")]) == 2
    assert "1 of 5 images are not in the file (matched by file name): a.jpg" in capsys.readouterr().err


def test_a_video_opencv_fails_on_is_skipped_and_named(models, sources, tmp_path, monkeypatch):
    """OpenCV raising ``cv2.error`` in the middle of a video: the frames before it are predicted, the video is named
    in the summary and skipped.txt with the frame, the other sources are predicted, and the exit code is 0."""
    src, video = sources
    real = cv2.VideoCapture

    class Failing:  # the real capture, whose 3rd retrieve fails as a damaged stream makes OpenCV fail
        def __init__(self, path):
            self.cap, self.calls = real(path), 0

        def retrieve(self):
            self.calls += 1
            if self.calls == 3:
                raise cv2.error("OpenCV(5.0) error: (-215:Assertion failed) !_src.empty() in function 'cvtColor'")
            return self.cap.retrieve()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Failing)
    out = tmp_path / "out"
    err = _run(["--model", str(models["classification"]), "--source", str(src / "a.jpg"), str(video),
                str(src / "sub" / "b.png"), "--output", str(out), "--quiet"])
    with open(out / "predictions.csv", newline="") as f:
        rows = [(r["file"], r["frame"]) for r in csv.DictReader(f)]
    assert rows == [("a.jpg", ""), ("clip.mp4", "0"), ("clip.mp4", "1"), ("b.png", "")]
    assert "cannot decode video" in err and "at frame 2" in err
    assert "clip.mp4" in (out / "skipped.txt").read_text()


def test_outputs_of_names_that_differ_only_in_extension_do_not_collide(tmp_path):
    """``x.jpg`` and ``x.png`` (different images) get a mask each; ``clip.mp4`` and ``clip.avi`` a drawn video each."""
    torch.manual_seed(0)
    seg = SegmentationTask(backbone="mobilenet_v2", width=0.35, num_classes=4, image_size=64, head="lraspp")
    calibrate(seg, [p for n, p in seg.model.head.named_parameters() if "classifier" in n], std=2.0)
    model = save_ckpt(seg, tmp_path / "seg.ckpt")
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(noise(40, 60, 1)).save(src / "x.jpg", quality=95)
    Image.fromarray(noise(30, 50, 2)).save(src / "x.png")
    Image.fromarray(noise(20, 20, 3)).save(src / "y.png")
    for name, fourcc, frames in (("clip.mp4", "mp4v", 4), ("clip.avi", "MJPG", 2)):
        writer = cv2.VideoWriter(str(src / name), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
        for k in range(frames):
            writer.write(cv2.cvtColor(noise(48, 64, 20 + k), cv2.COLOR_RGB2BGR))
        writer.release()
    out = tmp_path / "out"
    _run(["--model", str(model), "--source", str(src), "--output", str(out), "--quiet"])
    predictor = Predictor(model)
    for name, mask in (("x.jpg", "x.jpg.png"), ("x.png", "x.png.png"), ("y.png", "y.png")):
        np.testing.assert_array_equal(read_index_mask(out / "masks" / mask),
                                      predictor([load_rgb_image(src / name)])[0]["mask"])
        assert (out / "overlays" / mask).is_file()
    for name, frames in (("clip.mp4", 4), ("clip.avi", 2)):
        cap = cv2.VideoCapture(str(out / f"{name}_pred.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames, name
        cap.release()
    with open(out / "predictions.csv", newline="") as f:
        masks = [r["mask"] for r in csv.DictReader(f) if r["mask"]]
    assert sorted(masks) == ["masks/x.jpg.png", "masks/x.png.png", "masks/y.png"]


# -- sources and errors ------------------------------------------------------------------------------------
def test_source_names_and_stream(sources, tmp_path):
    src, video = sources
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(noise(20, 20, 9)).save(other / "a.jpg")
    files = resolve_sources([src, other, src / "a.jpg", video])  # a.jpg twice: predicted once
    assert [f.name for f in files] == ["a.jpg", "broken.jpg", "sub/b.png", "sub/rot.jpg", "sub/deep/c16.png",
                                       "other/a.jpg", "clip.mp4"]
    items = list(iter_sources(files, vid_stride=4))
    assert [(i.file.name, i.frame, i.error is None) for i in items][-3:] == [
        ("other/a.jpg", None, True), ("clip.mp4", 0, True), ("clip.mp4", 4, True)]
    assert items[1].error and "broken.jpg" in items[1].error
    assert all(i.image.dtype == np.uint8 and i.image.shape[2] == 3 for i in items if i.error is None)
    # an output folder inside a source folder is not a source
    assert [f.name for f in resolve_sources([src], exclude=[src / "sub"])] == ["a.jpg", "broken.jpg"]
    assert [f.name for f in resolve_sources([src / "a.jpg", src / "sub" / "b.png", f"{src}/sub/*.jpg"])] == [
        "a.jpg", "b.png", "rot.jpg"]


@pytest.mark.parametrize("case", ["missing source", "empty path", "empty folder", "no glob match", "missing model",
                                  "cuda", "bad stride"])
def test_errors_before_any_work(models, sources, tmp_path, capsys, monkeypatch, case):
    src, _ = sources
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / "readme.md").write_text("x")
    model, source, extra = str(models["classification"]), str(src), []
    message = {"missing source": "does not exist", "empty path": "an empty path",
               "empty folder": "no image or video to predict on",
               "no glob match": "no file matches", "missing model": "does not exist",
               "cuda": "CUDA is not available", "bad stride": "--vid-stride must be >= 1"}[case]
    if case == "missing source":
        source = str(tmp_path / "nope")
    elif case == "empty path":  # "$UNSET_VARIABLE": not the current folder
        source = ""
    elif case == "empty folder":
        source = str(tmp_path / "empty")
    elif case == "no glob match":
        source = str(tmp_path / "*.jpg")
    elif case == "missing model":
        model = str(tmp_path / "model.onnx")
    elif case == "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        extra = ["--device", "cuda"]
    else:
        extra = ["--vid-stride", "0"]
    out = tmp_path / "out"
    assert main(["--model", model, "--source", source, "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_only_unreadable_files_is_an_error(models, sources, tmp_path, capsys):
    src, _ = sources
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    assert main(["--model", str(models["classification"]), "--source", str(src / "broken.jpg"),
                 str(tmp_path / "bad.mp4"), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "broken.jpg" in err and "bad.mp4" in err
    assert "error: none of the 2 file(s) could be read" in err


@pytest.mark.parametrize("drawer", ["predict", "eval"])
def test_drawn_labels_are_readable(drawer, tmp_path):
    """Labels on a filled box of the class colour, in black or white text by contrast: in ``predict``'s pictures
    and in ``eval --draw``'s grid alike."""
    from PIL import ImageColor

    from mobilevision.evaluation.visualize import _PALETTE, draw_boxes, draw_detections

    image = np.zeros((240, 320, 3), np.uint8)
    image[:, 160:] = 255  # a dark and a light background
    boxes, labels = np.array([[10, 10, 150, 200], [170, 10, 310, 200]]), [0, 7]
    if drawer == "predict":
        out = draw_boxes(image, boxes, labels, ["cat 0.91", "dog, big 0.5"])
    else:
        names = ["cat", "x", "x", "x", "x", "x", "x", "dog, big"]
        det = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "scores": torch.tensor([0.91, 0.5])}
        path = draw_detections([image], [det], names, tmp_path / "grid.png", nrow=1)
        out = np.asarray(Image.open(path).convert("RGB"))[4:244, 4:324]  # the tile inside make_grid's padding
    for x1, label, white_text in ((12, 0, True), (172, 7, False)):
        patch = out[12:22, x1:x1 + 40].reshape(-1, 3)
        assert ImageColor.getrgb(_PALETTE[label]) in {tuple(p) for p in patch.tolist()}  # a filled label
        luma = patch.astype(float) @ [0.299, 0.587, 0.114]
        assert luma.max() > 230 if white_text else luma.min() < 30  # in a contrasting (anti-aliased) colour
