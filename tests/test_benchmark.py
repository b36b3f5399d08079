"""The benchmark CLI writes its markdown / CSV / plot with the expected rows (no assertion on timings)."""

import csv
import math

import pytest
import torch

import mobilevision
from mobilevision.cli import benchmark
from mobilevision.cli.benchmark import main, parse_args, synthetic_targets, torchvision_ssd
from mobilevision.evaluation import count_madds, count_params
from mobilevision.models import SSDLite


def test_benchmark_quick(tmp_path):
    sections = main(["--quick", "--sections", "backbones", "--backbones", "mobilenet_v2,mobileone_s0",
                     "--repeats", "2", "--warmup", "1", "--max-resolution", "96", "--time-budget", "1", "--device", "cpu", "--out", tmp_path])

    md = (tmp_path / "benchmark.md").read_text()
    png = tmp_path / "latency_vs_madds.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "backbones.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    assert [(r["backbone"], r["form"]) for r in rows] == [
        ("mobilenet_v2", ""), ("mobileone_s0", "unfolded"), ("mobileone_s0", "folded")]
    expected_cols = {"backbone", "form", "resolution", "params", "madds", "reference", "ref_params", "ref_madds",
                     "cpu_ms", "cpu_p90_ms", "cpu_ref_ms", "cpu_ratio", "cpu_runs"}
    assert expected_cols <= set(rows[0])
    assert len(sections) == 1 and len(sections[0].rows) == 3

    v2, unfolded, folded = rows
    model = mobilevision.create_classifier("mobilenet_v2")
    assert int(v2["params"]) == count_params(model)
    assert int(v2["resolution"]) == 96
    assert int(v2["madds"]) == count_madds(model, (1, 3, 96, 96))
    s0 = mobilevision.create_classifier("mobileone_s0")
    assert int(unfolded["params"]) == count_params(s0)
    assert int(folded["params"]) == count_params(mobilevision.reparameterize_model(s0))
    assert int(folded["params"]) < int(unfolded["params"])
    assert int(folded["madds"]) < int(unfolded["madds"])
    # same architecture as the references
    for r in rows:
        assert r["params"] == r["ref_params"] and r["madds"] == r["ref_madds"]
    assert v2["reference"].startswith("torchvision")
    assert "reparameterized" in folded["reference"]
    for r in rows:
        assert int(r["cpu_runs"]) >= 2
        for key in ("cpu_ms", "cpu_p90_ms", "cpu_ref_ms", "cpu_ratio"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0

    assert "| mobilenet_v2 |" in md and "| mobileone_s0 | folded |" in md
    assert "torch.get_num_threads()" in md and "Spearman" in md and "latency_vs_madds.png" in md


def test_parse_args_defaults():
    full, quick = parse_args([]), parse_args(["--quick"])
    assert full.max_resolution is None and quick.max_resolution == 160
    assert quick.repeats < full.repeats
    assert parse_args(["--quick", "--repeats", "7"]).repeats == 7
    assert full.sections == quick.sections == ["backbones", "detection", "segmentation", "runtimes"]
    assert (full.seg_size, quick.seg_size) == (513, 257)
    assert (full.det_size, full.det_width, full.det_batch, full.det_infer_batch) == (320, 1.0, 8, [1, 8])
    assert (quick.det_size, quick.det_width) == (160, 0.5)
    assert (full.runtime_size, quick.runtime_size, full.runtime_batch) == (224, 160, [1, 8])
    assert full.runtime_models == ["mobilenet_v2", "mobileone_s0", "efficientnet_b0", "ssdlite"]
    for bad in (["--sections", "nope"], ["--det-batch", "1"], ["--runtime-models", "resnet50"],
                ["--runtime-batch", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


# -- detection section -----------------------------------------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_benchmark_detection_section(tmp_path):
    sections = main(["--sections", "detection", "--det-size", "96", "--det-width", "0.35", "--det-batch", "2",
                     "--det-infer-batch", "2", "--repeats", "2", "--warmup", "1", "--time-budget", "1",
                     "--device", "cpu", "--out", tmp_path])
    assert [s.csv_name for s in sections] == ["detection"]
    assert not (tmp_path / "backbones.csv").exists() and not (tmp_path / "latency_vs_madds.png").exists()
    with open(tmp_path / "detection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["mode"], r["device"], r["batch"], r["resolution"]) for r in rows] == [
        ("inference", "cpu", "2", "96"), ("train step", "cpu", "2", "96")]
    params = count_params(SSDLite("mobilenet_v2", num_classes=80, width=0.35))
    for r in rows:
        for key in ("ours_ips", "tv_ips", "ratio", "ours_ms", "tv_ms"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0
        assert float(r["ratio"]) == pytest.approx(float(r["ours_ips"]) / float(r["tv_ips"]), rel=1e-3)
        assert int(r["runs"]) >= 2 and int(r["params"]) == params
    md = (tmp_path / "benchmark.md").read_text()
    assert "## Detection" in md and "| inference | cpu | 2 | 96 |" in md and "| train step | cpu | 2 | 96 |" in md
    assert "Preprocessing: both pipelines time the ImageNet normalization" in md
    assert "paper 4.3 M" in md and "paper 0.8 B" in md


@pytest.mark.usefixtures("one_thread")
def test_benchmark_segmentation_section(tmp_path):
    """Table 7 of the MobileNetV2 paper: parameters exact at 21 classes, MAdds at 513 whatever the latency size."""
    sections = main(["--sections", "segmentation", "--seg-size", "65", "--repeats", "1", "--warmup", "0",
                     "--time-budget", "0.1", "--device", "cpu", "--out", tmp_path])
    assert [s.csv_name for s in sections] == ["segmentation"]
    with open(tmp_path / "segmentation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and all(float(r["cpu_ms"]) > 0 for r in rows)
    paper = [r for r in rows if r["paper_params"]]
    assert [(r["network"], r["output_stride"], r["aspp"]) for r in paper] == [
        ("MNet V1", "16", "yes"), ("MNet V2*", "16", "yes"), ("MNet V2*", "16", "")]
    for r in paper:
        assert round(float(r["params"]) / 1e6, 2) == float(r["paper_params"]) / 1e6
    v2_star = paper[2]
    assert float(v2_star["madds"]) == pytest.approx(2.75, rel=0.01)
    assert "## Segmentation" in (tmp_path / "benchmark.md").read_text()


@pytest.mark.parametrize("size", [96, 320])
def test_anchors_match_torchvision(size):
    """Same count, order and scales as torchvision's DefaultBoxGenerator([[2, 3]] * 6, 0.2, 0.95);
    coordinates agree to float32 rounding only (ours: float64 then one rounding; torchvision: float32
    throughout), at most a few 1e-5 px at 320."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.image_list import ImageList

    model = SSDLite("mobilenet_v2", num_classes=80, width=0.35, image_size=size)
    ours = model.anchors_for(size)
    ref_gen = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    features = [torch.zeros(1, 1, h, w) for h, w in model.feature_sizes_for(size)]
    ref = ref_gen(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), features)[0]
    assert ref_gen.scales == model.anchor_generator.scales
    assert ours.shape == ref.shape == (sum(h * w * 6 for h, w in model.feature_sizes_for(size)), 4)
    assert ours.dtype == ref.dtype == torch.float32
    assert (ours - ref).abs().max() < 1e-4


@pytest.mark.usefixtures("one_thread")
def test_torchvision_ssd_same_network_and_loss():
    """The reference pipeline is the same detector: same parameters and the same loss
    (matching, 3:1 mining) on the same batch given the same anchors. (With each its own anchors the
    losses can differ slightly: every box of scale s_k has area s_k^2, so a ground-truth box containing
    several of them has tied IoUs, and the last-bit differences of the anchors decide the forced match.)"""
    from torchvision.models.detection.image_list import ImageList

    torch.manual_seed(0)
    ours = SSDLite("mobilenet_v2", num_classes=80, width=0.35, image_size=96).train()
    ref = torchvision_ssd(ours, 96).train()
    assert count_params(ref) == count_params(ours)
    x = torch.rand(2, 3, 96, 96)
    targets = synthetic_targets(2, 96, 80)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = ours((x - mean) / std)
    features = [torch.zeros(1, 1, h, w) for h, w in out["feature_sizes"]]
    ref_anchors = ref.anchor_generator(ImageList(x, [(96, 96)] * 2), features)
    loss = ours.compute_loss({**out, "anchors": ref_anchors}, targets)
    ref_loss = ref(list(x), [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets])
    torch.testing.assert_close(loss["loss_cls"], ref_loss["classification"])
    torch.testing.assert_close(loss["loss_box"], ref_loss["bbox_regression"])


# -- runtimes section ------------------------------------------------------------------------------

def test_benchmark_runtimes_section(tmp_path):
    """MobileOne-S0 only, at 64 px (folded export, timm reference; ~15 s): the other rows differ only in the models
    built (the full run of the section is on the results page of the documentation)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    sections = main(["--quick", "--sections", "runtimes", "--runtime-models", "mobileone_s0", "--runtime-size", "64",
                     "--runtime-batch", "1,2", "--runtime-backends", "onnx", "--repeats", "2", "--warmup", "1",
                     "--time-budget", "1", "--out", tmp_path])
    assert [s.csv_name for s in sections] == ["runtimes"]
    with open(tmp_path / "runtimes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["batch"], r["resolution"]) for r in rows] == [
        ("MobileOne-S0 (folded)", "1", "64"), ("MobileOne-S0 (folded)", "2", "64")]
    assert all(r["reference"].startswith("timm mobileone_s0") for r in rows)
    times = ("eager_ms", "ort_ms", "int8_ms", "ref_eager_ms", "ref_ort_ms")
    ratios = {"ort_vs_eager": ("ort_ms", "eager_ms"), "int8_vs_ort": ("int8_ms", "ort_ms"),
              "ours_vs_ref_ort": ("ort_ms", "ref_ort_ms"), "ref_ort_vs_eager": ("ref_ort_ms", "ref_eager_ms")}
    for r in rows:
        for key in times + tuple(ratios):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0, key
        for key, (a, b) in ratios.items():  # 4 decimals in the CSV
            assert float(r[key]) == pytest.approx(float(r[a]) / float(r[b]), rel=2e-3, abs=2e-4), key
        assert int(r["runs"]) >= 2 and int(r["threads"]) == torch.get_num_threads()
    # the float32 exports compute what eager does (first batch); int8 roughly
    assert float(rows[0]["ort_rel_err"]) < 1e-4 and float(rows[0]["ref_ort_rel_err"]) < 1e-4
    assert float(rows[0]["int8_rel_err"]) < 0.5
    md = (tmp_path / "benchmark.md").read_text()
    assert "## Runtimes" in md and "| MobileOne-S0 (folded) | timm mobileone_s0 (reparameterized) | 2 | 64 |" in md
    assert "onnxruntime" in md and "VNNI: " in md and "intra-op threads" in md
    assert "ORT ours/ref <= 1.05 in" in md


def test_vnni_line(monkeypatch):
    monkeypatch.setattr(benchmark.runtimes, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    assert benchmark.runtimes.vnni_line().startswith("VNNI: yes (avx512_vnni")
    monkeypatch.setattr(benchmark.runtimes, "cpu_flags", lambda: {"avx2", "fma"})
    assert benchmark.runtimes.vnni_line().startswith("VNNI: no") and "widest SIMD avx2" in benchmark.runtimes.vnni_line()


def test_benchmark_runtimes_executorch_columns(tmp_path):
    """The ExecuTorch columns (XNNPACK float32 / int8, ours and the timm reference lowered the same way): the
    float32 programs compute what eager does, the int8 ones roughly, every time and ratio is filled in."""
    pytest.importorskip("executorch")
    sections = main(["--quick", "--sections", "runtimes", "--runtime-models", "mobileone_s0", "--runtime-size", "64",
                     "--runtime-batch", "2", "--runtime-backends", "onnx,executorch", "--repeats", "2", "--warmup",
                     "1", "--time-budget", "1", "--out", tmp_path])
    (row,) = sections[0].rows
    for key in ("et_ms", "et_int8_ms", "ref_et_ms", "ref_et_int8_ms"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["et_vs_ort"] == pytest.approx(row["et_ms"] / row["ort_ms"])
    assert row["et_int8_vs_et"] == pytest.approx(row["et_int8_ms"] / row["et_ms"])
    assert row["ours_vs_ref_et"] == pytest.approx(row["et_ms"] / row["ref_et_ms"])
    assert float(row["et_rel_err"]) < 1e-4 and float(row["ref_et_rel_err"]) < 1e-4
    assert 0 < float(row["et_int8_rel_err"]) < 0.5
    md = (tmp_path / "benchmark.md").read_text()
    assert "`ET`: executorch 1.5" in md and "ET int8 faster than ET float32 in" in md
