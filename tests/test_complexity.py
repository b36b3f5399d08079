"""Params / MAdds counting against the published numbers, latency measurement, Spearman correlation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import mobilevision
from mobilevision.evaluation import count_madds, count_params, measure_latency, measure_latency_interleaved, spearman


def _within(value: float, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


# -- the counter itself ----------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 4, 32])
def test_conv_madds_respect_groups(groups):
    conv = nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=groups, bias=True)
    # 64 outputs x (32 / groups inputs x 3 x 3) per output pixel, 8 x 8 output pixels
    assert count_madds(conv, (1, 32, 16, 16)) == 64 * (32 // groups) * 9 * 8 * 8


def test_depthwise_conv_madds():
    conv = nn.Conv2d(48, 48, 5, padding=2, groups=48, bias=False)
    assert count_madds(conv, (2, 48, 10, 10)) == 2 * 48 * 25 * 10 * 10


def test_linear_madds_and_params():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    assert count_madds(model, (3, 10)) == 3 * (10 * 20 + 20 * 5)
    assert count_params(model) == 10 * 20 + 20 + 20 * 5 + 5


def test_count_params_shared_and_trainable():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, lin)
    assert count_params(model) == 20
    lin.bias.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 16


class _DataDependent(nn.Module):
    """Forward needs real values (a meta tensor has none): count_madds falls back to a real pass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return y if float(y.sum()) >= 0 else -y


def test_count_madds_falls_back_to_real_pass():
    assert count_madds(_DataDependent(), (1, 3, 5, 5)) == 4 * 3 * 25


def test_count_madds_restores_training_mode():
    model = mobilevision.create_classifier("mobilenet_v1", width=0.25)
    model.train()
    count_madds(model, (1, 3, 64, 64))
    assert model.training


# -- published numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("width,paper", [(1.0, 569e6), (0.75, 325e6), (0.5, 149e6), (0.25, 41e6)])
def test_mobilenet_v1_width_madds(width, paper):
    """MobileNetV1 Table 6 (224 x 224)."""
    model = mobilevision.create_classifier("mobilenet_v1", width=width)
    assert _within(count_madds(model, (1, 3, 224, 224)), paper, 0.03)


@pytest.mark.parametrize("resolution,paper", [(192, 418e6), (160, 290e6), (128, 186e6)])
def test_mobilenet_v1_resolution_madds(resolution, paper):
    """MobileNetV1 Table 7 (width 1.0)."""
    model = mobilevision.create_classifier("mobilenet_v1")
    assert _within(count_madds(model, (1, 3, resolution, resolution)), paper, 0.03)


def test_mobilenet_v1_params():
    assert _within(count_params(mobilevision.create_classifier("mobilenet_v1")), 4.2e6, 0.03)


def test_mobilenet_v2_madds_and_params():
    """MobileNetV2 Table 4: 300M MAdds at 1.0 / 224.

    The paper lists 3.4M params; the reference implementations (TF-slim, torchvision) have 3.5M, as
    ours does, so params are checked against torchvision.
    """
    from torchvision.models import mobilenet_v2

    model = mobilevision.create_classifier("mobilenet_v2")
    assert _within(count_madds(model, (1, 3, 224, 224)), 300e6, 0.03)
    assert count_madds(model, (1, 3, 224, 224)) == count_madds(mobilenet_v2(), (1, 3, 224, 224))
    assert count_params(model) == count_params(mobilenet_v2())


def test_efficientnet_b0_madds_match_torchvision():
    """EfficientNet paper Table 2: B0 is 0.39B FLOPs (multiply-adds) and 5.3M params."""
    from torchvision.models import efficientnet_b0

    ours = count_madds(mobilevision.create_classifier("efficientnet_b0"), (1, 3, 224, 224))
    theirs = count_madds(efficientnet_b0(), (1, 3, 224, 224))
    assert ours == theirs
    assert _within(ours, 0.39e9, 0.03)
    assert _within(count_params(mobilevision.create_classifier("efficientnet_b0")), 5.3e6, 0.03)


def test_mobileone_s0_folded_madds():
    """MobileOne paper Table 8: S0 is 0.27 GMAdds and 2.1M params once re-parameterized."""
    model = mobilevision.create_classifier("mobileone_s0")
    folded = mobilevision.reparameterize_model(model)
    assert _within(count_madds(folded, (1, 3, 224, 224)), 0.27e9, 0.05)
    assert _within(count_params(folded), 2.1e6, 0.05)
    # the train-time branches only add work
    assert count_madds(model, (1, 3, 224, 224)) > count_madds(folded, (1, 3, 224, 224))


@pytest.mark.parametrize("name,paper_madds,paper_params", [
    ("mobileone_s1", 0.825e9, 4.8e6),
    ("mobileone_s2", 1.299e9, 7.8e6),
    ("mobileone_s3", 1.896e9, 10.1e6),
    ("mobileone_s4", 2.978e9, 14.8e6),
])
def test_mobileone_s1_s4_folded_madds(name, paper_madds, paper_params):
    """MobileOne paper Table 8 (S1..S4: 0.82 / 1.30 / 1.89 / 2.98 GMAdds; 4.8 / 7.8 / 10.1 / 14.8M params)."""
    folded = mobilevision.reparameterize_model(mobilevision.create_classifier(name))
    assert _within(count_madds(folded, (1, 3, 224, 224)), paper_madds, 0.03)
    assert _within(count_params(folded), paper_params, 0.03)


# -- latency ---------------------------------------------------------------------------------------

def test_measure_latency_reports_stats():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    stats = measure_latency(model, torch.zeros(1, 3, 16, 16), warmup=1, repeats=4, device="cpu")
    assert stats["repeats"] == 4
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert all(math.isfinite(v) for v in stats.values())


def test_measure_latency_interleaved_time_budget():
    a, b = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 4, 3)
    out = measure_latency_interleaved({"a": a, "b": b}, torch.zeros(1, 3, 16, 16), warmup=0, repeats=1000,
                                      device="cpu", time_budget_s=0.0, min_repeats=3)
    assert out["a"]["repeats"] == out["b"]["repeats"] == 3


# -- spearman --------------------------------------------------------------------------------------

def test_spearman_hand_computed():
    # ranks of x: 1 2 3 4 5; ranks of y (y = 10, 30, 20, 50, 40): 1 3 2 5 4
    # d = 0 -1 1 -1 1, sum d^2 = 4, rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [10, 30, 20, 50, 40]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)


def test_spearman_ties_averaged():
    # x ranks: 1.5 1.5 3 4, y ranks: 1 2 3 4 -> Pearson of the ranks, by hand:
    # rx - mean = -1 -1 0.5 1.5 ... mean of (1.5,1.5,3,4) = 2.5 -> (-1, -1, 0.5, 1.5); ry - 2.5 = (-1.5, -0.5, 0.5, 1.5)
    # cov = 1.5 + 0.5 + 0.25 + 2.25 = 4.5; |rx|^2 = 1 + 1 + 0.25 + 2.25 = 4.5; |ry|^2 = 5
    assert spearman([7, 7, 8, 9], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_spearman_degenerate():
    assert math.isnan(spearman([1.0], [2.0]))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])
