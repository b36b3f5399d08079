"""Every backbone family on every task, from the command line: ``mobilevision train --task T --backbone B`` is the
task's default recipe with backbone B as registered (not the recipe's width), and it fits.

The default commands run on tiny versions of the embedded datasets (generation and input sizes overridden), with
``fast_dev_run``; the network is compared with ``create_backbone(B)`` built independently of the task."""

from __future__ import annotations

import pytest
import torch

from mobilevision.backbones import create_backbone
from mobilevision.cli.train import main

FAMILIES = ["mobilenet_v1", "mobilenet_v2", "mobileone_s0", "efficientnet_b0"]


def tiny_data(task: str, root) -> list[str]:
    """Overrides that shrink the task's embedded default dataset and its input size."""
    d = "--data.init_args."
    if task == "classification":
        return [f"{d}root", str(root / "glyphs"), f"{d}glyphs_train_per_class", "1", f"{d}glyphs_val_per_class", "1",
                f"{d}glyphs_image_size", "64", f"{d}image_size", "64", f"{d}batch_size", "2"]
    if task == "attributes":
        return [f"{d}root", str(root / "glyph_attributes"), f"{d}glyph_attributes_train", "2",
                f"{d}glyph_attributes_val", "2", f"{d}glyph_attributes_image_size", "64", f"{d}image_size", "64",
                f"{d}batch_size", "2"]
    if task == "geolocalization":
        return [f"{d}root", str(root / "geoscenes"), f"{d}geoscenes_train", "60", f"{d}geoscenes_val", "8",
                f"{d}geoscenes_image_size", "64", f"{d}image_size", "64", f"{d}batch_size", "2",
                f"{d}max_per_cell", "20", f"{d}min_per_cell", "5"]
    shapes = [f"{d}shapes_root", str(root / "shapes"), f"{d}shapes_num_train", "4", f"{d}shapes_num_val", "2",
              f"{d}shapes_image_size", "96", f"{d}batch_size", "2"]
    return shapes + ([f"{d}image_size", "96"] if task == "ssdlite" else [f"{d}crop_size", "96"])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("embedded")


def param_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize("backbone", FAMILIES)
@pytest.mark.parametrize("task", ["ssdlite", "classification", "geolocalization", "segmentation", "attributes"])
def test_default_command_with_backbone_fits_that_backbone(task, backbone, data_root, tmp_path, one_thread):
    cli = main(["--task", task, "--backbone", backbone, *tiny_data(task, data_root),
                "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                "--checkpoint.dirpath", str(tmp_path / "ckpt")])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    hp = cli.model.hparams
    assert hp.backbone == backbone and hp.width is None and not hp.backbone_kwargs
    expected = param_shapes(create_backbone(backbone))  # as registered: its own width, depth and knobs
    assert param_shapes(cli.model.model.backbone) == expected
    assert sum(p.numel() for p in cli.model.model.backbone.parameters()) == sum(
        torch.Size(s).numel() for s in expected.values())


@pytest.mark.parametrize("task", ["ssdlite", "classification"])
def test_width_shorthand_and_the_recipe_as_written(task, data_root, tmp_path, one_thread):
    """``B@0.35`` trains B at width 0.35; no ``--backbone`` runs the recipe as written (its width 0.5)."""
    common = [*tiny_data(task, data_root), "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--checkpoint.dirpath", str(tmp_path / "ckpt")]
    cli = main(["--task", task, "--backbone", "mobilenet_v2@0.35", *common])
    assert param_shapes(cli.model.model.backbone) == param_shapes(create_backbone("mobilenet_v2", width=0.35))
    cli = main(["--task", task, *common])
    hp = cli.model.hparams
    assert hp.width == 0.5 and hp.backbone == {"ssdlite": "mobilenet_v2", "classification": "mobilenet_v1"}[task]
    assert param_shapes(cli.model.model.backbone) == param_shapes(create_backbone(hp.backbone, width=0.5))
