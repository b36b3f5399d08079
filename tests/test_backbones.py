import pytest
import timm
import torch
import torchvision

import mobilevision as mv
from mobilevision.backbones import FeatureInfo, register_backbone
from mobilevision.backbones.efficientnet import compound_coefficients

from conftest import randomize_bn


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


EXPECTED_NAMES = (["mobilenet_v1", "mobilenet_v2"] + [f"mobileone_s{i}" for i in range(5)]
                  + [f"efficientnet_b{i}" for i in range(8)])


def test_registry_names():
    assert set(EXPECTED_NAMES) <= set(mv.list_backbones())
    assert mv.list_backbones() == sorted(mv.list_backbones())


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError, match="mobilenet_v2.*mobileone_s0|known backbones: .*mobilenet_v1"):
        mv.create_backbone("mobilenet_v9")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        @register_backbone
        def mobilenet_v2():  # noqa: F811
            return None


@pytest.mark.parametrize("name", mv.list_backbones())
def test_features_match_feature_info(name):
    """Every tap of every backbone: channels and stride of the map equal the recorded feature info."""
    kwargs = {"width": 0.25} if name in ("mobilenet_v1", "mobilenet_v2") else {}
    backbone = mv.create_backbone(name, **kwargs)
    backbone.out_indices  # noqa: B018
    everything = mv.create_backbone(name, out_indices=range(len(backbone.all_feature_info)), **kwargs).eval()
    strides = [f.stride for f in everything.feature_info]
    assert strides == sorted(strides) and strides[-1] == 32
    size = 64
    with torch.no_grad():
        feats = everything(torch.randn(1, 3, size, size))
    assert len(feats) == len(everything.feature_info)
    for fmap, info in zip(feats, everything.feature_info):
        assert isinstance(info, FeatureInfo)
        assert fmap.shape[1] == info.channels, info
        assert fmap.shape[-1] == size // info.stride, info
    # default selection: one block output per stride 2, 4, 8, 16, 32
    assert [f.stride for f in backbone.feature_info] == [2, 4, 8, 16, 32]
    assert not any(f.expansion for f in backbone.feature_info)


def test_mobilenet_v2_ssdlite_taps():
    backbone = mv.create_backbone("mobilenet_v2")
    taps = {(f.module, f.channels, f.stride) for f in backbone.all_feature_info}
    assert ("blocks.14.expand", 576, 16) in taps  # expansion output of block 15
    assert ("blocks.18", 1280, 32) in taps  # last 1x1 conv
    idx = [i for i, f in enumerate(backbone.all_feature_info) if f.module in ("blocks.14.expand", "blocks.18")]
    sel = mv.create_backbone("mobilenet_v2", width=0.5, out_indices=idx).eval()
    with torch.no_grad():
        c16, c32 = sel(torch.randn(1, 3, 320, 320))
    assert c16.shape == (1, 288, 20, 20) and c32.shape == (1, 1280, 10, 10)


def test_out_indices_errors():
    with pytest.raises(IndexError, match="out of range"):
        mv.create_backbone("mobilenet_v1", out_indices=(7,))
    with pytest.raises(ValueError, match="increasing"):
        mv.create_backbone("mobilenet_v1", out_indices=(3, 1))


def test_negative_out_indices():
    backbone = mv.create_backbone("mobilenet_v1", width=0.25, out_indices=(-2, -1))
    assert [f.stride for f in backbone.feature_info] == [16, 32]


# --- parameter counts: the reference implementations, and the literal figures ------------
@pytest.mark.parametrize("name,reference,expected", [
    ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None), 3_504_872),
    ("mobilenet_v1", lambda: timm.create_model("mobilenetv1_100", pretrained=False), 4_231_976),
    ("efficientnet_b0", lambda: torchvision.models.efficientnet_b0(weights=None), 5_288_548),
])
def test_param_counts_equal_reference(name, reference, expected):
    ours = n_params(mv.create_classifier(name))
    assert ours == expected == n_params(reference())


@pytest.mark.parametrize("name,expected", [
    ("efficientnet_b1", 7_794_184), ("efficientnet_b2", 9_109_994), ("efficientnet_b3", 12_233_232),
    ("efficientnet_b4", 19_341_616), ("efficientnet_b5", 30_389_784), ("efficientnet_b6", 43_040_704),
    ("efficientnet_b7", 66_347_960),
])
def test_efficientnet_param_counts(name, expected):
    assert n_params(mv.create_classifier(name)) == expected


@pytest.mark.parametrize("variant,expected", enumerate([2_078_504, 4_764_840, 7_808_168, 10_078_312, 14_838_352]))
def test_mobileone_fused_param_counts(variant, expected):
    model = mv.create_classifier(f"mobileone_s{variant}")
    folded = mv.reparameterize_model(model)
    assert n_params(folded) == expected
    assert n_params(model) == n_params(timm.create_model(f"mobileone_s{variant}", pretrained=False))


# --- MobileOne folding ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", range(5))
def test_mobileone_folding_is_exact_in_float64(variant):
    model = randomize_bn(mv.create_classifier(f"mobileone_s{variant}", num_classes=10)).double().eval()
    folded = mv.reparameterize_model(model)
    assert folded is not model
    assert any(b.branches for b in model.backbone.blocks), "the training model must stay unfolded"
    assert all(b.is_folded for b in folded.backbone.blocks)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-6, rel
    # idempotent
    again = mv.reparameterize_model(folded)
    with torch.no_grad():
        assert torch.equal(again(x), out)


def test_mobileone_block_folds_each_branch_kind():
    """Depthwise block with k=3 branches, scale and skip; pointwise block without scale."""
    from mobilevision.layers import MobileOneBlock

    for block in (MobileOneBlock(8, 8, 3, 1, groups=8, num_branches=3),
                  MobileOneBlock(8, 16, 1, num_branches=2),
                  MobileOneBlock(8, 8, 3, 1, groups=1, num_branches=1, use_se=True),
                  MobileOneBlock(8, 8, 3, 2, groups=8)):
        block = randomize_bn(block).double().eval()
        x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
        with torch.no_grad():
            ref = block(x)
            block.reparameterize()
            assert block.is_folded and len(block.branches) == 0
            torch.testing.assert_close(block(x), ref, rtol=1e-9, atol=1e-9)


# --- width multipliers and compound scaling ----------------------------------------------------------
@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.0, 1.4])
def test_mobilenet_v2_width_matches_torchvision(width):
    ours = mv.create_classifier("mobilenet_v2", width=width)
    ref = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
    assert n_params(ours) == n_params(ref)


@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.3])
def test_mobilenet_v1_any_width(width):
    backbone = mv.create_backbone("mobilenet_v1", width=width)
    assert backbone.feature_info[-1].channels == int(1024 * width + 4) // 8 * 8
    assert all(f.channels % 8 == 0 for f in backbone.all_feature_info)


def test_mobilenet_v1_rejects_non_positive_width():
    with pytest.raises(ValueError, match="positive"):
        mv.create_backbone("mobilenet_v1", width=0)


def test_mobilenet_v2_expansion_factor():
    backbone = mv.create_backbone("mobilenet_v2", expand_ratio=4)
    tap = next(f for f in backbone.all_feature_info if f.module == "blocks.14.expand")
    assert tap.channels == 96 * 4


def test_efficientnet_compound_scaling():
    assert compound_coefficients(0) == (1.0, 1.0, 224)
    w, d, r = compound_coefficients(1)
    assert (w, d, r) == pytest.approx((1.1, 1.2, 258))
    b0 = mv.create_backbone("efficientnet", phi=0)
    assert n_params(b0) == n_params(mv.create_backbone("efficientnet_b0"))
    phi1 = mv.create_backbone("efficientnet", phi=1.0)
    assert (phi1.width, phi1.depth, phi1.default_resolution) == pytest.approx((1.1, 1.2, 258))
    explicit = mv.create_backbone("efficientnet", width=1.2, depth=1.4, resolution=300)
    assert n_params(explicit) == n_params(mv.create_backbone("efficientnet_b3"))
    assert mv.create_backbone("efficientnet_b5").default_resolution == 456
    assert mv.create_classifier("efficientnet_b6").dropout.p == 0.5


def test_efficientnet_stochastic_depth_only_in_training():
    model = mv.create_classifier("efficientnet_b0", num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    rates = [b.drop_path.p for b in model.backbone.blocks if hasattr(b, "drop_path") and hasattr(b.drop_path, "p")]
    assert rates == sorted(rates) and 0 < max(rates) < 0.2


def test_classifier_output_shape():
    model = mv.create_classifier("mobilenet_v1", num_classes=7, width=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 96, 96)).shape == (3, 7)
