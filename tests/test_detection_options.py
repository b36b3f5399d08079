"""DetectionTask on the BackboneTask base: MobileOne folded evaluation, frozen backbone, backbone learning-rate
scale, EMA of the weights, and checkpoints written before these options existed."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from mobilevision.data import CocoDetectionDataModule, ensure_shapes_dataset
from mobilevision.layers.mobileone import MobileOneBlock, reparameterize_model
from mobilevision.tasks import DetectionTask, load_task
from mobilevision.tasks._ema import EMA

NEW_OPTIONS = ("freeze_backbone", "backbone_lr_scale", "ema_decay", "eval_folded")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    return ensure_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, image_size=64, seed=2)


def make_dm(paths: dict, batch_size: int = 4) -> CocoDetectionDataModule:
    return CocoDetectionDataModule(paths["train_images"], paths["train_annotations"], paths["val_images"],
                                   paths["val_annotations"], image_size=64, batch_size=batch_size, num_workers=0,
                                   augment="flip")


def make_task(dm: CocoDetectionDataModule, backbone: str = "mobilenet_v2", **kwargs) -> DetectionTask:
    width = None if backbone.startswith("mobileone") else 0.35
    return DetectionTask(backbone=backbone, width=width, num_classes=dm.num_classes, image_size=64,
                         label_to_category_id=dm.label_to_category_id, **kwargs)


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(**{"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                         "enable_model_summary": False, "enable_checkpointing": False, **kwargs})


@torch.no_grad()
def calibrate_bn(model: nn.Module, images: torch.Tensor) -> None:
    """Random BatchNorm affine parameters and the statistics of ``images``: non-trivial, yet activations stay sane."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running stats = this batch's
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    model.train()(images)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1


def test_mobileone_validation_runs_a_folded_network_with_the_same_outputs(shapes, one_thread):
    dm = make_dm(shapes)
    task = make_task(dm, "mobileone_s0", score_thresh=0.0)
    dm.setup("fit")
    calibrate_bn(task.model, next(iter(dm.train_dataloader()))[0])  # statistics for folding to fold in
    used: list[nn.Module] = []

    class WhichNetwork(pl.Callback):
        def on_validation_batch_start(self, trainer, pl_module, *args):
            used.append(pl_module.eval_model())

    ran: list[nn.Module] = []  # the networks whose forward ran (a copy of the network carries the hook along)
    hook = task.model.register_forward_hook(lambda module, args, out: ran.append(module))
    results = {}
    for fold in (True, False):
        task.hparams.eval_folded = fold
        used.clear()
        ran.clear()
        results[fold] = quiet_trainer(callbacks=[WhichNetwork()]).validate(task, datamodule=dm, verbose=False)[0]
        assert len(used) == 1 and (used[0] is not task.model) == fold  # one batch: the folded copy or the network
        assert ran == used
        if fold:
            folded = used[0]
    hook.remove()
    # the network evaluated has no train-time branches and no BatchNorm left in the backbone
    blocks = [m for m in folded.modules() if isinstance(m, MobileOneBlock)]
    assert blocks and all(len(m.branches) == 0 and m.scale is None and m.skip is None for m in blocks)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.backbone.modules())
    # validation loss and mAP of the folded network equal the branched network's
    assert results[True]["val/loss"] == pytest.approx(results[False]["val/loss"], rel=1e-4)
    assert results[True]["val/map"] == pytest.approx(results[False]["val/map"], abs=1e-3)
    # raw outputs, loss and detections against the training network in eval mode, on the same batch
    dm.setup("validate")
    images, targets = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        ref, got = task.model.eval()(images), folded(images)
        for key in ("cls_logits", "bbox_regression"):  # float32 rounding: ~1e-4 of the largest output here
            assert torch.allclose(got[key], ref[key], rtol=1e-3, atol=1e-3 * ref[key].abs().max().item()), key
        ref_loss, got_loss = task.model.compute_loss(ref, targets), folded.compute_loss(got, targets)
        assert got_loss["loss"].item() == pytest.approx(ref_loss["loss"].item(), rel=1e-4)
        for r, g in zip(*(task.model.postprocess(out, detections_per_img=20) for out in (ref, got))):
            assert torch.allclose(g["scores"], r["scores"], rtol=1e-3, atol=1e-5)
        # in float64 folding is exact: the same detections
        net64 = copy.deepcopy(task.model).double()
        ref64, got64 = net64(images.double()), reparameterize_model(net64)(images.double())
        for key in ("cls_logits", "bbox_regression"):
            assert torch.allclose(got64[key], ref64[key], rtol=1e-9, atol=1e-9), key
        for r, g in zip(*(net64.postprocess(out, detections_per_img=20) for out in (ref64, got64))):
            assert len(r["scores"]) == 20 and torch.equal(g["labels"], r["labels"])
            assert torch.allclose(g["boxes"], r["boxes"], atol=1e-6) and torch.allclose(g["scores"], r["scores"])
    # the deployable copy is folded and in eval mode; the cached folded copy is no submodule
    export = task.export_model()
    assert not export.training and all(len(m.branches) == 0 for m in export.modules() if isinstance(m, MobileOneBlock))
    assert all(k.startswith("model.") for k in task.state_dict())


def test_freeze_backbone_trains_only_the_extras_and_head(shapes, one_thread):
    dm = make_dm(shapes)
    task = make_task(dm, freeze_backbone=True, optimizer="sgd", lr=0.5, warmup=0.0)
    backbone = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}  # BN statistics included
    rest = {k: v.clone() for k, v in task.model.state_dict().items() if not k.startswith("backbone.")}
    quiet_trainer(max_steps=2, limit_val_batches=0).fit(task, datamodule=dm)
    for k, v in task.model.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    now = task.model.state_dict()
    for part in ("extras.", "head."):
        changed = [k for k in rest if k.startswith(part) and not torch.equal(now[k], rest[k])]
        assert changed, f"nothing in {part} trained"
    opt = task.configure_optimizers()["optimizer"]
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for name, p in task.model.named_parameters() if not name.startswith("backbone.")}


def test_backbone_lr_scale_sets_group_learning_rates(shapes):
    dm = make_dm(shapes)
    task = make_task(dm, lr=0.2, backbone_lr_scale=0.1, warmup=0.0)
    opt = task.configure_optimizers()["optimizer"]
    backbone = {id(p) for p in task.model.backbone.parameters()}
    seen = set()
    for group in opt.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all extras / head
        expected = 0.02 if in_backbone.pop() else 0.2
        assert group["initial_lr"] == pytest.approx(expected) and group["lr"] == pytest.approx(expected)
        seen |= {id(p) for p in group["params"]}
    assert seen == {id(p) for p in task.parameters()}
    # at scale 1 the network keeps its single pair of groups (decay / no decay), as before the option existed
    opt = make_task(dm, lr=0.2, warmup=0.0).configure_optimizers()["optimizer"]
    assert [g["weight_decay"] for g in opt.param_groups] == [4e-5, 0.0]
    assert all(g["lr"] == pytest.approx(0.2) for g in opt.param_groups)


def test_ema_weights_are_the_hand_computed_average(shapes, one_thread):
    """TF-style EMA with decay warm-up: e_1 = w_1, e_k = d_k e_{k-1} + (1 - d_k) w_k, d_k = min(decay, k / (9 + k))."""
    dm = make_dm(shapes)
    decay, steps = 0.25, 4
    task = make_task(dm, optimizer="adamw", lr=1e-2, weight_decay=0.0, warmup=0.0, ema_decay=decay)
    raw: list[dict[str, torch.Tensor]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            raw.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(task, datamodule=dm)
    assert any(isinstance(cb, EMA) for cb in trainer.callbacks) and len(raw) == steps
    expected = dict(raw[0])
    for k in range(2, steps + 1):
        d = min(decay, k / (9 + k))
        w = raw[k - 1]
        expected = {n: (d * e + (1 - d) * w[n]) if e.is_floating_point() else w[n] for n, e in expected.items()}
    now = task.model.state_dict()
    for n, e in expected.items():
        assert torch.allclose(now[n], e, rtol=1e-5, atol=1e-6), n
    key = next(n for n, v in raw[-1].items() if n.startswith("head.") and not torch.equal(v, raw[0][n]))
    assert not torch.allclose(now[key], raw[-1][key])  # the average, not the last training weights


def test_checkpoint_without_the_new_hyper_parameters_loads_with_defaults(shapes, tmp_path):
    dm = make_dm(shapes)
    task = make_task(dm)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    ckpt = tmp_path / "old.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    for name in NEW_OPTIONS:  # as written before DetectionTask had these options
        raw["hyper_parameters"].pop(name)
    torch.save(raw, ckpt)
    loaded, _ = load_task(ckpt, DetectionTask)
    again = DetectionTask.load_from_checkpoint(ckpt, weights_only=True)
    for t in (loaded, again):
        hp = t.hparams
        assert (hp.freeze_backbone, hp.backbone_lr_scale, hp.ema_decay, hp.eval_folded) == (False, 1.0, None, True)
        state = t.state_dict()
        assert all(torch.equal(state[k], v) for k, v in raw["state_dict"].items())
    # and it resumes: the optimizer state has the same parameter groups
    resumed = quiet_trainer(max_steps=2, limit_val_batches=0)
    resumed.fit(make_task(dm), datamodule=dm, ckpt_path=ckpt, weights_only=True)
    assert resumed.global_step == 2
