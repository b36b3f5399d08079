"""The README and the documentation site: the site builds in strict mode (a broken link, anchor or API reference fails),
the README stays a short front door whose links resolve, every command it shows parses, and its quickstart runs as
written (on a small Roboflow-style export, with options that shrink the run appended)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mobilevision.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    """The block's command lines (continuations joined, comments dropped) as argument lists."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line, comments=True))
    return out


def test_docs_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("create_backbone") > 0


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs uses for anchors)."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


def test_readme_is_a_short_front_door_whose_links_resolve():
    assert len(README) < 15_000, len(README)
    assert README.index("## Two commands") < README.index("## Quickstart") < README.index("## Tasks")
    for word in (r"\bissues?\b", r"\bsessions?\b", r"these machines", r"our runs"):
        for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
            assert not re.search(word, page.read_text(), re.I), (page.name, word)
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", README)
    assert len(links) > 10
    for target, anchor in links:
        page = REPO / target
        assert page.exists(), target
        if anchor:
            anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}
            assert anchor in anchors, (target, anchor)


def _quiet(fn, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = fn(*args)
        except SystemExit as e:
            rc = e.code or 0
    return rc, out.getvalue() + err.getvalue()


def test_every_readme_command_parses():
    """Outside the quickstart (run below): ``train`` commands through LightningCLI's ``--print_config`` (every option
    checked against the classes' signatures), the others' options against their ``--help``."""
    quickstart = bash_blocks(README[README.index("## Quickstart"):README.index("## Tasks")])[0]
    seen = 0
    for block in bash_blocks(README):
        if block == quickstart:
            continue
        for argv in commands(block):
            if not argv[0].endswith("/mobilevision"):
                continue
            seen += 1
            sub, rest = argv[1], argv[2:]
            if sub == "train":
                rc, text = _quiet(cli_main, ["train", *rest, "--print_config"])
                assert rc == 0 and "class_path" in text, (argv, text[-2000:])
            else:
                head = [sub] + ([rest[0]] if rest and not rest[0].startswith("-") else [])
                rc, text = _quiet(cli_main, [*head, "--help"])
                assert rc == 0, (argv, text)
                for option in (a for a in rest if a.startswith("--")):
                    assert option in text, (argv, option)
    assert seen >= 4


def roboflow_split(folder: Path, count: int, seed: int) -> None:
    """Images with one or two coloured blocks and ``_annotations.coco.json`` beside them, as Roboflow exports COCO
    (category 0 is the dataset's name, with no annotations)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        img = rng.normal(110, 30, (80, 96, 3))
        for _ in range(int(rng.integers(1, 3))):
            c = int(rng.integers(1, 3))
            w, h = (int(v) for v in rng.integers(20, 40, 2))
            x, y = int(rng.integers(0, 96 - w)), int(rng.integers(0, 80 - h))
            img[y:y + h, x:x + w] = (220, 40, 40) if c == 1 else (40, 200, 60)
            annotations.append({"id": len(annotations), "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                                "area": w * h, "segmentation": [], "iscrowd": 0})
        name = f"img{i}_jpg.rf.{i:08x}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
        images.append({"id": i, "license": 1, "file_name": name, "height": 80, "width": 96})
    categories = [{"id": 0, "name": "blocks", "supercategory": "none"},
                  {"id": 1, "name": "red", "supercategory": "blocks"},
                  {"id": 2, "name": "green", "supercategory": "blocks"}]
    (folder / "_annotations.coco.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                               "categories": categories}))


#: appended to the quickstart's commands: a small network, a few steps, no download
SHRINK = {"train": ["--model.init_args.backbone_weights", "null", "--model.init_args.width", "0.35",
                    "--trainer.max_steps", "4", "--trainer.check_val_every_n_epoch", "1",
                    "--data.init_args.image_size", "64", "--data.init_args.batch_size", "4",
                    "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false"],
          "export": ["--calibration-size", "8"],
          "predict": ["--quiet"]}


def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch, one_thread):
    roboflow_split(tmp_path / "export" / "train", 12, 0)
    roboflow_split(tmp_path / "export" / "valid", 4, 1)
    (tmp_path / "photos").mkdir()
    for i in range(2):
        Image.fromarray(np.full((120, 90, 3), 60 * i + 40, np.uint8)).save(tmp_path / "photos" / f"p{i}.jpg")
    monkeypatch.chdir(tmp_path)
    block = bash_blocks(README[README.index("## Quickstart"):README.index("## Tasks")])[0]
    ran = []
    for argv in commands(block):
        if argv[0].startswith("M="):
            continue
        assert argv[0] == "$M", argv
        sub = argv[1]
        rc, text = _quiet(cli_main, [*argv[1:], *SHRINK.get(sub, [])])
        assert rc == 0, (argv, text[-3000:])
        ran.append(sub)
    assert ran == ["train", "eval", "export", "predict"]
    out = tmp_path / "outputs" / "mine"
    stats = json.loads((out / "metrics.json").read_text())
    assert set(stats["per_category"]) == {"red", "green"}  # Roboflow's placeholder category left out
    assert (out / "val.png").stat().st_size > 0 and (out / "model_fp32.pte").exists()
    from mobilevision.deploy.formats import read_exported_metadata

    assert read_exported_metadata(out / "model.pte")["int8"]
    predictions = json.loads((out / "predictions" / "predictions.json").read_text())
    assert isinstance(predictions, list)
    assert {p["file_name"] for p in predictions} <= {"p0.jpg", "p1.jpg"}
