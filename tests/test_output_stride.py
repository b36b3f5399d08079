"""output_stride 16 / 8 (DeepLabv3): the last strides become dilation, parameters unchanged, effective strides in
the feature info, and the "a trous" identity: without global pooling inside, the stride-32 network's outputs are
every (32 / output_stride)-th pixel of the dilated network's (derived by hand for zero-padded convolutions, so it
checks stride, dilation and padding together)."""

from __future__ import annotations

import pytest
import torch

from mobilevision.backbones import create_backbone
from mobilevision.layers import reparameterize_model
from mobilevision.models import create_classifier

FAMILIES = {"mobilenet_v1": {"width": 0.25}, "mobilenet_v2": {"width": 0.35}, "mobileone_s0": {},
            "efficientnet_b0": {"width": 0.25}}


def pair(name: str, output_stride: int):
    torch.manual_seed(0)
    plain = create_backbone(name, **FAMILIES[name]).eval()
    torch.manual_seed(0)
    dilated = create_backbone(name, output_stride=output_stride, **FAMILIES[name]).eval()
    return plain, dilated


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_dilated_backbone(name, output_stride):
    plain, dilated = pair(name, output_stride)
    assert sum(p.numel() for p in dilated.parameters()) == sum(p.numel() for p in plain.parameters())
    assert [f.stride for f in dilated.feature_info] == [s for s in (2, 4, 8, 16, 32) if s <= output_stride]
    assert dilated.feature_info[-1].channels == plain.feature_info[-1].channels
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        head_plain, head_dilated = plain.forward_head_features(x), dilated.forward_head_features(x)
        maps = dilated(x)
    assert head_dilated.shape[-1] == 64 // output_stride
    assert [m.shape[-1] for m in maps] == [64 // f.stride for f in dilated.feature_info]
    r = 32 // output_stride
    if name != "efficientnet_b0":  # squeeze-excite pools globally: the identity does not hold there
        torch.testing.assert_close(head_dilated[..., ::r, ::r], head_plain, rtol=1e-4, atol=1e-5)


def test_mobileone_folds_with_dilation():
    _, dilated = pair("mobileone_s0", 8)
    x = torch.rand(2, 3, 64, 64)
    folded = reparameterize_model(dilated)
    with torch.no_grad():
        ref = dilated.forward_head_features(x)
        # float32 folding rounds at ~1e-6 of the output scale (the same at output stride 32)
        torch.testing.assert_close(folded.forward_head_features(x), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    convs = [m for m in folded.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation != (1, 1)]
    assert convs and all(m.padding == tuple(m.dilation[0] * (k - 1) // 2 for k in m.kernel_size) for m in convs)


def test_output_stride_32_is_the_default_and_bad_values_fail():
    plain, same = pair("mobilenet_v2", 32)
    assert all(m.dilation == (1, 1) for m in same.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        create_backbone("mobilenet_v2", output_stride=4)
    classifier = create_classifier("mobilenet_v1", num_classes=3, width=0.25, output_stride=16)
    assert classifier(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    assert classifier.backbone.output_stride == 16
