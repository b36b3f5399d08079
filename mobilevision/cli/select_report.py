"""What ``mobilevision select`` writes about a selection: the table rows, the Pareto plot, the candidates CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

from ..evaluation.selection import FAMILIES, Candidate, GridPoint, format_width

__all__ = ["ROW_HEADERS", "budget_str", "markdown_table", "plot", "row", "write_csv"]


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def width_label(point: GridPoint) -> str:
    return "-" if point.width is None else format_width(point.width)


ROW_HEADERS = ("name", "backbone", "width", "size", "median ms", "p90 ms", "top-1 (published)", "MAdds (M)",
               "params (M)")


def row(c: Candidate) -> list[str]:
    lat = c.latency or {}
    return [c.name, c.point.backbone, width_label(c.point), str(c.point.image_size), fmt(lat.get("median_ms"), 2),
            fmt(lat.get("p90_ms"), 2), fmt(c.top1), fmt(c.madds / 1e6 if c.madds else None, 0),
            fmt(c.params / 1e6 if c.params else None, 2)]


def budget_str(budget: float) -> str:
    return f"{budget:g}"


def plot(candidates: Sequence[Candidate], front: Sequence[Candidate], pick: Candidate | None, budget: float,
         statistic: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5))
    colors = dict(zip(FAMILIES, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    rated = [c for c in candidates if c.top1 is not None and c.latency]
    floor = min((c.top1 for c in rated), default=50.0) - 3.0
    for family in FAMILIES:
        cs = [c for c in rated if c.point.family == family]
        if cs:
            ax.scatter([c.latency_ms(statistic) for c in cs], [c.top1 for c in cs], s=28, color=colors[family],
                       alpha=0.7, label=family)
    unrated = [c for c in candidates if c.top1 is None and c.latency]
    if unrated:
        ax.scatter([c.latency_ms(statistic) for c in unrated], [floor] * len(unrated), marker="x", color="grey",
                   label="no published top-1 (placed at the bottom)")
    if front:
        ax.step([c.latency_ms(statistic) for c in front], [c.top1 for c in front], where="post", color="black",
                lw=1.2, label="Pareto front")
        for c in front:
            ax.annotate(c.name, (c.latency_ms(statistic), c.top1), fontsize=7, xytext=(4, -9),
                        textcoords="offset points")
    ax.axvline(budget, color="crimson", ls="--", lw=1.2, label=f"budget {budget_str(budget)} ms")
    if pick is not None:
        ax.scatter([pick.latency_ms(statistic)], [pick.top1], marker="*", s=260, color="gold", edgecolor="black",
                   zorder=5, label=f"pick: {pick.name}")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ticks = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(ticks)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.set_xlabel(f"latency, {statistic} (ms, log scale)")
    ax.set_ylabel("published ImageNet top-1 (%)" + (" of the backbone" if candidates and
                                                     candidates[0].point.task == "ssdlite" else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.text(0.01, 0.01, "top-1: published figures, not measured here; latency: measured here", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_csv(candidates: Sequence[Candidate], front: Sequence[Candidate], pick: Candidate | None, budget: float,
              statistic: str, path: Path) -> Path:
    on_front = {c.name for c in front}
    fields = ["name", "task", "family", "backbone", "width", "image_size", "median_ms", "p90_ms", "mean_ms", "min_ms",
              "repeats", "madds", "params", "top1", "published_name", "source", "on_front", "within_budget", "pick"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for c in candidates:
            lat = c.latency or {}
            w.writerow({
                "name": c.name, "task": c.point.task, "family": c.point.family, "backbone": c.point.backbone,
                "width": "" if c.point.width is None else c.point.width, "image_size": c.point.image_size,
                **{k: lat.get(k, "") for k in ("median_ms", "p90_ms", "mean_ms", "min_ms", "repeats")},
                "madds": c.madds, "params": c.params, "top1": "" if c.top1 is None else c.top1,
                "published_name": c.accuracy.published_name if c.accuracy else "",
                "source": c.accuracy.source if c.accuracy else "", "on_front": c.name in on_front,
                "within_budget": c.latency_ms(statistic) <= budget, "pick": pick is not None and c is pick})
    return path


def markdown_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
