"""DetectionTask + CLI: every config fits, checkpoints round-trip safely, DDP gathers mAP correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mobilevision.cli.train import CONFIG_DIR, expand_shortcuts, main
from mobilevision.data import CocoDetectionDataModule, ensure_shapes_dataset
from mobilevision.cli.eval import main as eval_main
from mobilevision.models import create_classifier
from mobilevision.tasks import DetectionTask, load_task

SSDLITE_CONFIGS = sorted((CONFIG_DIR / "ssdlite").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shapes")
    return ensure_shapes_dataset(root, num_train=8, num_val=5, image_size=96, seed=1)


def data_args(paths: dict, batch_size: int = 2) -> list[str]:
    return ["--data.init_args.train_images", str(paths["train_images"]),
            "--data.init_args.train_annotations", str(paths["train_annotations"]),
            "--data.init_args.val_images", str(paths["val_images"]),
            "--data.init_args.val_annotations", str(paths["val_annotations"]),
            "--data.init_args.image_size", "96", "--data.init_args.batch_size", str(batch_size),
            "--data.init_args.num_workers", "0"]


def test_shortcuts_expand_to_lightning_arguments():
    task, args = expand_shortcuts(["--task", "ssdlite", "--backbone", "mobilenet_v1", "--trainer.max_epochs=3"])
    assert task == "ssdlite"
    assert args[:3] == ["fit", "--config", str(CONFIG_DIR / "ssdlite/shapes.yaml")]
    assert args[-6:-4] == ["--model.init_args.backbone", "mobilenet_v1"] and "--trainer.max_epochs=3" in args
    # a user config replaces the default one, and names the task through its model class
    cfg = str(CONFIG_DIR / "ssdlite/coco_mobilenet_v2.yaml")
    task, args = expand_shortcuts(["validate", "--config", cfg])
    assert task == "ssdlite" and args == ["validate", "--config", cfg]
    with pytest.raises(SystemExit, match="unknown task"):
        expand_shortcuts(["--task", "depth"])


@pytest.mark.parametrize("config", SSDLITE_CONFIGS, ids=lambda p: p.stem)
def test_every_config_fits(config, tiny_shapes, tmp_path):
    cli = main(["fit", "--config", str(config), *data_args(tiny_shapes),
                "--model.init_args.backbone_weights", "null", "--trainer.fast_dev_run", "1",
                "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.sync_batchnorm", "false",
                "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path)])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and 0 <= float(metrics["val/map"]) <= 1
    # the data module's categories were linked into the model
    assert cli.model.hparams.num_classes == 5 and cli.model.hparams.label_to_category_id == [1, 3, 7, 11, 20]


def _train_tiny(paths: dict, root: Path, steps: int = 30) -> tuple[pl.Trainer, DetectionTask, CocoDetectionDataModule]:
    pl.seed_everything(0)
    dm = CocoDetectionDataModule(paths["train_images"], paths["train_annotations"], paths["val_images"],
                                 paths["val_annotations"], image_size=96, batch_size=4, num_workers=0, augment="flip")
    task = DetectionTask(backbone="mobilenet_v2", width=0.35, num_classes=dm.num_classes, image_size=96,
                         optimizer="adamw", lr=3e-3, weight_decay=0.0, label_to_category_id=dm.label_to_category_id)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, num_sanity_val_steps=0,
                         check_val_every_n_epoch=1000)
    trainer.fit(task, datamodule=dm)
    return trainer, task, dm


@pytest.fixture(scope="module")
def trained(tiny_shapes, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    trainer, task, dm = _train_tiny(tiny_shapes, root, steps=60)
    ckpt = root / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    return task, dm, ckpt


def test_checkpoint_round_trip(trained):
    task, dm, ckpt = trained
    loaded, raw = load_task(ckpt, DetectionTask)
    assert raw["datamodule_hyper_parameters"]["val_annotations"] == dm.hparams.val_annotations
    dm.setup("validate")
    images, _ = next(iter(dm.val_dataloader()))
    task.eval()
    with torch.no_grad():
        a, b = task.model.predict(images), loaded.model.predict(images)
    for da, db in zip(a, b):
        assert torch.equal(da["boxes"], db["boxes"]) and torch.equal(da["labels"], db["labels"])


def test_bad_checkpoints_are_clear_errors(trained, tmp_path):
    _, _, ckpt = trained
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_task(tmp_path / "missing.ckpt", DetectionTask)
    weights_only = tmp_path / "weights.pth"
    torch.save(DetectionTask(num_classes=3, width=0.35).state_dict(), weights_only)
    with pytest.raises(ValueError, match="weights.pth is not a mobilevision training checkpoint"):
        load_task(weights_only, DetectionTask)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.ckpt"):
        load_task(corrupt, DetectionTask)
    # a pickled object that weights_only refuses: never executed
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Path("/")}}, evil)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_task(evil, DetectionTask)
    # hyper-parameters of the right task but another architecture
    raw = torch.load(ckpt, weights_only=True)
    raw["hyper_parameters"]["backbone"] = "mobilenet_v1"
    other = tmp_path / "other.ckpt"
    torch.save(raw, other)
    with pytest.raises(ValueError, match="other.ckpt does not match DetectionTask"):
        load_task(other, DetectionTask)


def test_eval_cli_on_checkpoint_writes_stats_and_picture(trained, tmp_path):
    _, dm, ckpt = trained
    out, png = tmp_path / "metrics.json", tmp_path / "pred.png"
    assert eval_main(["coco", "--checkpoint", str(ckpt), "--json-out", str(out), "--draw", str(png),
                      "--results-out", str(tmp_path / "dt.json"), "--draw-count", "3"]) == 0
    stats = json.loads(out.read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
            "per_category"} <= set(stats)
    # the results JSON evaluated on its own gives the same numbers
    assert eval_main(["coco", "--annotations", dm.hparams.val_annotations, "--results", str(tmp_path / "dt.json"),
                      "--json-out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["AP"] == pytest.approx(stats["AP"], abs=1e-9)
    from PIL import Image

    assert Image.open(png).size[0] > 96


def test_ddp_validation_map_equals_single_process(trained):
    """2 CPU processes (gloo): predictions are gathered, DistributedSampler padding is dropped."""
    task, dm, _ = trained
    task.model.score_thresh = 0.0  # keep every candidate: non-trivial numbers that depend on every image
    single = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    ref = single.validate(task, datamodule=dm, verbose=False)[0]
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    got = ddp.validate(task, datamodule=dm, verbose=False)[0]
    task.model.score_thresh = 0.01
    assert ref["val/mar_100"] > 0 and ref["val/map"] > 0, "vacuous comparison: the tiny model found nothing"
    for key in ("val/map", "val/map_50", "val/mar_100"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_resume_from_checkpoint_loads_weights_only(tiny_shapes, tmp_path):
    common = ["--config", str(CONFIG_DIR / "ssdlite/shapes.yaml"), *data_args(tiny_shapes),
              "--model.init_args.width", "0.35", "--trainer.max_time", "null", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path), "--checkpoint.dirpath", str(tmp_path / "ckpt"),
              "--trainer.check_val_every_n_epoch", "1"]
    first = main(["fit", *common, "--trainer.max_epochs", "1"])
    assert first.trainer.global_step == 4 and (tmp_path / "ckpt/last.ckpt").is_file()
    resumed = main(["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", str(tmp_path / "ckpt/last.ckpt")])
    assert resumed.config_init["fit"]["weights_only"] is True
    assert resumed.trainer.global_step == 8 and resumed.trainer.current_epoch == 2


def test_validate_with_dataloaders_and_no_data_module(trained, tiny_shapes):
    """``trainer.validate(task, dataloaders=...)``: the COCO ground truth comes from the loader's dataset; the same
    mAP as through the data module."""
    from torch.utils.data import DataLoader

    from mobilevision.data import CocoDetection, detection_collate, detection_eval_transforms

    task = trained[0] if isinstance(trained, tuple) else trained
    dm = CocoDetectionDataModule(**{k: tiny_shapes[k] for k in ("train_images", "train_annotations", "val_images",
                                                                "val_annotations")},
                                 image_size=96, batch_size=2, num_workers=0)
    def trainer():  # a fresh one each time: a Trainer keeps the data module of its last call
        return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False)

    ref = trainer().validate(task, datamodule=dm, verbose=False)[0]
    dataset = CocoDetection(tiny_shapes["val_images"], tiny_shapes["val_annotations"],
                            transforms=detection_eval_transforms(96))
    loader = DataLoader(dataset, batch_size=2, collate_fn=detection_collate)
    got = trainer().validate(task, dataloaders=loader, verbose=False)[0]
    assert ref["val/map_50"] > 0, "vacuous comparison"
    assert got["val/map"] == pytest.approx(ref["val/map"]) and got["val/map_50"] == pytest.approx(ref["val/map_50"])
    with pytest.raises(ValueError, match="COCO ground truth"):
        trainer().validate(task, dataloaders=DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 3, 96, 96))),
                           verbose=False)


def test_predict_maps_labels_back_to_category_ids(trained):
    task, dm, _ = trained
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    batches = trainer.predict(task, datamodule=dm)
    detections = [d for batch in batches for d in batch]
    assert len(detections) == 5
    # the shapes dataset's non-contiguous COCO category ids, in label order (sorted by id)
    category_id = {0: 1, 1: 3, 2: 7, 3: 11, 4: 20}
    seen = set()
    for det in detections:
        assert det["category_ids"].tolist() == [category_id[label] for label in det["labels"].tolist()]
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, 2:] <= 96 + 1e-4).all()
        seen |= set(det["labels"].tolist())
    assert len(seen) >= 3, "vacuous: the tiny model predicts too few classes to check the mapping"


def _relabelled(paths: dict, root: Path, old_id: int = 20, new_id: int = 21) -> dict:
    """The same images, with category ``old_id`` renumbered ``new_id`` in both annotation files."""
    out = dict(paths)
    for split in ("train", "val"):
        coco = json.loads(Path(paths[f"{split}_annotations"]).read_text())
        for category in coco["categories"]:
            category["id"] = new_id if category["id"] == old_id else category["id"]
        for ann in coco["annotations"]:
            ann["category_id"] = new_id if ann["category_id"] == old_id else ann["category_id"]
        out[f"{split}_annotations"] = str(root / f"{split}.json")
        Path(out[f"{split}_annotations"]).write_text(json.dumps(coco))
    return out


def test_resuming_on_other_categories_is_refused(trained, tiny_shapes, tmp_path):
    _, _, ckpt = trained  # category ids [1, 3, 7, 11, 20]
    paths = _relabelled(tiny_shapes, tmp_path)
    dm = CocoDetectionDataModule(paths["train_images"], paths["train_annotations"], paths["val_images"],
                                 paths["val_annotations"], image_size=96, batch_size=4, num_workers=0)
    assert dm.label_to_category_id == [1, 3, 7, 11, 21]
    task = DetectionTask(backbone="mobilenet_v2", width=0.35, num_classes=dm.num_classes, image_size=96,
                         label_to_category_id=dm.label_to_category_id, category_names=dm.category_names)
    trainer = pl.Trainer(accelerator="cpu", max_steps=100, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"trained with label_to_category_id=\[1, 3, 7, 11, 20\] but the data module "
                                         r"has label_to_category_id=\[1, 3, 7, 11, 21\]"):
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt, weights_only=True)


def test_backbone_weights_load_only_when_a_fit_starts_from_scratch(tiny_shapes, tmp_path):
    """A fresh fit starts from the ImageNet file; resuming, load_from_checkpoint and validating a checkpoint do
    not need it."""
    weights = tmp_path / "imagenet.pth"
    torch.save(create_classifier("mobilenet_v2", 1000, width=0.35).state_dict(), weights)
    expected = torch.load(weights, weights_only=True)
    dm = CocoDetectionDataModule(tiny_shapes["train_images"], tiny_shapes["train_annotations"],
                                 tiny_shapes["val_images"], tiny_shapes["val_annotations"], image_size=96,
                                 batch_size=4, num_workers=0)
    kwargs = dict(backbone="mobilenet_v2", width=0.35, num_classes=dm.num_classes, image_size=96,
                  backbone_weights=str(weights), label_to_category_id=dm.label_to_category_id)
    seen = {}

    class Probe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.update({k: v.detach().clone() for k, v in pl_module.model.backbone.state_dict().items()})

    quiet = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                 enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer = pl.Trainer(max_steps=1, callbacks=[Probe()], **quiet)
    trainer.fit(DetectionTask(**kwargs), datamodule=dm)
    assert seen and all(torch.equal(v, expected[f"backbone.{k}"]) for k, v in seen.items())
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    weights.unlink()

    resumed = pl.Trainer(max_steps=2, **quiet)
    resumed.fit(DetectionTask(**kwargs), datamodule=dm, ckpt_path=ckpt, weights_only=True)
    assert resumed.global_step == 2
    loaded = DetectionTask.load_from_checkpoint(ckpt, weights_only=True)
    assert loaded.hparams.backbone_weights == str(weights)
    quiet["limit_val_batches"] = 1
    pl.Trainer(**quiet).validate(DetectionTask(**kwargs), datamodule=dm, ckpt_path=ckpt, weights_only=True,
                                 verbose=False)


def test_non_finite_loss_names_the_step_and_the_terms(tiny_shapes, tmp_path):
    dm = CocoDetectionDataModule(tiny_shapes["train_images"], tiny_shapes["train_annotations"],
                                 tiny_shapes["val_images"], tiny_shapes["val_annotations"], image_size=96,
                                 batch_size=4, num_workers=0)
    task = DetectionTask(backbone="mobilenet_v2", width=0.35, num_classes=dm.num_classes, image_size=96)

    class CorruptSecondBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                batch[0].fill_(float("nan"))

    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                         callbacks=[CorruptSecondBatch()])
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 1 \(epoch 0\): "
                                                 r"loss=nan, loss_cls=nan, loss_box=nan"):
        trainer.fit(task, datamodule=dm)
