"""tools/train.py argument shortcuts: which task a command line means."""

from __future__ import annotations

import pytest

from mobilevision.cli import CONFIG_DIR, expand_shortcuts, task_of

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
