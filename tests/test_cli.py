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
        "classification", ["fit", f"--config={GLYPHS}", "--model.init_args.backbone", "mobilenet_v1"])


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
