"""The benchmark CLI writes its markdown / CSV / plot with the expected rows (no assertion on timings)."""

import csv
import math

import mobilevision
from mobilevision.benchmark import main, parse_args
from mobilevision.evaluation import count_madds, count_params


def test_benchmark_quick(tmp_path):
    sections = main(["--quick", "--backbones", "mobilenet_v2,mobileone_s0", "--repeats", "2", "--warmup", "1",
                     "--max-resolution", "96", "--time-budget", "1", "--device", "cpu", "--out", tmp_path])

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
