"""Segmentation metrics: a hand-computed case, torchmetrics' own IoU / accuracy on random masks, index PNGs (palette
and grayscale), the model-free `mobilevision eval segmentation` and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from mobilevision.cli.eval import main as eval_main
from mobilevision.evaluation.segmentation import (
    evaluate_mask_folders,
    read_index_mask,
    segmentation_metrics,
    summarize_confusion,
)


def test_hand_computed_case():
    # 3 classes; one 2x4 image, 255 ignored. Counted by hand:
    #   gt   0 0 1 1 | 2 2 255 0        pred 0 1 1 1 | 2 0 1 0
    #   class 0: TP 2 (pixels 0, 7), FP 1 (pixel 5), FN 1 (pixel 1) -> IoU 2/4, acc 2/3
    #   class 1: TP 2, FP 1 (pixel 1), FN 0                          -> IoU 2/3, acc 2/2
    #   class 2: TP 1, FP 0, FN 1 (pixel 5)                           -> IoU 1/2, acc 1/2
    #   pixel 6 (gt 255) is left out: 7 pixels, 5 right
    gt = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 1, 0]]])
    m = segmentation_metrics(3)
    m.update(pred, gt)
    stats = summarize_confusion(m.compute(), ["bg", "cat", "dog"])
    assert stats["per_class_iou"] == pytest.approx({"bg": 0.5, "cat": 2 / 3, "dog": 0.5})
    assert stats["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert stats["pixel_acc"] == pytest.approx(5 / 7)
    assert stats["mean_acc"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert stats["num_pixels"] == 7


def test_absent_classes_do_not_count():
    gt = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 0]]])
    m = segmentation_metrics(4)  # classes 2 and 3 appear nowhere
    m.update(pred, gt)
    stats = summarize_confusion(m.compute())
    assert stats["per_class_iou"]["2"] is None and stats["per_class_iou"]["3"] is None
    assert stats["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_torchmetrics_on_random_masks(seed):
    g = torch.Generator().manual_seed(seed)
    c = 6
    gt = torch.randint(0, c, (4, 32, 40), generator=g)
    gt[torch.rand(gt.shape, generator=g) < 0.1] = 255
    pred = torch.where(torch.rand(gt.shape, generator=g) < 0.6, gt.clamp(max=c - 1), torch.randint(0, c, gt.shape,
                                                                                                     generator=g))
    m = segmentation_metrics(c)
    for b in range(4):  # accumulated image by image
        m.update(pred[b:b + 1], gt[b:b + 1])
    stats = summarize_confusion(m.compute())
    iou = MulticlassJaccardIndex(c, average=None, ignore_index=255)(pred, gt)
    assert list(stats["per_class_iou"].values()) == pytest.approx(iou.tolist(), abs=1e-6)
    assert stats["miou"] == pytest.approx(float(iou.mean()), abs=1e-6)
    micro = MulticlassAccuracy(c, average="micro", ignore_index=255)(pred, gt)
    macro = MulticlassAccuracy(c, average="macro", ignore_index=255)(pred, gt)
    assert stats["pixel_acc"] == pytest.approx(float(micro), abs=1e-6)
    assert stats["mean_acc"] == pytest.approx(float(macro), abs=1e-6)
    # logits in, as a network gives them
    logits = torch.nn.functional.one_hot(pred, c).permute(0, 3, 1, 2).float()
    m2 = segmentation_metrics(c)
    m2.update(logits, gt)
    assert torch.equal(m2.compute(), m.compute())


def _save_palette(path, mask: np.ndarray) -> None:
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:21] = np.random.default_rng(0).integers(0, 255, (21, 3))
    palette[255] = (224, 224, 192)  # VOC's border colour
    img.putpalette(palette.flatten().tolist())
    img.save(path)


def test_palette_and_grayscale_masks_read_as_indices(tmp_path):
    mask = np.array([[0, 3, 255], [20, 1, 0]])
    _save_palette(tmp_path / "p.png", mask)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(tmp_path / "l.png")
    Image.fromarray(mask.astype(np.uint16)).save(tmp_path / "i16.png")
    for name in ("p.png", "l.png", "i16.png"):
        assert np.array_equal(read_index_mask(tmp_path / name), mask), name
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png.*not an index mask"):
        read_index_mask(tmp_path / "rgb.png")


def test_eval_segmentation_command(tmp_path, capsys):
    rng = np.random.default_rng(3)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    (gt_dir / "sub").mkdir(parents=True)
    (pred_dir / "sub").mkdir(parents=True)
    gts, preds = [], []
    for i, name in enumerate(["a", "b", "sub/c"]):
        gt = rng.integers(0, 4, (12, 10))
        gt[0] = 255
        pred = np.where(rng.random(gt.shape) < 0.7, np.minimum(gt, 3), rng.integers(0, 4, gt.shape))
        _save_palette(gt_dir / f"{name}.png", gt)
        Image.fromarray(pred.astype(np.uint8), mode="L").save(pred_dir / f"{name}.png")
        gts.append(gt)
        preds.append(pred)
    (pred_dir / "._a.png").write_bytes(b"\x00macOS resource fork")  # hidden: ignored
    out = tmp_path / "stats.json"
    rc = eval_main(["segmentation", "--predictions", str(pred_dir), "--ground-truth", str(gt_dir),
                    "--num-classes", "4", "--class-names", "bg,a,b,c", "--json-out", str(out)])
    assert rc == 0, capsys.readouterr().err
    stats = json.loads(out.read_text())
    assert {"miou", "pixel_acc", "mean_acc", "per_class_iou"} <= set(stats)
    # independent: torchmetrics on all pixels at once
    gt_t = torch.from_numpy(np.stack(gts))
    pred_t = torch.from_numpy(np.stack(preds))
    iou = MulticlassJaccardIndex(4, average=None, ignore_index=255)(pred_t, gt_t)
    assert list(stats["per_class_iou"].values()) == pytest.approx(iou.tolist(), abs=1e-6)
    assert "mIoU" in capsys.readouterr().out


def test_eval_segmentation_errors_name_the_file(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8), mode="L").save(gt_dir / "x.png")
    Image.fromarray(np.zeros((4, 6), np.uint8), mode="L").save(pred_dir / "x.png")
    args = ["segmentation", "--predictions", str(pred_dir), "--ground-truth", str(gt_dir), "--num-classes", "3"]
    assert eval_main(args) == 2
    assert "x.png is 6x4 but its ground truth" in capsys.readouterr().err
    Image.fromarray(np.full((4, 6), 7, np.uint8), mode="L").save(gt_dir / "x.png")
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    assert "x.png holds label(s) [7]" in err and "0..2" in err
    Image.fromarray(np.zeros((4, 6), np.uint8), mode="L").save(gt_dir / "y.png")
    assert eval_main(args) == 2
    assert "1 ground-truth mask(s) have no prediction" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="ground truth folder .*missing does not exist"):
        evaluate_mask_folders(pred_dir, tmp_path / "missing", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no mask"):
        evaluate_mask_folders(pred_dir, tmp_path / "empty", 3)


def test_mask_folders_are_walked_like_every_folder(tmp_path):
    """Hidden folders (``.git``) and files (macOS ``._x.png``) in a predictions folder are not masks; sub-folders
    are (the project's one folder walker)."""
    from mobilevision.masks import save_index_mask

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    mask = np.array([[0, 1], [1, 1]], np.uint8)
    for root in (gt, pred):
        save_index_mask(mask, root / "a.png")
        save_index_mask(mask, root / "sub" / "b.png")
    save_index_mask(np.zeros((2, 2), np.uint8), pred / ".git" / "c.png")
    (pred / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    out = tmp_path / "stats.json"
    assert eval_main(["segmentation", "--predictions", str(pred), "--ground-truth", str(gt), "--num-classes", "2",
                      "--json-out", str(out)]) == 0
    assert json.loads(out.read_text())["miou"] == pytest.approx(1.0)
