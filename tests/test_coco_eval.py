"""COCO mAP harness: published numbers on real data, hand-checked tiny cases, CLI, DDP gathering."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from mobilevision.cli.eval import main as eval_main
from mobilevision.evaluation.coco_map import (
    BACKENDS,
    STAT_KEYS,
    COCOEvaluator,
    evaluate_results_file,
    scale_boxes,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "coco_val2014_100"
GT_PATH = DATA / "instances_val2014_100.json"
DT_PATH = DATA / "instances_val2014_fakebbox100_results.json"
PUBLISHED_PATH = DATA / "val2014_fake_eval_res.txt"


def _published_bbox_stats() -> dict[str, float]:
    """The 12 bbox numbers printed by the COCO API in val2014_fake_eval_res.txt."""
    text = PUBLISHED_PATH.read_text()
    section = text.split("type=bbox", 1)[1].split("type=keypoints", 1)[0]
    values = [float(v) for v in re.findall(r"\] = ([-0-9.]+)", section)]
    assert len(values) == 12, values
    return dict(zip(STAT_KEYS, values))


@pytest.fixture(scope="module")
def real_gt() -> dict:
    return json.loads(GT_PATH.read_text())


@pytest.fixture(scope="module")
def real_dt() -> list[dict]:
    return json.loads(DT_PATH.read_text())


@pytest.fixture(scope="module")
def file_stats() -> dict[str, dict]:
    return {b: evaluate_results_file(GT_PATH, DT_PATH, backend=b) for b in BACKENDS}


def _per_image_predictions(gt: dict, dt: list[dict], category_ids: list[int], image_ids=None, dtype=torch.float64):
    """The fake results as per-image tensors (xyxy, contiguous labels), one entry per GT image.

    float64: the official fake detections sit *exactly* on IoU thresholds for a few boxes (e.g. IoU
    0.8000000000000002), so float32 rounding of the corners flips those matches (~1e-3 AP).
    """
    cat_to_label = {c: i for i, c in enumerate(category_ids)}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in gt["images"]}
    for d in dt:
        by_image[d["image_id"]].append(d)
    out = []
    for image_id in image_ids if image_ids is not None else by_image:
        dets = by_image[image_id]
        boxes = torch.tensor([d["bbox"] for d in dets], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        out.append(
            {
                "image_id": image_id,
                "boxes": boxes.to(dtype),
                "scores": torch.tensor([d["score"] for d in dets], dtype=torch.float32),
                "labels": torch.tensor([cat_to_label[d["category_id"]] for d in dets], dtype=torch.long),
            }
        )
    return out


def _assert_same_stats(a: dict, b: dict, tol: float = 1e-12) -> None:
    for k in STAT_KEYS:
        assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])
    assert a["per_category"].keys() == b["per_category"].keys()
    for name in a["per_category"]:
        assert abs(a["per_category"][name] - b["per_category"][name]) <= tol, name


# ---------------------------------------------------------------------------------- (a) ----
@pytest.mark.parametrize("backend", BACKENDS)
def test_reproduces_published_numbers(file_stats, backend):
    published = _published_bbox_stats()
    stats = file_stats[backend]
    assert set(stats) == set(STAT_KEYS) | {"per_category"}
    for k in STAT_KEYS:
        assert round(stats[k], 3) == published[k], (k, stats[k], published[k])
        assert abs(stats[k] - published[k]) < 5e-4
    # Full-precision values stated in the data README (pycocotools 2.0.11).
    assert stats["AP"] == pytest.approx(0.5045806987249628, abs=1e-12)
    assert stats["AR100"] == pytest.approx(0.595352982877607, abs=1e-12)
    assert len(stats["per_category"]) == 80


def test_backends_agree(file_stats):
    _assert_same_stats(file_stats["pycocotools"], file_stats["faster_coco_eval"], tol=1e-6)


# ---------------------------------------------------------------------------------- (b) ----
def test_update_matches_results_file(real_gt, real_dt, file_stats, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(GT_PATH))
    ev = COCOEvaluator(coco_gt)  # default mapping: label i <-> sorted(category ids)[i]
    preds = _per_image_predictions(real_gt, real_dt, ev.category_ids)
    ev.update(preds[:50])
    ev.update(preds[50:])
    stats = ev.compute()
    _assert_same_stats(stats, file_stats["pycocotools"])
    assert "Average Precision" in ev.summary_table()

    # results_json -> evaluate_results_file reproduces compute() (full float precision kept).
    path = ev.results_json(tmp_path / "dt.json")
    _assert_same_stats(evaluate_results_file(GT_PATH, path), stats)

    # Image 1063 has ground truth but no detection: updating only the other 99 images scores that
    # subset, unless evaluate_all_images=True (then 1063 counts as all-missed, like the file).
    with_dets = [p for p in preds if len(p["scores"])]
    assert len(with_dets) == 99
    subset = COCOEvaluator(GT_PATH, backend="faster_coco_eval")
    subset.update(with_dets)
    assert subset.compute()["AR100"] > stats["AR100"]
    everything = COCOEvaluator(GT_PATH, evaluate_all_images=True, backend="faster_coco_eval")
    everything.update(with_dets)
    _assert_same_stats(everything.compute(), stats, tol=1e-6)


# ---------------------------------------------------------------------------------- (c) ----
CATS = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]


def _tiny_gt(boxes_xywh: list[tuple[int, list[float]]], n_images: int = 1) -> dict:
    """Ground truth with categories 1, 5, 90; ``boxes_xywh`` is [(category_id, [x, y, w, h]), ...] on image 1."""
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, (c, b) in enumerate(boxes_xywh)
    ]
    images = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i + 1}.jpg"} for i in range(n_images)]
    return {"images": images, "annotations": anns, "categories": CATS}


def _pred(image_id, boxes_xyxy, scores, labels):
    return {
        "image_id": image_id,
        "boxes": torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_prediction(backend):
    gt = _tiny_gt([(1, [10, 20, 100, 50]), (5, [200, 100, 150, 200])])
    ev = COCOEvaluator(gt, backend=backend)  # labels: 0 -> 1, 1 -> 5, 2 -> 90
    ev.update(_pred(1, [[10, 20, 110, 70], [200, 100, 350, 300]], [0.9, 0.8], [0, 1]))
    s = ev.compute()
    for k in ("AP", "AP50", "AP75", "APm", "APl", "AR1", "AR10", "AR100", "ARm", "ARl"):
        assert s[k] == pytest.approx(1.0), k
    assert s["APs"] == -1.0 and s["ARs"] == -1.0  # no small ground truth: COCOeval's -1
    assert s["per_category"] == {"person": pytest.approx(1.0), "airplane": pytest.approx(1.0), "toothbrush": -1.0}


def test_iou_06_counts_for_ap50_not_ap75():
    gt = _tiny_gt([(1, [0, 0, 100, 100])])
    ev = COCOEvaluator(gt)
    ev.update(_pred(1, [[0, 0, 100, 60]], [0.9], [0]))  # IoU = 6000 / 10000 = 0.6
    s = ev.compute()
    assert s["AP50"] == pytest.approx(1.0)
    assert s["AP75"] == 0.0


def test_false_positive_above_true_positive_lowers_ap():
    # One GT; an FP scored above the TP: precision at recall 1 is 1/2 -> AP = 0.5 at every IoU.
    ev = COCOEvaluator(_tiny_gt([(1, [0, 0, 100, 100])]))
    ev.update(_pred(1, [[300, 300, 400, 400], [0, 0, 100, 100]], [0.9, 0.8], [0, 0]))
    assert ev.compute()["AP"] == pytest.approx(0.5)

    # Two GTs, scores TP 0.9, FP 0.8, TP 0.7: recall/precision (0.5, 1), (0.5, 1/2), (1, 2/3).
    # Interpolated precision is 1 for the 51 recall points 0.00..0.50, 2/3 for the 50 points
    # 0.51..1.00 -> AP = (51 + 50 * 2/3) / 101.
    ev = COCOEvaluator(_tiny_gt([(1, [0, 0, 100, 100]), (1, [200, 200, 100, 100])]))
    ev.update(_pred(1, [[0, 0, 100, 100], [400, 10, 500, 110], [200, 200, 300, 300]], [0.9, 0.8, 0.7], [0, 0, 0]))
    s = ev.compute()
    expected = (51 + 50 * 2 / 3) / 101
    assert s["AP"] == pytest.approx(expected, abs=1e-12)
    assert s["AP50"] == pytest.approx(expected, abs=1e-12)
    assert s["AR100"] == pytest.approx(1.0)


def test_category_id_mapping_round_trip(tmp_path):
    gt = _tiny_gt([(1, [10, 10, 50, 50]), (5, [100, 100, 60, 60]), (90, [300, 200, 80, 40])])
    boxes = [[10, 10, 60, 60], [100, 100, 160, 160], [300, 200, 380, 240]]
    for mapping, labels in (
        ([1, 5, 90], [0, 1, 2]),
        (None, [0, 1, 2]),  # default: sorted category ids
        ({0: 90, 1: 1, 2: 5}, [1, 2, 0]),
        ([90, 5, 1], [2, 1, 0]),
    ):
        ev = COCOEvaluator(gt, label_to_category_id=mapping)
        ev.update(_pred(1, boxes, [0.9, 0.8, 0.7], labels))
        assert [r["category_id"] for r in ev.results()] == [1, 5, 90]
        s = ev.compute()
        assert s["AP"] == pytest.approx(1.0)
        assert s["per_category"] == {n: pytest.approx(1.0) for n in ("person", "airplane", "toothbrush")}
    # Round trip through the official results file.
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    assert evaluate_results_file(gt_path, ev.results_json(tmp_path / "dt.json"))["AP"] == pytest.approx(1.0)
    # A wrong mapping sends every box to another category: nothing matches.
    ev = COCOEvaluator(gt, label_to_category_id=[5, 90, 1])
    ev.update(_pred(1, boxes, [0.9, 0.8, 0.7], [0, 1, 2]))
    assert ev.compute()["AP"] == 0.0


def test_empty_predictions():
    gt = _tiny_gt([(1, [0, 0, 100, 100])], n_images=2)
    ev = COCOEvaluator(gt)
    ev.update([_pred(1, [], [], []), _pred(2, [], [], [])])
    s = ev.compute()
    assert s["AP"] == 0.0 and s["AR100"] == 0.0 and s["APl"] == 0.0  # GT present, nothing found
    assert s["APs"] == -1.0  # no small GT
    assert ev.results() == []
    for backend in BACKENDS:  # nothing updated at all: every stat -1
        ev = COCOEvaluator(gt, backend=backend)
        with pytest.warns(UserWarning, match="zero images"):
            s = ev.compute()
        assert all(s[k] == -1.0 for k in STAT_KEYS)
        assert set(s["per_category"].values()) == {-1.0}


def test_reset_and_duplicates():
    gt = _tiny_gt([(1, [0, 0, 100, 100])])
    ev = COCOEvaluator(gt)
    ev.update(_pred(1, [[300, 300, 400, 400]], [0.9], [0]))
    assert ev.compute()["AP"] == 0.0
    ev.reset()
    ev.update(_pred(1, [[0, 0, 100, 100]], [0.9], [0]))
    ev.update(_pred(1, [[300, 300, 400, 400]], [0.9], [0]))  # repeated image id: first kept
    with pytest.warns(UserWarning, match="repeated image id"):
        assert ev.compute()["AP"] == pytest.approx(1.0)


def test_clear_errors(tmp_path):
    gt = _tiny_gt([(1, [0, 0, 100, 100])])
    ev = COCOEvaluator(gt)
    with pytest.raises(ValueError, match="image id 777"):
        ev.update(_pred(777, [[0, 0, 1, 1]], [0.5], [0]))
    with pytest.raises(ValueError, match=r"labels 3 "):
        ev.update(_pred(1, [[0, 0, 1, 1]], [0.5], [3]))
    with pytest.raises(ValueError, match="category ids not in the ground truth: 7"):
        COCOEvaluator(gt, label_to_category_id=[1, 5, 7])
    with pytest.raises(ValueError, match="unknown COCO backend"):
        COCOEvaluator(gt, backend="detectron")

    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(ValueError, match="category ids not in the ground truth: 2"):
        evaluate_results_file(gt_path, bad)
    bad.write_text(json.dumps([{"image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(ValueError, match="image ids not in the ground truth: 42"):
        evaluate_results_file(gt_path, bad)
    missing = tmp_path / "missing_instances.json"
    with pytest.raises(FileNotFoundError, match="missing_instances.json"):
        evaluate_results_file(missing, bad)
    with pytest.raises(FileNotFoundError, match="missing_instances.json"):
        COCOEvaluator(missing)


def test_scale_boxes():
    boxes = torch.tensor([[0.0, 0.0, 320.0, 320.0], [160.0, 80.0, 240.0, 160.0]])
    out = scale_boxes(boxes, from_size=(320, 320), to_size=(480, 640))
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 640.0, 480.0], [320.0, 120.0, 480.0, 240.0]]))
    clipped = scale_boxes(torch.tensor([[-10.0, 0.0, 330.0, 100.0]]), (320, 320), (320, 320), clip=True)
    assert clipped.tolist() == [[0.0, 0.0, 320.0, 100.0]]


# ---------------------------------------------------------------------------------- (d) ----
def test_cli_coco_writes_json(tmp_path, file_stats, capsys):
    out = tmp_path / "stats.json"
    rc = eval_main(["coco", "--annotations", str(GT_PATH), "--results", str(DT_PATH), "--json-out", str(out)])
    assert rc == 0
    assert "0.505" in capsys.readouterr().out
    stats = json.loads(out.read_text())
    assert set(stats) == set(STAT_KEYS) | {"per_category"}
    assert len(stats["per_category"]) == 80
    _assert_same_stats(stats, file_stats["pycocotools"])
    assert eval_main(["coco", "--annotations", str(tmp_path / "nope.json"), "--results", str(DT_PATH)]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_tools_eval_script(tmp_path):
    out = tmp_path / "stats.json"
    cmd = [sys.executable, str(REPO / "tools" / "eval.py"), "coco", "--annotations", str(GT_PATH),
           "--results", str(DT_PATH), "--json-out", str(out), "--backend", "faster_coco_eval"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(out.read_text())
    assert round(stats["AP"], 3) == 0.505 and "per_category" in stats


# ---------------------------------------------------------------------------------- (e) ----
def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str, image_ids: list[int]) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        gt = json.loads(GT_PATH.read_text())
        dt = json.loads(DT_PATH.read_text())
        ev = COCOEvaluator(GT_PATH)
        mine = image_ids[rank::world_size]
        if rank == world_size - 1:
            mine = mine + image_ids[:1]  # DistributedSampler-style padding duplicate
        ev.update(_per_image_predictions(gt, dt, ev.category_ids, image_ids=mine))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = ev.compute()
        written = ev.results_json(Path(out_dir) / "dt.json")
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps({"stats": stats, "n_local": len(ev), "written": written is not None})
        )
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gather_equals_single_process(tmp_path, real_gt, file_stats):
    import torch.multiprocessing as mp

    image_ids = [img["id"] for img in real_gt["images"]]
    ctx = mp.spawn(
        _ddp_worker, args=(2, _free_port(), str(tmp_path), image_ids), nprocs=2, join=False
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers timed out")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["n_local"] for r in results] == [50, 51]
    assert [r["written"] for r in results] == [True, False]  # only rank 0 writes the results file
    for r in results:
        _assert_same_stats(r["stats"], file_stats["pycocotools"])
    _assert_same_stats(evaluate_results_file(GT_PATH, tmp_path / "dt.json"), file_stats["pycocotools"])
