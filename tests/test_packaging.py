"""Install like a package: a wheel built from the repository, installed without the source tree, trains the default
classification task from an empty folder (the recipes ship inside the package, the embedded dataset goes to the
data home, outputs to the current folder); the declared dependency floors admit what the code needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (no isolation, no network) from a copy of the project's files, so the tree stays clean."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "mobilevision", src / "mobilevision", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return next(out.glob("mobilevision-*.whl"))


def test_wheel_holds_the_recipes_and_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.relative_to(REPO).as_posix() for p in (REPO / "mobilevision" / "configs").rglob("*.yaml")}
    assert recipes and recipes <= names
    assert {"mobilevision/geo/cities.csv", "mobilevision/backbones/published_top1.csv"} <= names


def test_wheel_trains_the_default_classification_task_from_an_empty_folder(wheel, tmp_path):
    site, work, data = tmp_path / "site", tmp_path / "empty", tmp_path / "data_home"
    work.mkdir()
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # the wheel's copy, not the source tree, is imported (PYTHONPATH comes before the editable install)
    env = {**os.environ, "PYTHONPATH": str(site), "MOBILEVISION_DATA": str(data), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import mobilevision; print(mobilevision.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    d = "--data.init_args."
    cmd = [sys.executable, "-m", "mobilevision", "train", "--task", "classification",
           f"{d}glyphs_train_per_class", "2", f"{d}glyphs_val_per_class", "1", f"{d}glyphs_image_size", "64",
           f"{d}image_size", "64", f"{d}batch_size", "4", "--trainer.max_epochs", "1",
           "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false"]
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert (data / "glyphs" / "train").is_dir()  # the embedded dataset in the data home, not in the current folder
    assert not (work / "datasets").exists()
    assert list((work / "outputs").rglob("last.ckpt"))  # the run's outputs in the current folder
    # a shipped recipe by its documented path, from a folder that has no configs/
    run = subprocess.run([*cmd[:4], "--config", "configs/classification/glyphs.yaml", "--print_config"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ClassificationTask" in run.stdout, run.stderr[-3000:]


def test_declared_floors_admit_what_the_code_uses():
    """Lightning >= 2.6 (WeightAveraging, Trainer.fit(weights_only=...)), torch >= 2.6 (export with dynamo=True,
    weights_only loading by default): the floors in pyproject.toml say so, and the pinned versions meet them."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    deps = {Requirement(r).name: Requirement(r) for r in
            tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not deps["pytorch-lightning"].specifier.contains("2.5.9")
    assert not deps["torch"].specifier.contains("2.5.1")
    for name, req in deps.items():
        assert req.specifier.contains(version(name).split("+")[0], prereleases=True), name
    import pytorch_lightning as pl

    assert hasattr(pl.callbacks, "WeightAveraging")
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert set(deps) <= {k.lower() for k in pins} | {k for k in pins}, "every dependency is pinned"
