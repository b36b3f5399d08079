"""mobilevision train argument shortcuts: which task a command line means."""

from __future__ import annotations

import pytest

from mobilevision.cli.train import CONFIG_DIR, expand_shortcuts, task_of

GLYPHS = str(CONFIG_DIR / "classification/glyphs.yaml")
GEOSCENES = str(CONFIG_DIR / "geolocalization/geoscenes.yaml")


@pytest.mark.parametrize("argv,task", [
    (["fit", "--config", GLYPHS], "classification"),
    (["fit", f"--config={GLYPHS}"], "classification"),
    ([f"--config={GEOSCENES}", "--trainer.max_epochs=1"], "geolocalization"),
    (["--config", GLYPHS, f"--config={GEOSCENES}"], "geolocalization"),  # the last config's model wins
    (["--task", "classification"], "classification"),
    (["--task=geolocalization", "--backbone=mobilenet_v1"], "geolocalization"),
    (["--task=classification", "--config", GEOSCENES], "classification"),  # --task beats the config
    (["fit", "--trainer.max_epochs", "1"], "ssdlite"),
])
def test_task_of(argv, task):
    assert task_of(argv) == task


def test_task_of_ignores_configs_without_a_model(tmp_path):
    trainer_only = tmp_path / "trainer.yaml"
    trainer_only.write_text("trainer:\n  max_epochs: 1\n")
    assert task_of([f"--config={GLYPHS}", f"--config={trainer_only}"]) == "classification"
    assert task_of([f"--config={trainer_only}"]) == "ssdlite"


def test_expand_shortcuts_with_equals_config():
    """``--config=PATH`` picks the config's task and keeps the config (no default config added)."""
    assert expand_shortcuts([f"--config={GLYPHS}", "--backbone=mobilenet_v1"]) == (
        "classification", ["fit", f"--config={GLYPHS}", "--model.init_args.backbone", "mobilenet_v1",
                           "--model.init_args.width", "null", "--model.init_args.backbone_kwargs", "null"])


def test_backbone_shortcut_gives_the_registered_backbone_or_the_width_asked_for():
    """``--backbone B`` drops the recipe's width (B as registered); ``B@W`` and ``--model.init_args.width W`` set
    it; a width given twice, an unknown backbone and a bad width are errors."""
    from mobilevision.cli.train import BackboneChoiceError

    def tail(*argv):
        return expand_shortcuts(["--task", "classification", *argv])[1][3:]

    assert tail("--backbone", "efficientnet_b0@0.5") == [
        "--model.init_args.backbone", "efficientnet_b0", "--model.init_args.width", "0.5",
        "--model.init_args.backbone_kwargs", "null"]
    assert tail("--model.init_args.width", "0.75", "--backbone", "mobilenet_v2") == [
        "--model.init_args.width", "0.75", "--model.init_args.backbone", "mobilenet_v2",
        "--model.init_args.backbone_kwargs", "null"]
    assert tail("--backbone", "mobileone_s1", "--model.init_args.backbone_kwargs.num_branches=2") == [
        "--model.init_args.backbone_kwargs.num_branches=2", "--model.init_args.backbone", "mobileone_s1",
        "--model.init_args.width", "null"]
    assert tail() == []  # no --backbone: the recipe as written
    with pytest.raises(BackboneChoiceError, match="both set the width"):
        tail("--backbone", "mobilenet_v2@0.5", "--model.init_args.width", "0.75")
    with pytest.raises(BackboneChoiceError, match="unknown backbone 'resnet50'; choose one of: efficientnet, "):
        tail("--backbone", "resnet50")
    with pytest.raises(BackboneChoiceError, match="must be a positive number, got 'wide'"):
        tail("--backbone", "mobilenet_v2@wide")


@pytest.mark.parametrize("argv,message", [
    (["--backbone", "mobileone_s0@0.5"],
     "backbone 'mobileone_s0' (MobileOne) has no 'width' knob; its knobs: num_branches, out_indices, se_blocks"),
    (["--backbone", "mobileone_s2", "--model.init_args.width", "0.5"], "backbone 'mobileone_s2' (MobileOne) has no 'width'"),
    (["--backbone", "mobilenet_v1", "--model.init_args.backbone_kwargs", "{depth: 2}"],
     "backbone 'mobilenet_v1' (MobileNetV1) has no 'depth' knob; its knobs: out_indices, width"),
    (["--model.init_args.backbone", "mobilenet_v3"], "unknown backbone 'mobilenet_v3'"),
])
def test_a_knob_the_family_lacks_is_one_line_naming_knob_and_family(argv, message, capsys):
    """Before any data is read or model built: exit code 2 and ``error: ...``, no jsonargparse Union dump."""
    from mobilevision.cli import main as mobilevision

    assert mobilevision(["train", "--task", "classification", *argv]) == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Union" not in err


# -- the `mobilevision` command -------------------------------------------------------------------------------
def test_mobilevision_command_dispatches_to_subcommands(capsys):
    from importlib.metadata import entry_points

    from mobilevision.cli import SUBCOMMANDS
    from mobilevision.cli import main as mobilevision

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("mobilevision") == "mobilevision.cli:main"
    assert mobilevision(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("train", "eval", "predict", "export", "benchmark"))
    # every task, in the command's help and in the package description
    import tomllib
    from pathlib import Path

    description = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["description"]
    for words in (("ssdlite", "SSDLite"), ("classification",), ("geolocalization",), ("segmentation",),
                  ("attributes",)):
        assert any(w in usage for w in words) and any(w in description for w in words), words
    assert set(SUBCOMMANDS) >= {"train", "eval", "predict", "export", "benchmark"}
    assert mobilevision(["bogus"]) == 2
    assert "unknown subcommand 'bogus'" in capsys.readouterr().err
    # a subcommand's own errors come back as its exit code
    assert mobilevision(["eval", "coco", "--annotations", "missing.json", "--results", "missing.json"]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_python_dash_m_mobilevision():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mobilevision", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "predict" in out.stdout


# -- more than one process from every documented command line ----------------------------------------------
def _launchers():
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    return {
        "console_script": [str(Path(sys.executable).parent / "mobilevision"), "train"],
        "python_dash_m": [sys.executable, "-m", "mobilevision", "train"],
        "tools_train_py": [sys.executable, str(repo / "tools" / "train.py")],
    }


@pytest.mark.parametrize("launcher", ["console_script", "python_dash_m", "tools_train_py"])
def test_ddp_from_the_command_line(launcher, tmp_path):
    """``--trainer.devices 2 --trainer.strategy ddp`` (2 CPU processes, gloo) from each way of starting training:
    Lightning starts rank 1 with the command line as typed. The run finishes, writes its checkpoint, and the
    validation metrics it logged (synced over the two processes, 9 images: 5 on one rank, 4 on the other) equal a
    single-process validation of that checkpoint."""
    import csv
    import os
    import subprocess

    import pytorch_lightning as pl
    from test_classification_task import make_color_folder

    from mobilevision.data import ClassificationDataModule
    from mobilevision.tasks import ClassificationTask

    data = make_color_folder(tmp_path / "colors", mislabel_odd_val=True, n_val=3)
    out = tmp_path / "out"
    cmd = [*_launchers()[launcher], "--task", "classification", "--backbone", "mobilenet_v1@0.25",
           "--data.init_args.dataset", "folder", "--data.init_args.root", str(data),
           "--data.init_args.image_size", "32", "--data.init_args.batch_size", "4",
           "--data.init_args.augment", "none", "--data.init_args.cache_images", "false",
           "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "2",
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "CSVLogger",
           "--trainer.logger.save_dir", str(out), "--checkpoint.dirpath", str(out / "ckpt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "self.log('val/" not in run.stderr  # the synced metrics draw no sync_dist advice
    ckpt = out / "ckpt" / "last.ckpt"
    assert ckpt.is_file()
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("val/") and v}
    assert set(logged) >= {"val/acc1", "val/acc5", "val/loss"}

    task = ClassificationTask.load_from_checkpoint(ckpt, weights_only=True)
    dm = ClassificationDataModule(dataset="folder", root=str(data), image_size=32, batch_size=4, num_workers=0,
                                  augment="none")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    single = trainer.validate(task, datamodule=dm, verbose=False)[0]
    for key in ("val/acc1", "val/acc5", "val/acc_mean_class", "val/loss"):
        assert logged[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key


# -- user errors and bugs, told apart --------------------------------------------------------------------------
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
    from mobilevision.cli import report_errors
    from mobilevision.errors import ImageDecodeError, UserError

    def fail(exc):
        def run(_):
            raise exc
        return run

    for exc in (UserError("--x must be >= 1, got 0"), FileNotFoundError("model.onnx does not exist"),
                ImageDecodeError("cannot decode image a.jpg")):
        assert report_errors(fail(exc), None) == 2
        err = capsys.readouterr().err
        assert err == f"error: {exc}\n"
    assert report_errors(fail(ValueError("operands could not be broadcast")), None) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (ValueError: operands could not be broadcast)" in err
    assert "bug in mobilevision" in err and not err.startswith("error:")


def test_a_benchmark_recipe_without_its_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    """The COCO recipe with no COCO under the current folder: the folders and the page that says how to prepare it,
    exit code 2, no traceback."""
    from mobilevision.cli import main as mobilevision

    monkeypatch.chdir(tmp_path)
    assert mobilevision(["train", "--config", "configs/ssdlite/coco_mobilenet_v2.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: detection data not found (relative to ") and "Traceback" not in err
    assert "train_images=datasets/coco/train2017" in err and "datasets/coco/README.md" in err
