"""``mobilevision select``: Pareto front and budget choice, the published accuracy file against its sources, and a
tiny end-to-end sweep whose config trains."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
import yaml

from mobilevision.cli import select as select_cli
from mobilevision.deploy.formats import read_exported_metadata
from mobilevision.backbones import PUBLISHED_TOP1_FILE, PublishedTop1, load_published_top1
from mobilevision.evaluation.selection import (
    Candidate,
    GridPoint,
    candidate_grid,
    choose,
    fastest,
    latency_madds_correlation,
    pareto_front,
    published_accuracy,
)


# -- Pareto front and budget choice on hand-made points --------------------------------------------------------

def cand(name: str, latency: float | None, top1: float | None, p90: float | None = None, task: str = "classification",
         size: int = 224, backbone: str = "mobilenet_v2") -> Candidate:
    point = GridPoint(name, task, "mobilenet_v2", backbone, 1.0, size, 224)
    acc = None if top1 is None else PublishedTop1(top1, name, "hand-made")
    lat = None if latency is None else {"median_ms": latency, "p90_ms": latency if p90 is None else p90}
    return Candidate(point, acc, madds=1, params=1, latency=lat)


def names(cs) -> list[str]:
    return [c.name for c in cs]


def test_front_and_choice_on_hand_made_points():
    cs = [cand("a", 1.0, 50.0), cand("b", 2.0, 60.0), cand("c", 3.0, 55.0),  # c: slower and worse than b
          cand("d", 4.0, 70.0), cand("e", 5.0, 70.0)]                         # e: as accurate as d, slower
    assert names(pareto_front(cs)) == ["a", "b", "d"]
    assert choose(cs, 0.5) is None
    assert choose(cs, 1.0).name == "a"            # the budget is inclusive
    assert choose(cs, 3.5).name == "b"            # c fits too, but b is more accurate
    assert choose(cs, 100).name == "d"            # d and e tie on accuracy: the faster
    assert fastest(cs).name == "a"


def test_ties_and_equal_latencies():
    cs = [cand("b2", 2.0, 60.0), cand("b1", 2.0, 60.0),  # an exact tie: neither dominates, both on the front
          cand("f", 2.0, 58.0),                          # same latency, less accurate: dominated
          cand("g", 1.0, 40.0)]
    assert names(pareto_front(cs)) == ["g", "b1", "b2"]  # g first (fastest), then the tie (by name)
    assert choose(cs, 2.0).name == "b1"                  # a tie goes to the first by name
    assert choose(cs, 1.9).name == "g"


def test_missing_accuracy_is_listed_but_never_ranked():
    cs = [cand("fast_unrated", 0.5, None), cand("a", 1.0, 50.0), cand("unmeasured", None, 90.0)]
    assert names(pareto_front(cs)) == ["a"]
    assert choose(cs, 0.7) is None                       # only the unrated one fits: no pick, no estimate
    assert choose(cs, 1e9).name == "a"                   # an unmeasured candidate is never picked
    assert fastest(cs).name == "fast_unrated"            # but it is named as the fastest


def test_statistic_p90_or_median():
    cs = [cand("noisy", 1.0, 70.0, p90=3.0), cand("steady", 2.0, 65.0, p90=2.1)]
    assert choose(cs, 2.5, "p90").name == "steady"
    assert choose(cs, 2.5, "median").name == "noisy"
    assert names(pareto_front(cs, "p90")) == ["steady", "noisy"]
    assert names(pareto_front(cs, "median")) == ["noisy"]
    with pytest.raises(ValueError, match="statistic"):
        pareto_front(cs, "mean")


def test_detection_prefers_the_larger_input_of_the_same_backbone():
    cs = [cand("det_192", 10.0, 65.4, task="ssdlite", size=192), cand("det_320", 25.0, 65.4, task="ssdlite", size=320),
          cand("other_320", 30.0, 60.0, task="ssdlite", size=320, backbone="mobilenet_v1")]
    assert names(pareto_front(cs)) == ["det_192", "det_320"]  # other_320: slower and worse backbone
    assert choose(cs, 26).name == "det_320"
    assert choose(cs, 24).name == "det_192"


def test_random_points_choice_is_on_the_front_and_the_front_is_undominated():
    rng = random.Random(0)
    for _ in range(200):
        cs = [cand(f"p{i}", rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]), rng.choice([None, 50.0, 60.0, 70.0]))
              for i in range(rng.randint(1, 8))]
        front = pareto_front(cs)
        rated = [c for c in cs if c.top1 is not None]
        for c in front:
            assert not any(o.latency_ms() <= c.latency_ms() and o.top1 >= c.top1
                           and (o.latency_ms(), o.top1) != (c.latency_ms(), c.top1) for o in rated)
        for c in rated:
            if c not in front:
                assert any(o.latency_ms() <= c.latency_ms() and o.top1 >= c.top1 for o in front)
        for budget in (0.5, 1.0, 2.5, 5.0):
            pick = choose(cs, budget)
            fits = [c for c in rated if c.latency_ms() <= budget]
            assert (pick is None) == (not fits)
            if pick is not None:
                assert pick in front and pick.top1 == max(c.top1 for c in fits)


def test_spearman_of_latency_with_madds():
    cs = [cand(f"p{i}", float(i + 1), 50.0) for i in range(4)]
    for c, m in zip(cs, (10, 20, 40, 30)):
        c.madds = m
    corr = latency_madds_correlation(cs)
    assert corr["n"] == 4 and corr["madds"] == pytest.approx(0.8)


def test_time_interleaved_settle_runs_each_callable_right_before_its_timed_run():
    from mobilevision.evaluation import time_interleaved

    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    stats = time_interleaved(fns, warmup=0, repeats=2, settle=1)
    assert calls == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a"]
    assert all(s["repeats"] == 2 for s in stats.values())


# -- the published accuracy file against its sources -----------------------------------------------------------
# Copied from the reference tables (shared/reference/imagenet_accuracy.md), independently of the data file.

# Source: github.com/tensorflow/models, research/slim/nets/mobilenet_v1.md, commits
# 10cf1c0adfc8a7adaa476bf4ebb7e6c576526a5f and 02c04f49a188ba9a515100a3375a6359f3fffef1 (float checkpoints)
MOBILENET_V1_TABLE = """
| Model | alpha | resolution | Million MACs | Million Parameters | Top-1 | Top-5 |
|---|---|---|---|---|---|---|
| MobileNet_v1_1.0_224 | 1.0 | 224 | 569 | 4.24 | 70.9 | 89.9 |
| MobileNet_v1_1.0_192 | 1.0 | 192 | 418 | 4.24 | 70.0 | 89.2 |
| MobileNet_v1_1.0_160 | 1.0 | 160 | 291 | 4.24 | 68.0 | 87.7 |
| MobileNet_v1_1.0_128 | 1.0 | 128 | 186 | 4.24 | 65.2 | 85.8 |
| MobileNet_v1_0.75_224 | 0.75 | 224 | 317 | 2.59 | 68.4 | 88.2 |
| MobileNet_v1_0.75_192 | 0.75 | 192 | 233 | 2.59 | 67.2 | 87.3 |
| MobileNet_v1_0.75_160 | 0.75 | 160 | 162 | 2.59 | 65.3 | 86.0 |
| MobileNet_v1_0.75_128 | 0.75 | 128 | 104 | 2.59 | 62.1 | 83.9 |
| MobileNet_v1_0.50_224 | 0.50 | 224 | 150 | 1.34 | 63.3 | 84.9 |
| MobileNet_v1_0.50_192 | 0.50 | 192 | 110 | 1.34 | 61.7 | 83.6 |
| MobileNet_v1_0.50_160 | 0.50 | 160 | 77 | 1.34 | 59.1 | 81.9 |
| MobileNet_v1_0.50_128 | 0.50 | 128 | 49 | 1.34 | 56.3 | 79.4 |
| MobileNet_v1_0.25_224 | 0.25 | 224 | 41 | 0.47 | 49.8 | 74.2 |
| MobileNet_v1_0.25_192 | 0.25 | 192 | 34 | 0.47 | 47.7 | 72.3 |
| MobileNet_v1_0.25_160 | 0.25 | 160 | 21 | 0.47 | 45.5 | 70.3 |
| MobileNet_v1_0.25_128 | 0.25 | 128 | 14 | 0.47 | 41.5 | 66.3 |
"""

# Source: github.com/tensorflow/models, research/slim/nets/mobilenet/README.md, commits
# 60c28f91c1a69098fa8d69e4430705981fc4e132 and 0ba83cf0211401a8505505276c59418f15338d31
MOBILENET_V2_TABLE = """
| Checkpoint | depth multiplier | resolution | MACs (M) | Parameters (M) | Top 1 Accuracy | Top 5 Accuracy | Mobile CPU (ms) Pixel 1 |
|---|---|---|---|---|---|---|---|
| mobilenet_v2_1.4_224 | 1.4 | 224 | 582 | 6.06 | 75.0 | 92.5 | 138.0 |
| mobilenet_v2_1.3_224 | 1.3 | 224 | 509 | 5.34 | 74.4 | 92.1 | 123.0 |
| mobilenet_v2_1.0_224 | 1.0 | 224 | 300 | 3.47 | 71.8 | 91.0 | 73.8 |
| mobilenet_v2_1.0_192 | 1.0 | 192 | 221 | 3.47 | 70.7 | 90.1 | 55.1 |
| mobilenet_v2_1.0_160 | 1.0 | 160 | 154 | 3.47 | 68.8 | 89.0 | 40.2 |
| mobilenet_v2_1.0_128 | 1.0 | 128 | 99 | 3.47 | 65.3 | 86.9 | 27.6 |
| mobilenet_v2_1.0_96 | 1.0 | 96 | 56 | 3.47 | 60.3 | 83.2 | 17.6 |
| mobilenet_v2_0.75_224 | 0.75 | 224 | 209 | 2.61 | 69.8 | 89.6 | 55.8 |
| mobilenet_v2_0.75_192 | 0.75 | 192 | 153 | 2.61 | 68.7 | 88.9 | 41.6 |
| mobilenet_v2_0.75_160 | 0.75 | 160 | 107 | 2.61 | 66.4 | 87.3 | 30.4 |
| mobilenet_v2_0.75_128 | 0.75 | 128 | 69 | 2.61 | 63.2 | 85.3 | 21.9 |
| mobilenet_v2_0.75_96 | 0.75 | 96 | 39 | 2.61 | 58.8 | 81.6 | 14.2 |
| mobilenet_v2_0.5_224 | 0.5 | 224 | 97 | 1.95 | 65.4 | 86.4 | 28.7 |
| mobilenet_v2_0.5_192 | 0.5 | 192 | 71 | 1.95 | 63.9 | 85.4 | 21.1 |
| mobilenet_v2_0.5_160 | 0.5 | 160 | 50 | 1.95 | 61.0 | 83.2 | 14.9 |
| mobilenet_v2_0.5_128 | 0.5 | 128 | 32 | 1.95 | 57.7 | 80.8 | 9.9 |
| mobilenet_v2_0.5_96 | 0.5 | 96 | 18 | 1.95 | 51.2 | 75.8 | 6.4 |
| mobilenet_v2_0.35_224 | 0.35 | 224 | 59 | 1.66 | 60.3 | 82.9 | 19.7 |
| mobilenet_v2_0.35_192 | 0.35 | 192 | 43 | 1.66 | 58.2 | 81.2 | 14.6 |
| mobilenet_v2_0.35_160 | 0.35 | 160 | 30 | 1.66 | 55.7 | 79.1 | 10.5 |
| mobilenet_v2_0.35_128 | 0.35 | 128 | 20 | 1.66 | 50.8 | 75.0 | 6.9 |
| mobilenet_v2_0.35_96 | 0.35 | 96 | 11 | 1.66 | 45.5 | 70.4 | 4.5 |
"""

# Source: github.com/tensorflow/tpu, models/official/efficientnet/README.md, HEAD version
# 9e9110fd68c5abefefbaa368afc439c33dcb7a13 (the released AutoAugment checkpoints)
EFFICIENTNET_TABLE = """
| Training recipe (README row) | B0 | B1 | B2 | B3 | B4 | B5 | B6 | B7 |
|---|---|---|---|---|---|---|---|---|
| AutoAugment (AA) (current README) | 77.1% | 79.1% | 80.1% | 81.6% | 82.9% | 83.6% | 84.0% | 84.3% |
"""

# Source: github.com/apple/ml-mobileone, README.md, commit b7f4e6d48884593c7eb46eedc53c3a097c09e957
MOBILEONE_TABLE = """
| Model | Top-1 Acc. | Latency* (ms) |
|---|---|---|
| MobileOne-S0 | 71.4 | 0.79 |
| MobileOne-S1 | 75.9 | 0.89 |
| MobileOne-S2 | 77.4 | 1.18 |
| MobileOne-S3 | 78.1 | 1.53 |
| MobileOne-S4 | 79.4 | 1.86 |
"""


def _rows(table: str) -> list[list[str]]:
    lines = [ln for ln in table.strip().splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines[1:]]  # without the header


def _width(text: str) -> float:
    return round(float(text), 4)


def reference_top1() -> dict[tuple[str, float | None, int], tuple[float, str, str]]:
    """(backbone, width, resolution) -> (top-1, published name, a string the source must contain)."""
    ref = {}
    for name, alpha, res, _, _, top1, _ in _rows(MOBILENET_V1_TABLE):
        ref[("mobilenet_v1", _width(alpha), int(res))] = (float(top1), name, "10cf1c0adfc8a7adaa476bf4ebb7e6c576526a5f")
    for name, dm, res, _, _, top1, _, _ in _rows(MOBILENET_V2_TABLE):
        ref[("mobilenet_v2", _width(dm), int(res))] = (float(top1), name, "60c28f91c1a69098fa8d69e4430705981fc4e132")
    header = [c.strip() for c in EFFICIENTNET_TABLE.strip().splitlines()[0].strip("|").split("|")]
    (row,) = _rows(EFFICIENTNET_TABLE)
    assert row[0] == "AutoAugment (AA) (current README)"
    resolutions = (224, 240, 260, 300, 380, 456, 528, 600)  # the variants' published resolutions
    for variant, value, res in zip(header[1:], row[1:], resolutions):
        ref[(f"efficientnet_{variant.lower()}", None, res)] = (float(value.rstrip("%")), f"EfficientNet-{variant} (AA)",
                                                               "9e9110fd68c5abefefbaa368afc439c33dcb7a13")
    for name, top1, _ in _rows(MOBILEONE_TABLE):
        ref[(f"mobileone_{name.split('-')[1].lower()}", None, 224)] = (float(top1), name,
                                                                       "b7f4e6d48884593c7eb46eedc53c3a097c09e957")
    return ref


def test_every_row_of_the_accuracy_file_equals_its_source_table():
    ref = reference_top1()
    assert len(ref) == 16 + 22 + 8 + 5
    table = load_published_top1()
    assert set(table) == set(ref)
    for key, (top1, name, commit) in ref.items():
        acc = table[key]
        assert (acc.top1, acc.published_name) == (top1, name), key
        assert commit in acc.source, key
    # the file itself: one row per key, every row names a source
    from importlib import resources

    text = resources.files("mobilevision.backbones").joinpath(PUBLISHED_TOP1_FILE).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(ref) and all(r["source"].startswith("github.com/") for r in rows)


def test_grids_are_the_published_ones_and_each_point_has_its_figure():
    table = load_published_top1()
    grid = candidate_grid("classification", table)
    by_family = {f: [p for p in grid if p.family == f] for f in ("mobilenet_v1", "mobilenet_v2", "mobileone",
                                                                 "efficientnet")}
    assert {f: len(ps) for f, ps in by_family.items()} == {"mobilenet_v1": 16, "mobilenet_v2": 22, "mobileone": 5,
                                                           "efficientnet": 8}
    assert {(p.width, p.image_size) for p in by_family["mobilenet_v2"] if p.width in (1.4, 1.3)} == {(1.4, 224),
                                                                                                      (1.3, 224)}
    assert [p.image_size for p in by_family["efficientnet"]] == [224, 240, 260, 300, 380, 456, 528, 600]
    assert all(published_accuracy(p, table) is not None for p in grid)
    assert len({p.name for p in grid}) == len(grid)
    det = candidate_grid("ssdlite", table, sizes=(320, 192))
    assert len(det) == (4 + 6 + 5 + 8) * 2 and {p.image_size for p in det} == {320, 192}
    mbv2 = next(p for p in det if p.name == "ssdlite_mobilenet_v2_0.35_192")
    assert published_accuracy(mbv2, table).top1 == 60.3  # the backbone's published top-1 at 224
    with pytest.raises(ValueError, match="families"):
        candidate_grid("classification", table, ["resnet"])


def test_mobilenet_v2_widths_round_channels_as_published():
    """The depth multipliers 1.4 / 1.3 / 0.35 round channels like the TF reference: MAdds equal TF-slim's."""
    from mobilevision.evaluation import count_madds
    from mobilevision.models import create_classifier

    published = {1.4: 582, 1.3: 509, 1.0: 300, 0.75: 209, 0.5: 97, 0.35: 59}  # M MACs at 224, TF-slim table
    for width, madds in published.items():
        ours = count_madds(create_classifier("mobilenet_v2", width=width)) / 1e6
        assert abs(ours - madds) < 1, width  # e.g. 300.8 M for the published 300


# -- a tiny sweep, end to end ----------------------------------------------------------------------------------
TINY = ["--candidates", "mobilenet_v2_0.35_96,mobilenet_v2_0.5_96,mobileone_s0,mobileone_s1",
        "--families", "mobilenet_v2,mobileone", "--repeats", "3", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("select")
    code = select_cli.main(["--latency-ms", "1000", "--output", str(out), *TINY])
    return out, code


def test_tiny_sweep_writes_table_plot_and_config(tiny_sweep):
    out, code = tiny_sweep
    assert code == 0
    folder = out / "classification_torch_1000ms"
    for name in ("report.md", "candidates.csv", "pareto.png", "config.yaml"):
        assert (folder / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(folder / "candidates.csv")))
    assert sorted(r["name"] for r in rows) == ["mobilenet_v2_0.35_96", "mobilenet_v2_0.5_96", "mobileone_s0",
                                               "mobileone_s1"]
    assert all(float(r["p90_ms"]) >= float(r["median_ms"]) > 0 and r["repeats"] == "3" for r in rows)
    (pick,) = [r for r in rows if r["pick"] == "True"]
    assert pick["name"] == "mobileone_s1"  # the most accurate, and all fit in a second
    assert "Pareto front" in (folder / "report.md").read_text()
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["init_args"]["backbone"] == "mobileone_s1"
    assert config["model"]["init_args"]["width"] is None  # the default recipe's width 0.5 must not stay
    assert config["data"]["init_args"]["image_size"] == 224
    cache = json.loads(next((out / "latency_cache").glob("*__torch.json")).read_text())
    assert len(cache["entries"]) == 4


def test_written_config_trains(tiny_sweep, tmp_path, one_thread):
    from mobilevision.cli.train import main as train

    out, _ = tiny_sweep
    cli = train(["fit", "--config", str(out / "classification_torch_1000ms" / "config.yaml"),
                 "--data.init_args.root", str(tmp_path / "glyphs"), "--data.init_args.glyphs_train_per_class", "2",
                 "--data.init_args.glyphs_val_per_class", "1", "--data.init_args.glyphs_image_size", "64",
                 "--data.init_args.batch_size", "2", "--trainer.fast_dev_run", "true",
                 "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.hparams.backbone == "mobileone_s1" and cli.model.hparams.image_size == 224
    assert "train/loss" in cli.trainer.callback_metrics


def test_second_call_is_answered_from_the_cache_and_an_impossible_budget_names_the_fastest(tiny_sweep, capsys,
                                                                                           monkeypatch):
    out, _ = tiny_sweep

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(select_cli, "measure", no_measuring)
    capsys.readouterr()
    code = select_cli.main(["--latency-ms", "0.001", "--output", str(out), *TINY])
    text = " ".join(capsys.readouterr().out.split())
    assert code == 1
    rows = list(csv.DictReader(open(out / "classification_torch_0.001ms" / "candidates.csv")))
    fast = min(rows, key=lambda r: float(r["p90_ms"]))
    assert f"No candidate meets the budget of 0.001 ms (p90): the fastest is {fast['name']} at " \
           f"{float(fast['p90_ms']):.2f} ms" in text
    assert not (out / "classification_torch_0.001ms" / "config.yaml").exists()
    assert "published" in text and "not measured here" in text


def test_invalid_arguments(tmp_path, capsys):
    assert select_cli.main(["--latency-ms", "5", "--candidates", "resnet50", "--output", str(tmp_path)]) == 2
    assert "unknown candidates ['resnet50']" in capsys.readouterr().err
    assert select_cli.main(["--latency-ms", "-1", "--output", str(tmp_path)]) == 2
    assert select_cli.main(["--output", str(tmp_path)]) == 2
    assert "--latency-ms is required" in capsys.readouterr().err
    assert select_cli.main(["--task", "ssdlite", "--families", "mobileone", "--sizes", "320", "--list"]) == 0
    assert capsys.readouterr().out.split()[::4] == [f"ssdlite_mobileone_s{i}_320" for i in range(5)]


def test_ssdlite_sweep_writes_a_config_that_trains(tmp_path, one_thread):
    from mobilevision.cli.train import main as train

    out = tmp_path / "select"
    code = select_cli.main(["--task", "ssdlite", "--latency-ms", "1000", "--sizes", "128,96", "--candidates",
                            "ssdlite_mobilenet_v2_0.35_96,ssdlite_mobilenet_v2_0.35_128", "--repeats", "3",
                            "--warmup", "1", "--threads", "1", "--output", str(out)])
    assert code == 0
    folder = out / "ssdlite_torch_1000ms"
    rows = {r["name"]: r for r in csv.DictReader(open(folder / "candidates.csv"))}
    assert rows["ssdlite_mobilenet_v2_0.35_128"]["pick"] == "True"  # same backbone: the larger input
    assert rows["ssdlite_mobilenet_v2_0.35_128"]["top1"] == "60.3"  # the backbone's published figure
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["class_path"].endswith("DetectionTask")
    assert (config["model"]["init_args"]["backbone"], config["model"]["init_args"]["width"],
            config["data"]["init_args"]["image_size"]) == ("mobilenet_v2", 0.35, 128)
    # the network select timed is the one the config builds: the recipe's first_stride and default boxes, the
    # same parameters and MAdds, and re-measured alone it meets the budget
    import torch

    from mobilevision.cli.train import CONFIG_DIR
    from mobilevision.deploy import deployable
    from mobilevision.evaluation.complexity import count_madds, count_params, measure_latency
    from mobilevision.tasks import DetectionTask

    recipe = yaml.safe_load((CONFIG_DIR / "ssdlite/shapes.yaml").read_text())["model"]["init_args"]
    init = config["model"]["init_args"]
    assert all(init[k] == recipe[k] for k in ("first_stride", "min_ratio", "max_ratio"))
    built = DetectionTask(**{k: v for k, v in init.items() if k in DetectionTask.__init__.__code__.co_varnames},
                          num_classes=80, image_size=config["data"]["init_args"]["image_size"])
    network, decoder = deployable(built)
    pick = rows["ssdlite_mobilenet_v2_0.35_128"]
    assert count_params(network) == int(pick["params"])
    assert count_madds(network, (1, 3, 128, 128)) == int(pick["madds"])
    with torch.inference_mode():
        x = torch.rand(1, 3, 128, 128)
        stats = measure_latency(torch.nn.Sequential(network), x, warmup=1, repeats=5)
    assert stats["p90_ms"] <= 1000
    cli = train(["fit", "--config", str(folder / "config.yaml"),
                 "--data.init_args.shapes_root", str(tmp_path / "shapes"), "--data.init_args.shapes_num_train", "4",
                 "--data.init_args.shapes_num_val", "2",
                 "--data.init_args.shapes_image_size", "96", "--data.init_args.batch_size", "2",
                 "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.hparams.image_size == 128 and "train/loss" in cli.trainer.callback_metrics


@pytest.mark.parametrize("runtime, candidate", [("onnxruntime", "mobilenet_v2_0.35_96"),
                                                ("onnxruntime-int8", "mobilenet_v2_0.35_96"),
                                                ("executorch", "mobilenet_v1_0.25_128")])
def test_exported_runtime_sweep_exports_once(runtime, candidate, tmp_path, monkeypatch):
    args = ["--latency-ms", "1000", "--runtime", runtime, "--candidates", candidate, "--repeats", "3",
            "--warmup", "1", "--threads", "1", "--output", str(tmp_path)]
    assert select_cli.main(args) == 0
    (exported,) = (tmp_path / "exports" / "classification").iterdir()
    int8 = ".int8" if runtime.endswith("int8") else ""
    suffix = ".b1.pte" if runtime.startswith("executorch") else ".onnx"
    assert exported.name == candidate + int8 + suffix
    assert read_exported_metadata(exported)["int8"] == bool(int8)
    # measuring again reuses the export
    monkeypatch.setattr("mobilevision.deploy.formats.export_model", lambda *a, **k: pytest.fail("exported again"))
    assert select_cli.main([*args, "--remeasure"]) == 0
    cache = json.loads((tmp_path / "latency_cache").glob(f"*__{runtime}.json").__next__().read_text())
    (entry,) = cache["entries"].values()
    assert entry["versions"][runtime.split("-")[0]] and entry["latency"]["repeats"] == 3


def test_the_phone_judges_export_candidates_then_pick_from_its_latencies(tmp_path, capsys):
    """``--export-candidates``: one file per candidate and a manifest; ``--device-latencies``: the pick follows the
    given milliseconds (here the published order reversed in speed), nothing is timed here."""
    names = ["mobilenet_v1_0.25_128", "mobilenet_v1_0.5_128", "mobilenet_v1_0.75_128"]
    base = ["--candidates", ",".join(names), "--families", "mobilenet_v1", "--output", str(tmp_path / "out")]
    assert select_cli.main([*base, "--export-candidates", str(tmp_path / "phone"), "--format", "onnx"]) == 0
    manifest = list(csv.DictReader(open(tmp_path / "phone" / "manifest.csv")))
    assert [r["name"] for r in manifest] == names and all(r["format"] == "onnx" for r in manifest)
    for r in manifest:
        meta = read_exported_metadata(tmp_path / "phone" / r["file"])
        assert meta["backbone"] == "mobilenet_v1" and meta["image_size"] == [128, 128]
        assert int(r["madds"]) > 0 and float(r["published_top1"]) > 40
    csv_path = tmp_path / "phone.csv"
    # as a phone might report them: file names, a p90 column, the middle one fast enough
    csv_path.write_text("name,ms,p90_ms\n" + "".join(f"{r['file']},{ms},{p90}\n" for r, (ms, p90) in
                                                     zip(manifest, [(3.0, 3.5), (4.0, 4.4), (9.0, 9.9)])))
    capsys.readouterr()
    assert select_cli.main([*base, "--latency-ms", "5", "--device-latencies", str(csv_path)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Best under 5 ms (p90): mobilenet_v1_0.5_128" in text and "p90 4.40 ms" in text
    folder = tmp_path / "out" / "classification_device_5ms"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["init_args"]["width"] == 0.5 and config["data"]["init_args"]["image_size"] == 128
    assert "--device-latencies" in (folder / "config.yaml").read_text()
    assert not (tmp_path / "out" / "latency_cache").exists()  # nothing was timed here
    # bad CSVs are named with their line
    csv_path.write_text("name,ms\nresnet50,3\n")
    assert select_cli.main([*base, "--latency-ms", "5", "--device-latencies", str(csv_path)]) == 2
    assert "phone.csv, line 2: 'resnet50' is not a candidate" in capsys.readouterr().err
    csv_path.write_text("name,ms\nmobilenet_v1_0.5_128,fast\n")
    assert select_cli.main([*base, "--latency-ms", "5", "--device-latencies", str(csv_path)]) == 2
    assert "line 2: ms 'fast' is not a number" in capsys.readouterr().err
    csv_path.write_text("model,time\nmobilenet_v1_0.5_128,3\n")
    assert select_cli.main([*base, "--latency-ms", "5", "--device-latencies", str(csv_path)]) == 2
    assert "needs the columns name and ms" in capsys.readouterr().err
