"""load_pretrained: torchvision / timm / mobilevision state dicts give the reference model's exact logits."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from mobilevision.models import load_pretrained  # noqa: E402
from mobilevision.models.classifier import create_classifier  # noqa: E402

EFFICIENTNETS = [f"efficientnet_b{i}" for i in range(8)]
# (library, reference model name, mobilevision backbone name)
CASES = ([("torchvision", "mobilenet_v2", "mobilenet_v2")]
         + [("torchvision", n, n) for n in EFFICIENTNETS]
         + [("timm", "mobilenetv1_100", "mobilenet_v1"), ("timm", "mobilenetv2_100", "mobilenet_v2")]
         + [("timm", f"mobileone_s{i}", f"mobileone_s{i}") for i in range(5)]
         + [("timm", n, n) for n in EFFICIENTNETS])


pytestmark = pytest.mark.usefixtures("one_thread")


def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def reference_model(library: str, name: str, seed: int = 0) -> nn.Module:
    """Reference model with random weights and non-trivial BatchNorm state, in eval mode.

    BN affine parameters are random; each BN's running statistics are those of its own eval-mode input on
    :func:`inputs` (so activations stay O(1) at every depth, even through MobileOne's summed branches),
    with the variance floored at 0.1; counters are set to 7.
    """
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None) if library == "torchvision" \
        else timm.create_model(name, pretrained=False)

    def calibrate(bn: nn.Module, args: tuple[torch.Tensor]) -> None:
        bn.running_mean.copy_(args[0].mean((0, 2, 3)))
        bn.running_var.copy_(args[0].var((0, 2, 3)).clamp(min=0.1))

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [bn.register_forward_pre_hook(calibrate) for bn in bns]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.5)
            bn.num_batches_tracked.fill_(7)
        model.eval()(inputs())
    for hook in hooks:
        hook.remove()
    return model


@pytest.mark.parametrize("library,ref_name,name", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_logits_match_reference(tmp_path, library, ref_name, name):
    ref = reference_model(library, ref_name)
    path = tmp_path / f"{ref_name}.pth"
    torch.save(ref.state_dict(), path)
    model = create_classifier(name, weights=str(path)).eval()
    # float64 forward: a random network amplifies float32 rounding differences (MobileOne sums its branches
    # in another order than timm) to ~1e-3; in float64 any remaining difference is a mapping error.
    x = inputs().double()
    with torch.no_grad():
        expected, got = ref.double()(x), model.double()(x)
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two vectors of zeros
    assert (expected - got).abs().max().item() <= 1e-4
    counters = [m.num_batches_tracked.item() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert set(counters) == {7}


def test_num_classes_mismatch_loads_backbone_and_warns(tmp_path):
    ref = reference_model("torchvision", "mobilenet_v2")
    path = tmp_path / "mnv2.pth"
    torch.save(ref.state_dict(), path)
    with pytest.warns(UserWarning, match="re-initialised"):
        model = create_classifier("mobilenet_v2", num_classes=10, weights=path).eval()
    assert model.fc.out_features == 10
    x = inputs()
    with torch.no_grad():
        expected = ref.features(x).mean((2, 3))
        assert torch.allclose(model.forward_features(x), expected, atol=1e-5)


def test_wrapped_checkpoints_and_mobilevision_round_trip(tmp_path):
    ref = reference_model("timm", "mobilenetv1_100")
    # Lightning-style checkpoint of a module holding the network as ``self.model``
    lightning = {"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}
    torch.save(lightning, tmp_path / "lightning.ckpt")
    model = create_classifier("mobilenet_v1", weights=tmp_path / "lightning.ckpt").eval()
    # mobilevision's own state dict, wrapped under "model" with a DDP "module." prefix
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ours.pth")
    again = create_classifier("mobilenet_v1", weights=tmp_path / "ours.pth").eval()
    x = inputs()
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-4
        assert torch.equal(again(x), model(x))


def test_torchvision_b5_eps_survives_round_trip(tmp_path):
    """torchvision's B5-B7 use BN eps 1e-3 (ours and timm's 1e-5): the loader folds the difference into
    running_var, so a model re-saved in mobilevision's own layout still reproduces torchvision's logits."""
    ref = reference_model("torchvision", "efficientnet_b5")
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    model = create_classifier("efficientnet_b5", weights=tmp_path / "tv.pth")
    torch.save(model.state_dict(), tmp_path / "ours.pth")
    again = load_pretrained(create_classifier("efficientnet_b5"), "efficientnet_b5", tmp_path / "ours.pth").eval()
    x = inputs().double()
    with torch.no_grad():
        assert (again.double()(x) - ref.double()(x)).abs().max() <= 1e-4


def test_wrong_architecture_names_keys_and_file(tmp_path):
    path = tmp_path / "mobilenet_v2_weights.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(ValueError) as info:
        create_classifier("efficientnet_b0", weights=path)
    message = str(info.value)
    assert str(path) in message and "efficientnet_b0" in message
    assert "missing keys" in message and "backbone.blocks.1.dw.0.weight" in message
    assert "unexpected keys" in message and "features.1.conv.0.0.weight" in message


def test_wrong_width_reports_shape_mismatch(tmp_path):
    path = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches: features\.0\.0\.weight \(32, 3, 3, 3\)"):
        create_classifier("mobilenet_v2", width=0.5, weights=path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_classifier("mobilenet_v1", weights=path)


class NotAStateDict:
    def __init__(self):
        self.weights = torch.zeros(3)


def test_pickled_object_refused_under_weights_only(tmp_path):
    path = tmp_path / "object.pth"
    torch.save(NotAStateDict(), path)
    with pytest.raises(ValueError, match=r"object\.pth.*weights_only=True"):
        create_classifier("mobilenet_v1", weights=path)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
    with pytest.raises(ValueError, match=r"no_tensors\.pth: not a state dict"):
        create_classifier("mobilenet_v1", weights=tmp_path / "no_tensors.pth")


def test_offline_imagenet_says_how_to_pass_a_file(monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"torch\.save\(m\.state_dict\(\), 'mobilenet_v2\.pth'\).*"
                                           r"weights='mobilenet_v2\.pth'") as info:
        create_classifier("mobilenet_v2", weights="imagenet")
    assert "torchvision.models.mobilenet_v2(weights='IMAGENET1K_V1')" in str(info.value)
    assert calls[0]["weights_only"] is True

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match=r"timm\.create_model\('mobileone_s1\.apple_in1k', pretrained=True\).*"
                                           r"weights='mobileone_s1\.pth'"):
        create_classifier("mobileone_s1", weights="imagenet")
