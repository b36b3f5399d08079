"""SegmentationTask + CLI: every recipe fits, training learns a hand-made problem, mIoU is scored at the original
resolution and correctly under DDP, checkpoints evaluate / predict / export (ONNX Runtime agrees with torch), and
the predicted index masks are what `mobilevision eval segmentation --predictions` reads."""

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
from mobilevision.cli.train import CONFIG_DIR, expand_shortcuts, main
from mobilevision.data import SegmentationDataModule
from mobilevision.masks import save_index_mask
from mobilevision.deploy import Predictor
from mobilevision.masks import read_index_mask
from mobilevision.tasks import SegmentationTask, load_task

SEGMENTATION_CONFIGS = sorted((CONFIG_DIR / "segmentation").glob("*.yaml"))
COLORS = {1: (220, 40, 40), 2: (40, 200, 60)}  # class -> colour; class 0 is the grey background


def make_blocks_folder(root: Path, n_train: int = 24, n_val: int = 5, size: tuple[int, int] = (48, 64),
                       val_size: tuple[int, int] | None = None) -> Path:
    """A plain-layout dataset (images/{train,val}, masks/{train,val}, classes.txt) of an easy problem: a red and a
    green rectangle (classes 1, 2) on a noisy grey background (0); a 2-pixel void (255) frame around the red one."""
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nred\ngreen\n")
    for split, n in (("train", n_train), ("val", n_val)):
        h, w = val_size if split == "val" and val_size else size
        for i in range(n):
            img = np.clip(rng.normal(128, 20, (h, w, 3)), 0, 255)
            mask = np.zeros((h, w), np.uint8)
            for label, rgb in COLORS.items():
                bh, bw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
                y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
                img[y:y + bh, x:x + bw] = np.clip(np.array(rgb) + rng.normal(0, 15, (bh, bw, 3)), 0, 255)
                if label == 1:
                    mask[max(0, y - 2):y + bh + 2, max(0, x - 2):x + bw + 2] = 255
                    mask[y:y + bh, x:x + bw] = label
                else:
                    mask[y:y + bh, x:x + bw] = label
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(root / "images" / split / f"{i:03d}.png")
            save_index_mask(mask, root / "masks" / split / f"{i:03d}.png")
    return root


def blocks_dm(root: Path, **kwargs) -> SegmentationDataModule:
    args = {"dataset": "folder", "root": str(root), "crop_size": 48, "scale_min": 0.75, "scale_max": 1.25,
            "batch_size": 8, "num_workers": 0, **kwargs}
    return SegmentationDataModule(**args)


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(**{"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                         "enable_model_summary": False, "enable_checkpointing": False, **kwargs})


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> Path:
    return make_blocks_folder(tmp_path_factory.mktemp("blocks"))


@pytest.fixture(scope="module")
def trained(blocks, tmp_path_factory):
    """MobileNetV2 (width 0.35) + LR-ASPP trained from scratch for 60 steps through the CLI; its last.ckpt."""
    out = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", str(CONFIG_DIR / "segmentation/shapes.yaml"),
          "--model.init_args.width", "0.35", "--model.init_args.head", "lraspp", "--model.init_args.tap", "-1",
          "--model.init_args.lr", "0.01", "--model.init_args.warmup", "0.05",
          "--data.init_args.dataset", "folder", "--data.init_args.root", str(blocks),
          "--data.init_args.crop_size", "48", "--data.init_args.batch_size", "8",
          "--data.init_args.cache_images", "false",
          "--trainer.max_epochs", "20", "--trainer.check_val_every_n_epoch", "20",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
          "--trainer.default_root_dir", str(out), "--checkpoint.dirpath", str(out)])
    return out / "last.ckpt"


# -- configs through the CLI --------------------------------------------------------------------------------
def test_task_shortcut_picks_the_shapes_config():
    task, args = expand_shortcuts(["--task", "segmentation", "--backbone", "mobilenet_v2"])
    assert task == "segmentation"
    assert args[:3] == ["fit", "--config", str(CONFIG_DIR / "segmentation/shapes.yaml")]
    task, _ = expand_shortcuts(["validate", "--config", str(CONFIG_DIR / "segmentation/finetune_folder.yaml")])
    assert task == "segmentation"


@pytest.mark.parametrize("config", SEGMENTATION_CONFIGS, ids=lambda p: p.stem)
def test_every_config_fits(config, blocks, tmp_path, one_thread):
    cli = main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path),
                "--data.init_args.dataset", "folder", "--data.init_args.root", str(blocks),
                "--data.init_args.crop_size", "48", "--data.init_args.batch_size", "2",
                "--data.init_args.num_workers", "0", "--data.init_args.cache_images", "false",
                "--model.init_args.backbone_weights", "null", "--trainer.fast_dev_run", "1",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    assert cli.model.hparams.num_classes == 3 and cli.model.hparams.class_names == ["background", "red", "green"]
    assert 0.0 <= cli.model.last_metrics["miou"] <= 1.0


# -- learning and scoring ------------------------------------------------------------------------------------
def test_training_learns_the_blocks(trained, blocks):
    task, _ = load_task(trained, SegmentationTask)
    assert task.hparams.head == "lraspp" and task.hparams.num_classes == 3
    res = quiet_trainer().validate(task, datamodule=blocks_dm(blocks), verbose=False)[0]
    assert res["val/miou"] > 0.8, res  # an untrained network scores ~0.2


def test_scored_at_the_original_resolution(blocks, tmp_path):
    """eval_size shrinks the inputs; the metrics still count every labelled pixel of the original masks once."""
    task = SegmentationTask("mobilenet_v2", 3, 48, width=0.35, head="lraspp", class_names=["background", "red",
                                                                                          "green"]).eval()
    dm = blocks_dm(blocks, eval_size=24)
    dm.setup("validate")
    labelled = sum(int((read_index_mask(p) != 255).sum())
                   for p in sorted((blocks / "masks" / "val").glob("*.png")))
    quiet_trainer().validate(task, datamodule=dm, verbose=False)
    assert task.last_metrics["num_pixels"] == labelled
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape[-2:] == (24, 32) and tuple(targets[0]["mask"].shape) == (48, 64)


def test_ddp_scores_equal_single_process(trained, blocks, one_thread):
    """2 CPU processes (gloo) on 5 val images: the summed confusion matrix counts each image once (a padding
    DistributedSampler would count one twice), so mIoU, accuracies and loss equal the single process's."""
    task, _ = load_task(trained, SegmentationTask)
    dm = blocks_dm(blocks, eval_batch_size=2)
    ref = quiet_trainer().validate(task, datamodule=dm, verbose=False)[0]
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    got = ddp.validate(task, datamodule=dm, verbose=False)[0]
    for key in ("val/miou", "val/pixel_acc", "val/mean_acc", "val/loss"):
        assert got[key] == pytest.approx(ref[key], rel=1e-5), key


def test_resuming_on_other_classes_is_refused(trained, tmp_path):
    other = make_blocks_folder(tmp_path / "other")
    (other / "classes.txt").write_text("background\ncar\nroad\n")
    dm = blocks_dm(other)
    task = SegmentationTask("mobilenet_v2", 3, 48, width=0.35, head="lraspp", class_names=dm.class_names)
    with pytest.raises(ValueError, match="class_names"):
        quiet_trainer(max_epochs=30).fit(task, datamodule=dm, ckpt_path=trained, weights_only=True)


# -- eval, predict, export ---------------------------------------------------------------------------------
def test_eval_checkpoint_json_and_multi_scale(trained, tmp_path):
    out, grid = tmp_path / "stats.json", tmp_path / "grid.png"
    assert eval_main(["segmentation", "--checkpoint", str(trained), "--json-out", str(out), "--draw", str(grid),
                      "--draw-count", "3"]) == 0
    assert Image.open(grid).size[0] > 4 * 64  # 3 images x (ground truth, prediction), 4 tiles a row
    stats = json.loads(out.read_text())
    assert {"miou", "pixel_acc", "mean_acc", "per_class_iou"} <= set(stats)
    assert list(stats["per_class_iou"]) == ["background", "red", "green"] and stats["miou"] > 0.8
    mf = tmp_path / "mf.json"
    assert eval_main(["segmentation", "--checkpoint", str(trained), "--eval-scales", "0.75,1,1.25", "--flip",
                      "--json-out", str(mf)]) == 0
    assert json.loads(mf.read_text())["miou"] > 0.8


def test_predict_export_and_onnx_parity(trained, blocks, tmp_path, capsys):
    root = blocks
    onnx_path = tmp_path / "blocks.onnx"
    assert export_main(["--checkpoint", str(trained), "--output", str(onnx_path)]) == 0
    assert "onnxruntime (CPUExecutionProvider) vs torch" in capsys.readouterr().out
    # predictions of the checkpoint and of the ONNX file on the val images (48 x 64: letterboxed into 48 x 48)
    outs = {}
    for name, model in (("ckpt", trained), ("onnx", onnx_path)):
        outs[name] = tmp_path / f"pred_{name}"
        assert predict_main(["--model", str(model), "--source", str(root / "images" / "val"),
                             "--output", str(outs[name]), "--quiet"]) == 0
    masks = {k: {p.name: read_index_mask(p) for p in sorted((v / "masks").glob("*.png"))} for k, v in outs.items()}
    assert len(masks["ckpt"]) == 5 and masks["ckpt"].keys() == masks["onnx"].keys()
    for name, mask in masks["ckpt"].items():
        assert mask.shape == (48, 64)  # the image's own size
        assert (mask == masks["onnx"][name]).mean() > 0.99
    assert len(list((outs["ckpt"] / "overlays").glob("*.png"))) == 5
    rows = (outs["ckpt"] / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,frame,mask,classes" and len(rows) == 6
    # the written masks are what the model-free evaluation reads, and they score like the checkpoint evaluation
    out = tmp_path / "folder_stats.json"
    assert eval_main(["segmentation", "--predictions", str(outs["onnx"] / "masks"), "--ground-truth",
                      str(root / "masks" / "val"), "--num-classes", "3", "--json-out", str(out)]) == 0
    assert json.loads(out.read_text())["miou"] > 0.7


@pytest.fixture(scope="module")
def odd_sizes(tmp_path_factory) -> Path:
    """Blocks whose validation images differ in size and aspect from each other and from the 48 px training crop."""
    root = tmp_path_factory.mktemp("odd")
    for k, size in enumerate([(40, 100), (90, 52), (61, 61), (37, 83)]):
        part = make_blocks_folder(root / f"part{k}", n_train=1, n_val=2, val_size=size)
        for kind in ("images", "masks"):
            for split in ("train", "val"):
                (root / kind / split).mkdir(parents=True, exist_ok=True)
                for f in (part / kind / split).iterdir():
                    f.rename(root / kind / split / f"{k}_{f.name}")
    (root / "classes.txt").write_text("background\nred\ngreen\n")
    return root


def test_checkpoint_onnx_and_eval_give_one_miou_on_images_of_any_size(trained, odd_sizes, tmp_path):
    """``eval segmentation --checkpoint`` (at every batch size), ``predict`` with the checkpoint and ``predict`` with
    its ONNX file, scored by the model-free ``eval segmentation``, give one mIoU on images whose sizes and aspects
    differ from each other and from the training crop (the exported graph takes any size, as validation does)."""
    scores = {}
    for batch in ("1", "3", "8"):
        out = tmp_path / f"eval_{batch}.json"
        assert eval_main(["segmentation", "--checkpoint", str(trained), "--data-root", str(odd_sizes),
                          "--batch-size", batch, "--json-out", str(out)]) == 0
        scores[f"eval batch {batch}"] = json.loads(out.read_text())["miou"]
    onnx_path = tmp_path / "blocks.onnx"
    assert export_main(["--checkpoint", str(trained), "--output", str(onnx_path)]) == 0
    for name, model in (("predict ckpt", trained), ("predict onnx", onnx_path)):
        pred = tmp_path / name.replace(" ", "_")
        assert predict_main(["--model", str(model), "--source", str(odd_sizes / "images" / "val"),
                             "--output", str(pred), "--quiet"]) == 0
        out = tmp_path / f"{name.replace(' ', '_')}.json"
        assert eval_main(["segmentation", "--predictions", str(pred / "masks"), "--ground-truth",
                          str(odd_sizes / "masks" / "val"), "--num-classes", "3", "--json-out", str(out)]) == 0
        scores[name] = json.loads(out.read_text())["miou"]
    assert scores["eval batch 1"] > 0.6, scores  # a model that segments: the comparison bites
    for name in ("eval batch 3", "eval batch 8", "predict ckpt"):
        assert scores[name] == pytest.approx(scores["eval batch 1"], abs=1e-9), scores
    assert scores["predict onnx"] == pytest.approx(scores["eval batch 1"], abs=2e-3), scores


def test_predictor_maps_masks_back_to_each_image(trained):
    predictor = Predictor(trained)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (30, 90, 3), dtype=np.uint8), rng.integers(0, 255, (100, 40, 3), dtype=np.uint8)]
    results = predictor(images)
    assert [r["mask"].shape for r in results] == [(30, 90), (100, 40)]
    assert all(abs(sum(r["fractions"].values()) - 1.0) < 1e-6 for r in results)
    assert predictor.meta["task"] == "segmentation" and predictor.meta["class_names"] == ["background", "red", "green"]
