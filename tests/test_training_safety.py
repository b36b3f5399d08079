"""Training that never goes silently wrong: a non-finite loss stops training naming the step, no checkpoint holds
non-finite weights, checkpoint files are replaced atomically, and a run killed with SIGKILL mid-epoch resumes from
last.ckpt and finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from mobilevision.cli.train import CONFIG_DIR, main
from mobilevision.tasks import ClassificationTask
from mobilevision.tasks.checkpoint import TrainingCheckpoint

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent


def tiny_task() -> ClassificationTask:
    return ClassificationTask(backbone="mobilenet_v1", width=0.25, num_classes=3, image_size=32, optimizer="adamw",
                              lr=1e-3, warmup=0.0)


def loader(poison_batch: int | None = None, n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)
    if poison_batch is not None:  # a corrupt input: NaN pixels in every image of that batch
        images[2 * poison_batch:2 * poison_batch + 2] = float("nan")
    return DataLoader(TensorDataset(images, labels), batch_size=2)


def trainer_with(checkpoint: TrainingCheckpoint, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[checkpoint], **kwargs)


def every_step_checkpoint(dirpath: Path) -> TrainingCheckpoint:
    return TrainingCheckpoint(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, save_last_every_n_steps=1)


def assert_finite(ckpt: dict) -> None:
    for name, t in ckpt["state_dict"].items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name


def test_non_finite_loss_stops_training_naming_the_step(tmp_path):
    trainer = trainer_with(every_step_checkpoint(tmp_path / "ckpt"), max_steps=20)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 3 \(epoch 0\): loss=nan"):
        trainer.fit(tiny_task(), train_dataloaders=loader(poison_batch=3))
    # last.ckpt is the state after step 3, written before the bad batch; nothing was written after it
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]
    ckpt = torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert_finite(ckpt)


def test_checkpoint_with_non_finite_weights_is_not_written(tmp_path):
    task = tiny_task()
    trainer = trainer_with(every_step_checkpoint(tmp_path / "ckpt"), max_steps=1)
    trainer.fit(task, train_dataloaders=loader())
    with torch.no_grad():
        task.model.fc.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite weights in 1 tensor\(s\) of 'state_dict', "
                                                 r"e.g. \['model.fc.weight'\]"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_checkpoint_files_are_replaced_atomically(tmp_path, monkeypatch):
    checkpoint = every_step_checkpoint(tmp_path / "ckpt")
    trainer = trainer_with(checkpoint, max_steps=2)
    trainer.fit(tiny_task(), train_dataloaders=loader())
    last = tmp_path / "ckpt/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2

    def killed_while_writing(ckpt, path, storage_options=None):  # a process dying half-way through the file
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("killed")

    monkeypatch.setattr(trainer.strategy.checkpoint_io, "save_checkpoint", killed_while_writing)
    with pytest.raises(RuntimeError, match="killed"):
        checkpoint._save_checkpoint(trainer, str(last))
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the previous file, whole


@pytest.mark.parametrize("every_n_steps", [0, 8])
def test_last_ckpt_follows_training_while_best_follows_the_metric(tmp_path, every_n_steps):
    """Lightning's ModelCheckpoint rewrites last.ckpt only when a best-k file is written; ours at every epoch end,
    and a periodic save of last.ckpt on an epoch's last step does not make the best-k save of that step skip."""
    # monitor the step in mode "min": the first epoch end stays the best, later epochs never improve
    checkpoint = TrainingCheckpoint(dirpath=tmp_path, monitor="step", mode="min", save_last=True,
                                    save_on_train_epoch_end=True, filename="best-{epoch}",
                                    auto_insert_metric_name=False, save_last_every_n_steps=every_n_steps)
    trainer_with(checkpoint, max_epochs=3).fit(tiny_task(), train_dataloaders=loader())  # 8 steps an epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-0.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "best-0.ckpt", weights_only=True)["global_step"] == 8
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 24


def test_epochs_before_the_first_validation_rank_nothing_and_do_not_warn(tmp_path):
    """check_val_every_n_epoch=2: the first epoch end has no val metric (Lightning would warn that it was never
    logged); last.ckpt is still written there, and the best file follows the validation at the second."""
    checkpoint = TrainingCheckpoint(dirpath=tmp_path, monitor="val/acc1", mode="max", save_last=True,
                                    save_on_train_epoch_end=True, filename="best", auto_insert_metric_name=False)
    seen = []

    class Spy(pl.Callback):  # Lightning runs checkpoint callbacks last: look at the start of the next epoch
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(sorted(p.name for p in tmp_path.iterdir()))

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoint, Spy()], max_epochs=2,
                         check_val_every_n_epoch=2, num_sanity_val_steps=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny_task(), train_dataloaders=loader(), val_dataloaders=loader(n=4))
    assert not [w for w in caught if "monitored key" in str(w.message)]
    assert seen == [[], ["last.ckpt"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["global_step"] == 16


def write_color_folder(root: Path, n_train: int = 8, n_val: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, rgb in (("blue", (40, 60, 210)), ("green", (40, 190, 60)), ("red", (210, 40, 40))):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(rgb) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


def test_sigkill_mid_epoch_then_resume_from_last_ckpt(tmp_path):
    """tools/train.py in a subprocess, killed with SIGKILL once last.ckpt is a few steps in (24 images, batch 2:
    12 steps an epoch), resumed with --ckpt_path last.ckpt: it finishes at max_steps with finite weights."""
    data, ckpt_dir, max_steps = write_color_folder(tmp_path / "data"), tmp_path / "ckpt", 40
    args = ["fit", "--config", str(CONFIG_DIR / "classification/glyphs.yaml"),
            "--data.init_args.dataset", "folder", "--data.init_args.root", str(data),
            "--data.init_args.image_size", "32", "--data.init_args.batch_size", "2",
            "--data.init_args.num_workers", "0", "--data.init_args.augment", "none",
            "--model.init_args.width", "0.25", "--trainer.max_steps", str(max_steps), "--trainer.max_time", "null",
            "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
            "--checkpoint.dirpath", str(ckpt_dir), "--checkpoint.save_last_every_n_steps", "1"]
    last = ckpt_dir / "last.ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mobilevision", "train", *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 3:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before it was killed:\n" + (tmp_path / "log.txt").read_text()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]  # whole, though the kill may have hit a save
    assert 3 <= killed_at < 12, killed_at  # in the middle of the first epoch

    resumed = main([*args, "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == max_steps
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == max_steps
    assert_finite(final)
