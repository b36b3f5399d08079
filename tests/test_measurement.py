"""One timer and one p90 for the whole project, and evaluation pipelines that leave the user's RNG alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilevision.data import classification_eval_transforms, detection_eval_transforms
from mobilevision.data.segmentation import segmentation_eval_transforms, segmentation_train_transforms
from mobilevision.evaluation import complexity


def test_export_and_select_report_the_same_p90_for_the_same_runs(monkeypatch):
    """``export``'s latency (deploy.evaluate.latency_ms) and ``select`` / ``benchmark``
    (evaluation.time_interleaved) time with one clock and summarize with one p90: numpy's interpolated
    percentile of the runs, checked on a clock whose run times are known."""
    from mobilevision.deploy.evaluate import latency_ms

    durations = [0.004, 0.001, 0.009, 0.002, 0.0031, 0.0075, 0.005, 0.0012, 0.0044, 0.006]  # p90 between two runs
    clock = {"t": 0.0, "i": 0}

    def perf_counter():
        return clock["t"]

    class Model:
        meta = {"image_size": (4, 4)}
        batch = None

        def __call__(self, x):
            clock["t"] += durations[clock["i"] % len(durations)]
            clock["i"] += 1

    monkeypatch.setattr(complexity.time, "perf_counter", perf_counter)
    median, p90 = latency_ms(Model(), runs=len(durations), warmup=0)
    ms = np.array(durations) * 1e3
    assert median == pytest.approx(np.median(ms)) and p90 == pytest.approx(np.percentile(ms, 90))
    clock.update(t=0.0, i=0)
    stats = complexity.time_interleaved({"m": lambda: Model()(None)}, warmup=0, repeats=len(durations))["m"]
    assert (stats["median_ms"], stats["p90_ms"]) == pytest.approx((median, p90))


@pytest.mark.parametrize("pipeline", ["detection", "classification", "segmentation"])
def test_evaluation_pipelines_do_not_advance_the_users_generator(pipeline):
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    run = {"detection": lambda: detection_eval_transforms(32)(image, np.zeros((0, 4)), np.zeros(0)),
           "classification": lambda: classification_eval_transforms(32)(image),
           "segmentation": lambda: segmentation_eval_transforms(32)(image)}[pipeline]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first = run()
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)
    again = run()  # and they are deterministic, whatever the generator's state
    a, b = (first[0], again[0]) if isinstance(first, tuple) else (first, again)
    assert torch.equal(a, b)


def test_training_pipelines_still_draw_from_the_generator():
    """The augmentation pipelines keep drawing their seed from torch (reproducible under seed_everything)."""
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    train = segmentation_train_transforms(32)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train(image, np.zeros((40, 60), np.uint8))
    assert not torch.equal(torch.rand(3), expected)
