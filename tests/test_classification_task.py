"""ClassificationTask + CLI: every config fits, fine-tuning learns, metrics are right, checkpoints round-trip,
MobileOne folds without changing predictions, freezing and LR scaling do what they say, mobilevision eval works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from mobilevision.cli.train import CONFIG_DIR, expand_shortcuts, main
from mobilevision.data.classification import ClassificationDataModule
from mobilevision.cli.eval import main as eval_main
from mobilevision.evaluation.classification import (
    compute_classification_metrics,
    save_confusion_matrix_png,
    save_metrics_json,
)
from mobilevision.models import create_classifier
from mobilevision.tasks import ClassificationTask, load_task
from mobilevision.tasks._ema import EMAUpdate

from conftest import randomize_bn

CLASSIFICATION_CONFIGS = sorted((CONFIG_DIR / "classification").glob("*.yaml"))
COLORS = {"blue": (40, 60, 210), "green": (40, 190, 60), "red": (210, 40, 40)}


def make_color_folder(root: Path, mislabel_odd_val: bool = False, n_val: int = 4,
                      names: list[str] | None = None) -> Path:
    """ImageNet-style folder of 3 easily separable classes: noisy images of one colour each (8 train and
    ``n_val`` val per class). ``mislabel_odd_val``: val images 1, 3, ... of each class show the next class's colour.
    ``names``: other folder names for the three colours."""
    rng = np.random.default_rng(0)
    folders = dict(zip(sorted(COLORS), names or sorted(COLORS)))
    names = sorted(COLORS)
    for split, n in (("train", 8), ("val", n_val)):
        for k, name in enumerate(names):
            (root / split / folders[name]).mkdir(parents=True)
            for i in range(n):
                wrong = mislabel_odd_val and split == "val" and i % 2 == 1
                rgb = COLORS[names[(k + 1) % 3] if wrong else name]
                img = np.clip(np.array(rgb) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / folders[name] / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def color_folder(tmp_path_factory) -> Path:
    return make_color_folder(tmp_path_factory.mktemp("colors"))


def folder_dm(root: Path, image_size: int = 32, batch_size: int = 8, **kwargs) -> ClassificationDataModule:
    return ClassificationDataModule(dataset="folder", root=str(root), image_size=image_size, batch_size=batch_size,
                                    num_workers=0, augment="none", **kwargs)


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)


# -- configs through the CLI --------------------------------------------------------------------------------
def test_task_shortcut_picks_the_glyphs_config():
    task, args = expand_shortcuts(["--task", "classification", "--backbone", "mobileone_s0"])
    assert task == "classification"
    assert args[:3] == ["fit", "--config", str(CONFIG_DIR / "classification/glyphs.yaml")]
    assert args[-6:-4] == ["--model.init_args.backbone", "mobileone_s0"]
    cifar = str(CONFIG_DIR / "classification/cifar10_efficientnet_b0.yaml")
    task, _ = expand_shortcuts(["validate", "--config", cifar])
    assert task == "classification"


@pytest.mark.parametrize("config", CLASSIFICATION_CONFIGS, ids=lambda p: p.stem)
def test_every_config_fits(config, color_folder, tmp_path, one_thread):
    cli = main(["fit", "--config", str(config),
                "--data.init_args.dataset", "folder", "--data.init_args.root", str(color_folder),
                "--data.init_args.image_size", "64", "--data.init_args.batch_size", "2",
                "--data.init_args.num_workers", "0",
                "--model.init_args.backbone_weights", "null", "--trainer.fast_dev_run", "1",
                "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.sync_batchnorm", "false",
                "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path)])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and 0 <= float(metrics["val/acc1"]) <= 1
    assert float(metrics["val/acc5"]) == 1.0  # top-min(5, 3) of 3 classes
    # the data module's classes were linked into the model
    hp = cli.model.hparams
    assert hp.num_classes == 3 and list(hp.class_names) == sorted(COLORS) and hp.image_size == 64


# -- metrics ------------------------------------------------------------------------------------------------
def test_metrics_match_a_hand_computed_case(tmp_path):
    # 6 classes; every row a permutation of scores, so each label's rank is known
    def row(order):  # class indices from best to worst
        r = torch.empty(6)
        r[torch.tensor(order)] = torch.arange(6, 0, -1, dtype=torch.float)
        return r

    logits = torch.stack([
        row([0, 1, 2, 3, 4, 5]),  # label 0: top-1 right
        row([2, 1, 0, 3, 4, 5]),  # label 1: predicted 2, label 2nd (in top-5)
        row([2, 0, 1, 3, 4, 5]),  # label 2: right
        row([1, 2, 3, 4, 5, 0]),  # label 0: predicted 1, label last (outside top-5)
        row([1, 0, 2, 3, 4, 5]),  # label 1: right
    ])
    labels = torch.tensor([0, 1, 2, 0, 1])
    names = ["a", "b", "c", "d", "e", "f"]
    stats = compute_classification_metrics(logits, labels, class_names=names)
    assert stats["acc1"] == pytest.approx(3 / 5) and stats["acc5"] == pytest.approx(4 / 5) and stats["top_k"] == 5
    assert stats["per_class"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 1.0, "d": None, "e": None, "f": None})
    assert stats["support"] == {"a": 2, "b": 2, "c": 1, "d": 0, "e": 0, "f": 0}
    assert stats["acc_mean_class"] == pytest.approx(2 / 3) and stats["num_samples"] == 5
    expected = torch.zeros(6, 6, dtype=torch.long)
    for t, p in [(0, 0), (1, 2), (2, 2), (0, 1), (1, 1)]:
        expected[t, p] += 1
    assert stats["confusion_matrix"] == expected.tolist()
    # fewer classes than 5: top-k becomes top-num_classes, always right
    small = compute_classification_metrics(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([0, 0]))
    assert small["top_k"] == 2 and small["acc5"] == 1.0 and small["acc1"] == 0.5
    # serialization: strict JSON (no NaN) and a picture
    save_metrics_json(stats, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["per_class"]["d"] is None
    png = save_confusion_matrix_png(stats["confusion_matrix"], names, tmp_path / "cm.png")
    assert Image.open(png).size[0] > 100


def test_ema_update_rule():
    update = EMAUpdate(0.99)
    assert update.decay_at(0) == pytest.approx(0.1) and update.decay_at(10_000) == 0.99
    avg, cur = [torch.zeros(3), torch.tensor([1])], [torch.ones(3), torch.tensor([5])]
    update(avg[:1], cur[:1], torch.tensor(1))  # decay 2/11
    assert torch.allclose(avg[0], torch.full((3,), 9 / 11))
    update(avg[1:], cur[1:], torch.tensor(1))  # integer buffers follow the model
    assert avg[1].item() == 5


# -- training -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finetuned(color_folder, tmp_path_factory):
    """Fine-tune an 'ImageNet' MobileNetV1-0.25 (1000 classes) on the colour folder, with an EMA of the weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("finetune")
    pl.seed_everything(0)
    weights = root / "mobilenet_v1_imagenet.pth"
    torch.save(create_classifier("mobilenet_v1", 1000, width=0.25).state_dict(), weights)
    dm = folder_dm(color_folder)
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=dm.num_classes,
                              class_names=list(dm.class_names), image_size=32, backbone_weights=str(weights),
                              optimizer="adamw", lr=1e-2, weight_decay=0.0, warmup=0.05, ema_decay=0.9)
    before = quiet_trainer().validate(task, datamodule=dm, verbose=False)[0]["val/acc1"]
    # ~120 steps: BatchNorm running variances start at 1 and must decay (momentum 0.1) to the tiny variances
    # of these nearly uniform images before eval-mode predictions mean anything
    trainer = quiet_trainer(max_epochs=40, default_root_dir=root, num_sanity_val_steps=0, check_val_every_n_epoch=20)
    trainer.fit(task, datamodule=dm)
    after = trainer.callback_metrics["val/acc1"].item()
    ckpt = Path(trainer.checkpoint_callback.best_model_path)  # saved at the end of the last epoch, during fit
    torch.set_num_threads(threads)
    return task, dm, ckpt, before, after


def test_finetuning_learns_separable_classes(finetuned):
    task, _, _, before, after = finetuned
    assert before < 0.6, before  # ~chance (1/3) with a fresh classifier layer
    assert after > 0.9, after


def test_checkpoint_round_trip_and_ema(finetuned):
    task, dm, ckpt, _, _ = finetuned
    loaded, raw = load_task(ckpt, ClassificationTask)
    assert raw["datamodule_hyper_parameters"]["root"] == dm.hparams.root
    assert loaded.hparams.class_names == sorted(COLORS) and loaded.hparams.backbone_weights is None
    dm.setup("validate")
    images, _ = next(iter(dm.val_dataloader()))
    task.eval()
    with torch.no_grad():
        assert torch.equal(task(images), loaded(images))
    # EMA: the checkpoint's weights are the average (what fit leaves in the task), the raw training weights
    # are kept beside them for resuming
    key = "model.fc.weight"
    assert torch.equal(raw["state_dict"][key], task.state_dict()[key])
    assert not torch.equal(raw["state_dict"][key], raw["current_model_state"][key])


def test_eval_cli_writes_json_and_confusion_matrix(finetuned, tmp_path):
    task, _, ckpt, _, after = finetuned
    out, png = tmp_path / "stats.json", tmp_path / "cm.png"
    assert eval_main(["classification", "--checkpoint", str(ckpt), "--json-out", str(out),
                      "--confusion-png", str(png), "--batch-size", "4", "--num-workers", "0"]) == 0
    stats = json.loads(out.read_text())
    assert {"acc1", "acc5", "acc_mean_class", "per_class", "support", "confusion_matrix"} <= set(stats)
    assert set(stats["per_class"]) == set(COLORS) and stats["num_samples"] == 12
    assert stats["acc1"] == pytest.approx(after, abs=1e-6)
    assert sum(map(sum, stats["confusion_matrix"])) == 12
    assert Image.open(png).size[0] > 100
    # a data set with other classes is refused
    for split in ("train", "val"):
        for name in ("cyan", "magenta", "yellow"):
            (tmp_path / "other" / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "other" / split / name / "0.png")
    assert eval_main(["classification", "--checkpoint", str(ckpt), "--data-dataset", "folder",
                      "--data-root", str(tmp_path / "other"), "--num-workers", "0"]) == 2


def test_mobileone_folded_evaluation_matches_unfolded(color_folder, one_thread):
    dm = folder_dm(color_folder, image_size=32, batch_size=12)
    task = ClassificationTask(backbone="mobileone_s0", num_classes=3, class_names=list(dm.class_names), image_size=32)
    randomize_bn(task.model, seed=1)
    task.eval()
    dm.setup("validate")
    images, _ = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        folded = task.eval_model()
        assert folded is not task.model and not any(m.branches for m in folded.modules() if hasattr(m, "branches"))
        a, b = task.model(images), folded(images)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    assert torch.equal(a.argmax(1), b.argmax(1))
    class WhichNetwork(pl.Callback):
        def on_validation_batch_start(self, trainer, pl_module, *args):
            used.append(pl_module.eval_model() is not pl_module.model)

    results = {}
    for fold in (True, False):
        task.hparams.eval_folded = fold
        used: list[bool] = []
        results[fold] = quiet_trainer(callbacks=[WhichNetwork()]).validate(task, datamodule=dm, verbose=False)[0]
        assert used == [fold]  # one batch, run by the folded copy or by the training network
    assert results[True]["val/acc1"] == results[False]["val/acc1"]
    assert results[True]["val/loss"] == pytest.approx(results[False]["val/loss"], rel=1e-4)
    # the cached folded copy is no submodule: the state dict is the training network's
    assert all(k.startswith("model.") for k in task.state_dict())
    assert task.export_model().training is False


def _random_loader(n: int = 8, size: int = 32, classes: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=4)


def test_freeze_backbone_trains_only_the_head(one_thread):
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, freeze_backbone=True,
                              optimizer="sgd", lr=0.5, warmup=0.0)
    backbone = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}  # BN statistics included
    fc = task.model.fc.weight.detach().clone()
    quiet_trainer(max_steps=2, enable_checkpointing=False).fit(task, train_dataloaders=_random_loader())
    for k, v in task.model.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    assert not torch.equal(task.model.fc.weight, fc)
    opt = task.configure_optimizers()["optimizer"]
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in task.model.fc.parameters()}


def test_backbone_lr_scale_sets_group_learning_rates():
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, lr=0.2, backbone_lr_scale=0.1,
                              warmup=0.0)
    opt = task.configure_optimizers()["optimizer"]
    backbone = {id(p) for p in task.model.backbone.parameters()}
    seen = set()
    for group in opt.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all head
        expected = 0.02 if in_backbone.pop() else 0.2
        assert group["initial_lr"] == pytest.approx(expected) and group["lr"] == pytest.approx(expected)
        seen |= {id(p) for p in group["params"]}
    assert seen == {id(p) for p in task.parameters()}


def test_predict_returns_probabilities(finetuned):
    task, dm, _, _, after = finetuned
    batches = quiet_trainer().predict(task, datamodule=dm)
    probs = torch.cat([b["probs"] for b in batches])
    labels, targets = torch.cat([b["labels"] for b in batches]), torch.cat([b["targets"] for b in batches])
    assert probs.shape == (12, 3) and torch.allclose(probs.sum(1), torch.ones(12))
    assert torch.equal(labels, probs.argmax(1))
    assert (labels == targets).float().mean().item() == pytest.approx(after)


def test_ddp_validation_accuracy_equals_single_process(finetuned, tmp_path):
    """2 CPU processes (gloo) on an odd number of val images: the metrics count every image exactly once, over
    both processes (not rank 0's alone, and not the image a padding DistributedSampler would repeat)."""
    task, _, _, _, _ = finetuned
    # 9 val images: blue 0-2, green 3-5, red 6-8, the middle one of each class mislabelled (6/9 right). Rank 0
    # evaluates 5 images in 3 batches, rank 1 4 images in 2 batches; padding would add image 0 (right): 7/10.
    dm = folder_dm(make_color_folder(tmp_path / "mixed", mislabel_odd_val=True, n_val=3), batch_size=2)
    ref = quiet_trainer().validate(task, datamodule=dm, verbose=False)[0]
    assert ref["val/acc1"] == pytest.approx(6 / 9), "vacuous comparison: the fine-tuned model is not perfect"
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    got = ddp.validate(task, datamodule=dm, verbose=False)[0]
    for key in ("val/acc1", "val/acc5", "val/acc_mean_class", "val/loss"):
        assert got[key] == pytest.approx(ref[key], rel=1e-5), key


def test_resuming_on_other_classes_is_refused(finetuned, tmp_path):
    _, _, ckpt, _, _ = finetuned  # trained on blue / green / red
    other = folder_dm(make_color_folder(tmp_path / "other", names=["cyan", "magenta", "yellow"]))
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=other.num_classes,
                              class_names=list(other.class_names), image_size=32)
    with pytest.raises(ValueError, match=r"trained with class_names=\['blue', 'green', 'red'\] but the data module "
                                         r"has class_names=\['cyan', 'magenta', 'yellow'\]"):
        quiet_trainer(max_epochs=50).fit(task, datamodule=other, ckpt_path=ckpt, weights_only=True)


class RecordWeightsAtTrainStart(pl.Callback):
    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def test_backbone_weights_load_only_when_a_fit_starts_from_scratch(color_folder, tmp_path, one_thread):
    """A fresh fit starts from the weights file; resuming, load_from_checkpoint and validating a checkpoint need
    no weights file (the checkpoint holds every weight)."""
    weights = tmp_path / "imagenet.pth"
    torch.save(create_classifier("mobilenet_v1", 1000, width=0.25).state_dict(), weights)
    expected = torch.load(weights, weights_only=True)
    dm = folder_dm(color_folder)
    kwargs = dict(backbone="mobilenet_v1", width=0.25, num_classes=3, class_names=list(dm.class_names),
                  image_size=32, backbone_weights=str(weights), optimizer="adamw", lr=1e-3)
    task = ClassificationTask(**kwargs)
    probe = RecordWeightsAtTrainStart()
    trainer = quiet_trainer(max_steps=2, num_sanity_val_steps=0, limit_val_batches=0, enable_checkpointing=False,
                            callbacks=[probe])
    trainer.fit(task, datamodule=dm)
    backbone = [k for k in expected if k.startswith("backbone.")]
    assert backbone and all(torch.equal(probe.state[k], expected[k]) for k in backbone)
    assert probe.state["fc.weight"].shape == (3, expected["fc.weight"].shape[1])  # 1000 -> 3 classes: fresh fc
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    weights.unlink()

    resumed = quiet_trainer(max_steps=4, num_sanity_val_steps=0, limit_val_batches=0, enable_checkpointing=False)
    resumed.fit(ClassificationTask(**kwargs), datamodule=dm, ckpt_path=ckpt, weights_only=True)
    assert resumed.global_step == 4
    loaded = ClassificationTask.load_from_checkpoint(ckpt, weights_only=True)
    assert torch.equal(loaded.model.fc.weight, task.model.fc.weight)
    metrics = quiet_trainer().validate(ClassificationTask(**kwargs), datamodule=dm, ckpt_path=ckpt,
                                       weights_only=True, verbose=False)[0]
    assert 0 <= metrics["val/acc1"] <= 1
    with pytest.raises(FileNotFoundError, match="imagenet.pth"):  # a fresh fit does need the file
        quiet_trainer(max_steps=1, enable_checkpointing=False).fit(ClassificationTask(**kwargs), datamodule=dm)
