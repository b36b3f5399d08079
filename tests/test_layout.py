"""The package's dependencies point one way: ``layers -> backbones -> heads -> models -> tasks -> deploy -> cli``, with
``data`` and ``evaluation`` beside the chain (they import neither each other nor it), and the shared formats
(``errors``, ``files``, ``coco_format``, ``masks``, ``geo``, ``detection``) below everything. Every import counts,
the ones inside functions too; ``if TYPE_CHECKING:`` blocks do not (they never run)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mobilevision

ROOT = Path(mobilevision.__file__).parent

#: package -> the packages it may import
ALLOWED = {
    "errors": set(),
    "files": set(),
    "imagenet": set(),
    "coco_format": {"errors"},
    "masks": {"errors"},
    "geo": {"errors"},
    "detection": {"errors"},
    "layers": {"errors"},
    "backbones": {"errors", "layers", "imagenet"},
    "heads": {"errors", "layers"},
    "models": {"errors", "layers", "backbones", "heads", "detection"},
    "data": {"errors", "files", "imagenet", "coco_format", "masks", "geo"},
    "evaluation": {"errors", "files", "imagenet", "coco_format", "masks", "geo", "detection"},
}
BELOW_TASKS = set(ALLOWED)
ALLOWED["tasks"] = BELOW_TASKS
ALLOWED["deploy"] = BELOW_TASKS | {"tasks"}
ALLOWED["cli"] = BELOW_TASKS | {"tasks", "deploy"}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def package_imports() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the files (and lines) that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if len(parts) == 1 and parts[0] in ("__init__.py", "__main__.py"):
            continue
        package = parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = list(("mobilevision", *parts[:-1]))[: len(parts) - node.level + 1]
                    names = [".".join(base + ([node.module] if node.module else []))]
                    if not node.module:  # from .. import x: x may be a package
                        names = [f"{names[0]}.{a.name}" for a in node.names]
                else:
                    names = [node.module or ""]
            else:
                continue
            for name in names:
                bits = name.split(".")
                if bits[0] == "mobilevision" and len(bits) > 1 and bits[1] != package:
                    graph[package][bits[1]].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph


def test_the_walker_sees_relative_and_absolute_imports():
    graph = package_imports()
    assert "layers" in graph["backbones"] and "tasks" in graph["cli"] and "errors" in graph["data"]


def test_dependencies_point_one_way():
    graph = package_imports()
    packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and not p.name.startswith("__"))}
    assert packages == set(ALLOWED), "a new package needs its place in ALLOWED"
    wrong = {f"{src} -> {dst}": where for src, targets in graph.items() for dst, where in targets.items()
             if dst not in ALLOWED[src]}
    assert not wrong, wrong
