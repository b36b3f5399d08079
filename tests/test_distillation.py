"""Knowledge distillation: the losses against their formulas written out here, a teacher that is a checkpoint and
one that is a torchvision model (at its own resolution and normalization), resume, DDP, export, geolocalization
cells, and SSDLite from an SSDLite teacher."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision

from mobilevision.errors import UserError
from mobilevision.imagenet import IMAGENET_MEAN, IMAGENET_STD
from mobilevision.tasks import ClassificationTask, DetectionTask, GeolocalizationTask, load_task
from mobilevision.tasks.distill import detection_distillation_loss, soft_binary_loss, soft_cross_entropy

from test_classification_task import folder_dm, make_color_folder, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the losses, by their formulas ---------------------------------------------------------------------------
def test_soft_cross_entropy_is_hintons_kl_times_t_squared():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g) * 3
    T = 3.0
    p = np.exp(t.numpy() / T) / np.exp(t.numpy() / T).sum(1, keepdims=True)
    q = np.exp(s.numpy() / T) / np.exp(s.numpy() / T).sum(1, keepdims=True)
    expected = (p * (np.log(p) - np.log(q))).sum(1).mean() * T * T
    assert float(soft_cross_entropy(s, t, T)) == pytest.approx(expected, rel=1e-5)
    assert float(soft_cross_entropy(t, t, T)) == pytest.approx(0.0, abs=1e-6)


def test_soft_binary_loss_by_hand():
    s, t, T = torch.tensor([[0.3, -2.0]]), torch.tensor([[1.5, -0.5]]), 2.0
    p = 1 / (1 + np.exp(-t.numpy() / T))
    q = 1 / (1 + np.exp(-s.numpy() / T))
    expected = -(p * np.log(q) + (1 - p) * np.log(1 - q)).mean() * T * T
    assert float(soft_binary_loss(s, t, T)) == pytest.approx(expected, rel=1e-5)


def test_teacher_bounded_regression_counts_only_where_the_student_is_worse():
    """Chen et al.'s bounded loss: one matched box where the student is worse than the teacher (counted, L2) and
    one where it is better (not counted); unmatched boxes never count."""
    from mobilevision.detection.box_coder import BoxCoder

    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
                "labels": torch.tensor([0, 0])}]
    y = coder.encode(targets[0]["boxes"], anchors[:2])
    s_reg = torch.zeros(1, 3, 4)
    t_reg = torch.zeros(1, 3, 4)
    s_reg[0, 0] = y[0] + 1.0   # student error 4, teacher exact: counted
    t_reg[0, 0] = y[0]
    s_reg[0, 1] = y[1] + 0.1   # student error 0.04, teacher error 1: not counted
    t_reg[0, 1] = y[1] + 0.5
    s_reg[0, 2] = 9.0          # unmatched
    logits = torch.zeros(1, 3, 2)
    out = detection_distillation_loss({"cls_logits": logits, "bbox_regression": s_reg, "anchors": anchors},
                                      {"cls_logits": logits, "bbox_regression": t_reg, "anchors": anchors},
                                      targets, coder, temperature=1.0)
    assert float(out["loss_bounded"]) == pytest.approx(4.0 / 2, rel=1e-5)
    assert float(out["loss_soft"]) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(UserError, match="default boxes"):
        detection_distillation_loss({"cls_logits": logits, "bbox_regression": s_reg, "anchors": anchors},
                                    {"cls_logits": logits, "bbox_regression": t_reg, "anchors": anchors * 2},
                                    targets, coder, temperature=1.0)


# -- classification: a torchvision teacher at its own size and normalization -------------------------------
@pytest.fixture(scope="module")
def colors(tmp_path_factory) -> Path:
    return make_color_folder(tmp_path_factory.mktemp("colors"))


@pytest.fixture(scope="module")
def torchvision_teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    path = tmp_path_factory.mktemp("teacher") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path


def test_torchvision_teacher_loss_equals_the_formula_on_its_own_input(colors, torchvision_teacher):
    """The training loss with a torchvision teacher at 48 px (the student trains at 32 px, normalized by 0.5 /
    0.5) is (1 - w) CE + w T^2 KL, the teacher seeing the batch un-normalized, resized to 48 px (antialiased
    bilinear) and normalized by ImageNet's statistics - computed here without the task."""
    dm = folder_dm(colors, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    dm.setup("fit")
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, image_size=32, lr=0.01,
                              teacher=f"torchvision:resnet18", teacher_weights=str(torchvision_teacher),
                              teacher_image_size=48, distill_temperature=3.0, distill_weight=0.7)
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)
    task._trainer = SimpleNamespace(datamodule=dm, strategy=strategy)  # the parts of a fit the loss reads
    task.log = lambda *args, **kwargs: None
    images, labels = next(iter(dm.train_dataloader()))
    task.train()
    torch.manual_seed(1)
    loss = task.training_step((images, labels), 0)

    ref = torchvision.models.resnet18(num_classes=3)
    ref.load_state_dict(torch.load(torchvision_teacher, weights_only=True))
    raw = images * 0.5 + 0.5
    x = F.interpolate(raw, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        t = ref.eval()(x)
    torch.manual_seed(1)
    s = task(images)
    hard = F.cross_entropy(s, labels)
    p, logq = F.softmax(t / 3.0, 1), F.log_softmax(s / 3.0, 1)
    soft = (p * (p.log() - logq)).sum(1).mean() * 9.0
    assert float(loss) == pytest.approx(float(0.3 * hard + 0.7 * soft), rel=1e-4)
    teacher = task.teacher
    assert not teacher.network.training and not any(p.requires_grad for p in teacher.network.parameters())
    assert not any("teacher" in k for k in task.state_dict())  # not a submodule: not saved


def test_checkpoint_teacher_fit_resume_and_export(colors, tmp_path):
    """A classification checkpoint teaches a smaller student through a fit; the teacher's weights do not move,
    the student's checkpoint holds no teacher, a resumed fit reloads the teacher from its file, and the student
    exports to ONNX like any model."""
    from mobilevision.deploy import Predictor, export_onnx, load_any_task

    pl.seed_everything(0)
    teacher_task = ClassificationTask(backbone="mobilenet_v1", width=0.5, num_classes=3, image_size=32, lr=0.01,
                                      optimizer="adamw")
    dm = folder_dm(colors)
    trainer = quiet_trainer(max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(teacher_task, datamodule=dm)
    teacher_ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(teacher_ckpt)
    before = {k: v.clone() for k, v in load_task(teacher_ckpt, ClassificationTask)[0].state_dict().items()}

    student = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, image_size=32, lr=0.01,
                                 optimizer="adamw", teacher=str(teacher_ckpt), distill_weight=0.5)
    trainer = quiet_trainer(max_epochs=1, default_root_dir=tmp_path / "student")
    trainer.fit(student, datamodule=folder_dm(colors))
    assert "train/loss_soft" in trainer.callback_metrics
    used = student.teacher.task.state_dict()
    assert all(torch.equal(before[k], used[k]) for k in before)  # frozen
    student_ckpt = tmp_path / "student.ckpt"
    trainer.save_checkpoint(student_ckpt)
    saved = torch.load(student_ckpt, map_location="cpu", weights_only=True)
    assert set(saved["state_dict"]) == set(ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3)
                                           .state_dict())

    resumed = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, image_size=32, lr=0.01,
                                 optimizer="adamw", teacher=str(teacher_ckpt), distill_weight=0.5)
    trainer = quiet_trainer(max_epochs=2, default_root_dir=tmp_path / "student")
    trainer.fit(resumed, datamodule=folder_dm(colors), ckpt_path=student_ckpt, weights_only=True)
    assert trainer.current_epoch == 2 and resumed.teacher is not None

    task, ckpt = load_any_task(student_ckpt)  # no teacher needed to load, evaluate or export
    onnx_path = export_onnx(task, tmp_path / "student.onnx", ckpt=ckpt)
    image = np.full((40, 40, 3), 200, np.uint8)
    assert Predictor(onnx_path)([image])[0]["probs"] == pytest.approx(Predictor(student_ckpt)([image])[0]["probs"],
                                                                      abs=1e-5)


def test_bad_teachers_are_named_before_training(colors, tmp_path, torchvision_teacher):
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found"):
        ClassificationTask(num_classes=3, teacher=str(tmp_path / "none.ckpt"))
    with pytest.raises(FileNotFoundError, match="needs teacher_weights"):
        ClassificationTask(num_classes=3, teacher="torchvision:resnet18")
    with pytest.raises(UserError, match="distill_weight"):
        ClassificationTask(num_classes=3, teacher="torchvision:resnet18", teacher_weights=str(torchvision_teacher),
                           distill_weight=1.5)
    task = ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=4, teacher="torchvision:resnet18",
                              teacher_weights=str(torchvision_teacher))
    with pytest.raises(UserError, match="3 outputs, the student 4"):
        task.teacher


def test_ddp_two_processes_with_a_teacher(colors, torchvision_teacher, tmp_path):
    """``--trainer.devices 2 --trainer.strategy ddp`` with a torchvision teacher from the command line: both ranks
    load the teacher, the run finishes and its checkpoint loads without it."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mobilevision", "train", "--task", "classification", "--backbone",
           "mobilenet_v1@0.25", "--data.init_args.dataset", "folder", "--data.init_args.root", str(colors),
           "--data.init_args.image_size", "32", "--data.init_args.batch_size", "4",
           "--data.init_args.cache_images", "false", "--model.init_args.teacher", "torchvision:resnet18",
           "--model.init_args.teacher_weights", str(torchvision_teacher), "--trainer.max_epochs", "1",
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(out)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    task, _ = load_task(out / "last.ckpt", ClassificationTask)
    assert task.hparams.teacher == "torchvision:resnet18"


# -- geolocalization: the same cells or an error -------------------------------------------------------------
def test_geolocalization_teacher_must_predict_the_students_cells(tmp_path):
    from mobilevision.geo import build_partition

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 400), rng.uniform(-180, 180, 400)
    part, _ = build_partition(lat, lon, max_per_cell=100, min_per_cell=5)
    other, _ = build_partition(lat, lon, max_per_cell=60, min_per_cell=5)
    assert len(part) != len(other) or not np.array_equal(part.to_state()["cell_ids"], other.to_state()["cell_ids"])
    teacher = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=part, image_size=32)
    path = tmp_path / "geo_teacher.ckpt"
    trainer = quiet_trainer(max_steps=0)
    trainer.strategy.connect(teacher)
    trainer.save_checkpoint(path)
    ok = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=part, image_size=32, teacher=str(path))
    images = torch.rand(2, 3, 32, 32)
    logits = ok(images)
    assert ok.teacher_logits(images, logits).shape == logits.shape
    bad = GeolocalizationTask(backbone="mobilenet_v1", width=0.25, partition=other, image_size=32,
                              teacher=str(path))
    with pytest.raises(UserError, match="other cells|outputs of shape"):
        bad.teacher_logits(images, bad(images))


# -- SSDLite from an SSDLite teacher --------------------------------------------------------------------------
def test_ssdlite_student_learns_from_an_ssdlite_teacher(tmp_path):
    from mobilevision.data import CocoDetectionDataModule, ensure_shapes_dataset

    paths = ensure_shapes_dataset(tmp_path / "shapes", num_train=8, num_val=4, image_size=96, seed=1)

    def dm():
        return CocoDetectionDataModule(paths["train_images"], paths["train_annotations"], paths["val_images"],
                                       paths["val_annotations"], image_size=96, batch_size=4, num_workers=0,
                                       augment="flip")

    pl.seed_everything(0)
    d = dm()
    teacher = DetectionTask(backbone="mobilenet_v2", width=0.5, num_classes=d.num_classes, image_size=96,
                            optimizer="adamw", lr=3e-3, label_to_category_id=d.label_to_category_id)
    trainer = quiet_trainer(max_steps=4, num_sanity_val_steps=0, check_val_every_n_epoch=100)
    trainer.fit(teacher, datamodule=d)
    path = tmp_path / "det_teacher.ckpt"
    trainer.save_checkpoint(path)
    student = DetectionTask(backbone="mobilenet_v1", width=0.25, num_classes=d.num_classes, image_size=96,
                            optimizer="adamw", lr=3e-3, label_to_category_id=d.label_to_category_id,
                            teacher=str(path), distill_temperature=2.0)
    trainer = quiet_trainer(max_steps=2, num_sanity_val_steps=0, check_val_every_n_epoch=100)
    trainer.fit(student, datamodule=dm())
    m = trainer.callback_metrics
    assert math.isfinite(float(m["train/loss_soft"])) and math.isfinite(float(m["train/loss_bounded"]))
    # a teacher with other default boxes (another input size) is refused
    other = DetectionTask(backbone="mobilenet_v1", width=0.25, num_classes=d.num_classes, image_size=128,
                          label_to_category_id=d.label_to_category_id, teacher=str(path))
    other._trainer = None
    outputs = other(torch.rand(2, 3, 128, 128))
    with pytest.raises(UserError, match="default boxes"):
        detection_distillation_loss(outputs, other.teacher_outputs(torch.rand(2, 3, 128, 128)),
                                    [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2,
                                    other.model.box_coder, 1.0)
    with pytest.raises(UserError, match="SSDLite checkpoint"):
        DetectionTask(num_classes=3, teacher="torchvision:resnet18")
