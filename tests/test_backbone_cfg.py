"""Each backbone's facts (``BackboneCfg``) against what torchvision and timm declare for the same weights, and the
facts followed from the train command through the checkpoint to the exported file and its predictor."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest
import torch

from mobilevision.backbones import create_backbone, get_backbone_cfg, list_backbones
from mobilevision.imagenet import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD

WITH_WEIGHTS = [b for b in list_backbones() if get_backbone_cfg(b).weights]


def test_every_variant_has_its_weights_and_the_generic_family_has_none():
    assert set(WITH_WEIGHTS) == set(list_backbones()) - {"efficientnet"}
    generic = get_backbone_cfg("efficientnet")
    assert (generic.weights, generic.interpolation, generic.crop_pct, generic.mean, generic.std) == \
        (None, DEFAULT_INTERPOLATION, DEFAULT_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(KeyError, match="unknown backbone 'resnet50'"):
        get_backbone_cfg("resnet50")


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_cfg_is_what_the_weights_source_declares(name):
    """torchvision: the weights' own transforms (crop / resize, interpolation, mean / std); timm: its
    ``pretrained_cfg`` for the same model and tag. The input size is the architecture's published one."""
    cfg = get_backbone_cfg(name)
    library, ref = cfg.weights_source
    if library == "torchvision":
        from torchvision.models import get_weight

        t = get_weight(ref).transforms()
        assert cfg.crop_pct == pytest.approx(t.crop_size[0] / t.resize_size[0])
        assert cfg.interpolation == t.interpolation.value
        assert cfg.mean == pytest.approx(tuple(t.mean)) and cfg.std == pytest.approx(tuple(t.std))
    else:
        import timm

        assert library == "timm" and timm.is_model(ref.split(".")[0])
        p = timm.models.get_pretrained_cfg(ref)
        assert p is not None, ref
        assert (cfg.interpolation, cfg.crop_pct) == (p.interpolation, pytest.approx(p.crop_pct))
        assert cfg.mean == pytest.approx(p.mean) and cfg.std == pytest.approx(p.std)
    assert cfg.input_size == create_backbone(name).default_resolution


def test_imagenet_weights_bring_their_pipeline_from_train_to_the_exported_file(tmp_path, monkeypatch):
    """``backbone_weights: imagenet`` on mobilenet_v1 (timm's weights: mean = std = 0.5, bicubic): the data module
    normalizes so, the checkpoint records it, the ONNX file's metadata and graph carry it, and the predictor's
    output equals the checkpoint's network on the image prepared by hand (OpenCV bicubic, (x - 0.5) / 0.5)."""
    import timm

    from mobilevision.cli import main as mobilevision
    from mobilevision.data.image_io import load_rgb_image
    from mobilevision.deploy import Predictor, export_onnx, load_any_task
    from mobilevision.models import pretrained

    # offline: the "downloaded" weights are timm's architecture with random weights
    fake = timm.create_model("mobilenetv1_100", pretrained=False).state_dict()
    monkeypatch.setattr(pretrained, "_fetch_imagenet", lambda name: fake)
    root = tmp_path / "runs"
    rc = mobilevision(["train", "--task", "classification", "--backbone", "mobilenet_v1",
                       "--model.init_args.backbone_weights", "imagenet", "--data.init_args.image_size", "40",
                       "--data.init_args.glyphs_train_per_class", "2", "--data.init_args.glyphs_val_per_class", "1",
                       "--data.init_args.glyphs_image_size", "32", "--data.init_args.root", str(tmp_path / "glyphs"),
                       "--data.init_args.batch_size", "4", "--data.init_args.cache_images", "false",
                       "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                       "--trainer.check_val_every_n_epoch", "1", "--trainer.default_root_dir", str(root),
                       "--trainer.enable_progress_bar", "false"])
    assert rc in (None, 0) or not isinstance(rc, int)
    ckpt_path = sorted(glob.glob(str(root / "**" / "*.ckpt"), recursive=True))[-1]
    task, ckpt = load_any_task(ckpt_path)
    data_hp = ckpt["datamodule_hyper_parameters"]
    assert data_hp["mean"] == [0.5, 0.5, 0.5] and data_hp["std"] == [0.5, 0.5, 0.5]
    assert (data_hp["interpolation"], data_hp["resize_ratio"]) == ("bicubic", 0.875)

    onnx_path = export_onnx(task, tmp_path / "cls.onnx", ckpt=ckpt)
    predictor = Predictor(onnx_path)
    assert predictor.meta["mean"] == [0.5] * 3 and predictor.meta["preprocess"]["interpolation"] == "bicubic"

    image_file = sorted(glob.glob(str(tmp_path / "glyphs" / "val" / "*" / "*.jpg")))[0]
    image = load_rgb_image(image_file)  # 32 x 32: enlarged to 45, then cropped to 40
    short = int(40 / 0.875)
    big = cv2.resize(image, (short, short), interpolation=cv2.INTER_CUBIC)
    top = (short - 40) // 2
    x = (big[top:top + 40, top:top + 40].astype(np.float32) / 255.0 - 0.5) / 0.5
    wrong = (big[top:top + 40, top:top + 40].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD

    def log_probs(array):
        with torch.no_grad():
            return task.eval().model(torch.from_numpy(array).permute(2, 0, 1)[None].float()).log_softmax(1)[0].numpy()

    expected = log_probs(x)
    got = np.log(predictor([image])[0]["probs"])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert np.abs(log_probs(wrong) - expected).max() > 1e-4  # ImageNet's normalization would be told apart
