"""Im2GPS-style geolocalization evaluation: accuracy at street / city / region / country / continent scale.

A geolocalization model (PlaNet) predicts one location per photo (the centre of its most likely
cell); the error of a photo is the great-circle distance between that prediction and the true
location (:func:`mobilevision.geo.distance.haversine_km`, spherical Earth of radius 6371.0088 km).
The Im2GPS protocol reports the fraction of photos whose error is within each of the thresholds
``GEO_THRESHOLDS_KM`` = 1 / 25 / 200 / 750 / 2500 km (street, city, region, country, continent).

Metric dict (returned by :func:`geo_metrics`, :meth:`GeoAccuracy.compute`,
:func:`evaluate_prediction_csvs`; written by :func:`save_geo_json`):

* ``acc_1km``, ``acc_25km``, ``acc_200km``, ``acc_750km``, ``acc_2500km``: fraction in [0, 1] of the
  photos with ``distance <= threshold`` (a photo exactly at a threshold counts as within; no tolerance
  is added to the comparison);
* ``median_km``: median error, the mean of the two middle errors for an even count;
* ``mean_km``: mean error;
* ``num_samples``: number of photos.

Prediction / ground-truth files (:func:`read_locations_csv`) are CSV with a header containing
``image_id,latitude,longitude`` in any order (other columns are ignored), one row per image, degrees.
:func:`evaluate_prediction_csvs` joins them by ``image_id``; every ground-truth image needs exactly
one prediction and every prediction a ground-truth image. :func:`save_error_map` draws the errors on
an equirectangular world map.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..errors import UserError, first_few
from ..geo.distance import haversine_km

__all__ = [
    "GEO_METRIC_KEYS",
    "GEO_SCALES",
    "GEO_THRESHOLDS_KM",
    "PLANET_REFERENCE",
    "GeoAccuracy",
    "MatchedLocations",
    "evaluate_prediction_csvs",
    "geo_metrics",
    "match_prediction_csvs",
    "print_geo_table",
    "read_locations_csv",
    "save_error_map",
    "save_geo_json",
]

#: Im2GPS distance thresholds in km and the scale each one stands for.
GEO_THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
GEO_SCALES: tuple[str, ...] = ("street", "city", "region", "country", "continent")
_ACC_KEYS: tuple[str, ...] = tuple(f"acc_{t}km" for t in GEO_THRESHOLDS_KM)
#: The six headline metrics (plus ``mean_km`` and ``num_samples`` in every metric dict).
GEO_METRIC_KEYS: tuple[str, ...] = (*_ACC_KEYS, "median_km")
_ALL_KEYS: tuple[str, ...] = (*GEO_METRIC_KEYS, "mean_km", "num_samples")

#: Percentage of Im2GPS test photos localized within each threshold, from Table 11 ("Performance of
#: PlaNet using the MobileNet architecture") of Howard et al., "MobileNets: Efficient Convolutional
#: Neural Networks for Mobile Vision Applications", arXiv 1704.04861 (as transcribed in the project's
#: reference/paper_tables.md). "Im2GPS" is the original Im2GPS method (Hays & Efros), "PlaNet" the
#: Inception-based PlaNet, "PlaNet-MobileNet" PlaNet re-trained with a MobileNet body (13M parameters:
#: 3M body, 10M final layer over the cells). Values are percent, keyed like the metric dict.
PLANET_REFERENCE: dict[str, dict[str, float]] = {
    "Im2GPS": {"acc_1km": 2.5, "acc_25km": 21.9, "acc_200km": 32.1, "acc_750km": 35.4, "acc_2500km": 51.9},
    "PlaNet": {"acc_1km": 11.0, "acc_25km": 31.7, "acc_200km": 51.1, "acc_750km": 64.0, "acc_2500km": 77.6},
    "PlaNet-MobileNet": {"acc_1km": 11.4, "acc_25km": 31.7, "acc_200km": 45.2, "acc_750km": 60.3,
                         "acc_2500km": 79.3},
}

# error buckets of the map: (upper bound km, colour); the last bucket is "> 2500 km"
_BUCKETS: tuple[tuple[float, str], ...] = (
    (25.0, "#1a9850"),
    (200.0, "#91bf3c"),
    (750.0, "#f6b93b"),
    (2500.0, "#e8602c"),
    (math.inf, "#a50026"),
)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
def _metrics_tensor(d: torch.Tensor) -> dict[str, torch.Tensor]:
    """The metric dict as 0-d float64 tensors (on ``d``'s device) of 1-D float64 distances ``d``."""
    n = d.numel()
    if n == 0:
        raise UserError("no distances to evaluate (empty input)")
    if not bool(torch.isfinite(d).all()):
        raise UserError(f"distances must be finite, got {int((~torch.isfinite(d)).sum())} NaN/inf value(s)")
    if bool((d < 0).any()):
        raise UserError(f"distances must be >= 0, got minimum {float(d.min())}")
    out = {key: (d <= t).double().mean() for key, t in zip(_ACC_KEYS, GEO_THRESHOLDS_KM)}
    s = torch.sort(d).values
    out["median_km"] = (s[(n - 1) // 2] + s[n // 2]) / 2
    out["mean_km"] = d.mean()
    out["num_samples"] = torch.tensor(float(n), dtype=torch.float64, device=d.device)
    return out


def _to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
    out["num_samples"] = int(out["num_samples"])
    return out


def geo_metrics(distances_km) -> dict[str, Any]:
    """Im2GPS metrics of great-circle errors in km (tensor, array or list; any shape, flattened).

    Returns python numbers: ``acc_1km`` ... ``acc_2500km`` (fractions with ``distance <= threshold``),
    ``median_km`` (mean of the two middle values for an even count), ``mean_km`` (floats) and
    ``num_samples`` (int). Empty input, NaN/inf or negative distances raise ``ValueError``.
    """
    d = torch.as_tensor(np.asarray(distances_km, dtype=np.float64) if not torch.is_tensor(distances_km)
                        else distances_km).detach().to(dtype=torch.float64).reshape(-1)
    return _to_floats(_metrics_tensor(d))


class GeoAccuracy(Metric):
    """torchmetrics accumulator of geolocalization errors (Im2GPS accuracies, median and mean error).

    ``update(pred_lat, pred_lon, true_lat, true_lon)`` takes degrees (four tensors/arrays of one
    shape, any dtype) and stores the great-circle distances, float64, in a list state reduced with
    ``dist_reduce_fx="cat"``: under DDP ``compute()`` sees the errors of every rank. Safe to update under
    ``torch.inference_mode()``/``no_grad`` and to ``reset()``.

    ``compute()`` returns the :func:`geo_metrics` keys as 0-d float64 tensors on the metric's device
    (``num_samples`` too, as a float tensor), the form ``LightningModule.log``/``log_dict`` accept; Lightning
    logs them as float32. ``{k: float(v) for k, v in metric.compute().items()}`` equals :func:`geo_metrics`
    of the concatenated distances. Computing with no sample raises ``ValueError``. (float64 states need a
    device with float64 support: CPU or CUDA, not MPS.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("distances", default=[], dist_reduce_fx="cat")

    def update(self, pred_lat, pred_lon, true_lat, true_lon) -> None:  # type: ignore[override]
        values = [torch.as_tensor(v, device=self.device).detach() for v in (pred_lat, pred_lon, true_lat, true_lon)]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise UserError("pred_lat, pred_lon, true_lat, true_lon must have one shape, got "
                             + ", ".join(str(tuple(v.shape)) for v in values))
        self.distances.append(haversine_km(*values).reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        if isinstance(self.distances, list) and not self.distances:
            raise UserError("GeoAccuracy.compute() called before any update (no samples)")
        return _metrics_tensor(dim_zero_cat(self.distances).to(torch.float64))


# ----------------------------------------------------------------------------------------------
# CSV files
# ----------------------------------------------------------------------------------------------
_REQUIRED_COLUMNS = ("image_id", "latitude", "longitude")


def read_locations_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read ``image_id``, ``latitude``, ``longitude`` (degrees) from a CSV with a header row.

    The three columns may come in any order among others (ignored); names and values are stripped of
    surrounding spaces, blank lines are skipped. Returns ``(ids, lat, lon)`` with float64 arrays in file
    order. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file (and the
    line) for an empty file, a missing column, a short row, an empty id, a non-numeric, NaN or infinite
    value, a latitude outside [-90, 90], a longitude outside [-180, 180], or a repeated image_id.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"locations CSV not found: {str(p)!r}")
    ids: list[str] = []
    lats: list[float] = []
    lons: list[float] = []
    first_line: dict[str, int] = {}
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = None
        for row in reader:
            if any(cell.strip() for cell in row):
                header = [cell.strip() for cell in row]
                break
        if header is None:
            raise UserError(f"{p}: empty file, expected a header with {','.join(_REQUIRED_COLUMNS)}")
        missing = [c for c in _REQUIRED_COLUMNS if c not in header]
        if missing:
            raise UserError(f"{p}: line {reader.line_num}: header {','.join(header)!r} lacks column(s) "
                             f"{', '.join(missing)} (needs {','.join(_REQUIRED_COLUMNS)})")
        col = {c: header.index(c) for c in _REQUIRED_COLUMNS}
        width = max(col.values()) + 1
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < width:
                raise UserError(f"{p}: line {line}: {len(row)} field(s), expected at least {width} "
                                 f"(image_id, latitude, longitude)")
            image_id = row[col["image_id"]].strip()
            if not image_id:
                raise UserError(f"{p}: line {line}: empty image_id")
            coords = []
            for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
                text = row[col[name]].strip()
                try:
                    value = float(text)
                except ValueError:
                    raise UserError(f"{p}: line {line}: {name} {text!r} of {image_id!r} is not a number") from None
                if not math.isfinite(value):
                    raise UserError(f"{p}: line {line}: {name} of {image_id!r} is {text!r}, not a finite number")
                if abs(value) > bound:
                    raise UserError(f"{p}: line {line}: {name} {value} of {image_id!r} is outside "
                                     f"[{-bound:g}, {bound:g}]")
                coords.append(value)
            if image_id in first_line:
                raise UserError(f"{p}: line {line}: duplicate image_id {image_id!r} (first on line "
                                 f"{first_line[image_id]})")
            first_line[image_id] = line
            ids.append(image_id)
            lats.append(coords[0])
            lons.append(coords[1])
    if not ids:
        raise UserError(f"{p}: no data rows after the header")
    return ids, np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class MatchedLocations:
    """Predicted and true locations (degrees, float64) of the same images, in ground-truth order."""

    image_ids: list[str]
    pred_lat: np.ndarray
    pred_lon: np.ndarray
    true_lat: np.ndarray
    true_lon: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def distance_km(self) -> np.ndarray:
        """Great-circle error of every image in km."""
        return haversine_km(self.pred_lat, self.pred_lon, self.true_lat, self.true_lon).numpy()

    def metrics(self) -> dict[str, Any]:
        """:func:`geo_metrics` of the errors."""
        return geo_metrics(self.distance_km)


def match_prediction_csvs(predictions: str | os.PathLike, ground_truth: str | os.PathLike) -> MatchedLocations:
    """Join a predictions CSV with a ground-truth CSV by ``image_id`` (both read by :func:`read_locations_csv`).

    Every ground-truth image needs a prediction and every prediction a ground-truth image; otherwise
    ``ValueError`` says how many ids are unmatched and shows a few.
    """
    gt_ids, gt_lat, gt_lon = read_locations_csv(ground_truth)
    pr_ids, pr_lat, pr_lon = read_locations_csv(predictions)
    index = {image_id: i for i, image_id in enumerate(pr_ids)}
    gt_set = set(gt_ids)
    missing = [i for i in gt_ids if i not in index]
    if missing:
        raise UserError(f"{predictions}: no prediction for {len(missing)} of the {len(gt_ids)} ground-truth images "
                         f"of {ground_truth} (e.g. {first_few(missing, show=repr)})")
    extra = [i for i in pr_ids if i not in gt_set]
    if extra:
        raise UserError(f"{predictions}: {len(extra)} predicted image id(s) are not in the ground truth "
                         f"{ground_truth} (e.g. {first_few(extra, show=repr)})")
    order = np.asarray([index[i] for i in gt_ids], dtype=np.int64)
    return MatchedLocations(list(gt_ids), pr_lat[order], pr_lon[order], gt_lat, gt_lon)


def evaluate_prediction_csvs(predictions: str | os.PathLike, ground_truth: str | os.PathLike) -> dict[str, Any]:
    """:func:`geo_metrics` of a predictions CSV against a ground-truth CSV, matched by ``image_id``.

    For the matched coordinates themselves (e.g. for :func:`save_error_map`) use
    :func:`match_prediction_csvs`.
    """
    return match_prediction_csvs(predictions, ground_truth).metrics()


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------
def print_geo_table(stats: dict[str, Any], title: str = "geolocalization accuracy (Im2GPS protocol)",
                    reference: bool = True, console=None, others: dict[str, dict[str, Any]] | None = None) -> None:
    """Print the metric dict as a rich table: one row per threshold (scale, km, our accuracy %), a column per
    entry of ``others`` (more metric dicts on the same images, e.g. a baseline), the :data:`PLANET_REFERENCE`
    columns when ``reference``, then the median / mean error and the sample count."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: room for the reference columns
            console.width = max(console.width, 120)
    others = others or {}
    table = Table(title=title, caption="% of images within the distance")
    table.add_column("scale")
    table.add_column("within", justify="right")
    table.add_column("ours", justify="right")
    for name in others:
        table.add_column(name, justify="right")
    ref_names = list(PLANET_REFERENCE) if reference else []
    for name in ref_names:
        table.add_column(name, justify="right")
    blank = [""] * len(ref_names)
    for scale, t, key in zip(GEO_SCALES, GEO_THRESHOLDS_KM, _ACC_KEYS):
        refs = [f"{PLANET_REFERENCE[name][key]:.1f}" for name in ref_names]
        extra = [f"{100 * float(o[key]):.1f}" for o in others.values()]
        table.add_row(scale, f"{t} km", f"{100 * float(stats[key]):.1f}", *extra, *refs)
    table.add_section()
    for label, key in (("median error", "median_km"), ("mean error", "mean_km")):
        if key in stats:
            extra = [f"{float(o[key]):.1f} km" if key in o else "" for o in others.values()]
            table.add_row(label, "", f"{float(stats[key]):.1f} km", *extra, *blank)
    table.add_row("images", "", str(int(stats["num_samples"])), *[""] * len(others), *blank)
    console.print(table)
    if reference:
        console.print("reference: Im2GPS test set, MobileNetV1 paper (arXiv 1704.04861) Table 11", style="dim")


def save_geo_json(stats: dict[str, Any], path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``acc_1km`` ... ``acc_2500km``, ``median_km``, ``mean_km`` (floats) and ``num_samples`` (int)
    as JSON, creating parent folders. Tensors are converted; other keys of ``stats`` are not written, the
    JSON-serializable ``extra`` entries are added (e.g. a baseline's metrics)."""
    missing = [k for k in _ALL_KEYS if k not in stats]
    if missing:
        raise UserError(f"geolocalization stats lack {', '.join(missing)}")
    out: dict[str, Any] = {k: float(stats[k]) for k in _ALL_KEYS}
    out["num_samples"] = int(out["num_samples"])
    out.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def _antimeridian_segments(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> list:
    """Straight map segments from (lon1, lat1) to (lon2, lat2) the short way round in longitude: a
    segment whose short way crosses +-180 is split into two pieces, one on each edge of the map."""
    segments = []
    dlon = (lon2 - lon1 + 180.0) % 360.0 - 180.0  # in [-180, 180)
    end = lon1 + dlon  # may leave [-180, 180]
    for a, b, e, c, d in zip(lon1, lat1, end, lat2, lon2):
        if -180.0 <= e <= 180.0:
            segments.append(((a, b), (e, c)))
            continue
        edge = 180.0 if e > 180.0 else -180.0
        frac = (edge - a) / (e - a)
        lat_cross = b + frac * (c - b)
        segments.append(((a, b), (edge, lat_cross)))
        segments.append(((-edge, lat_cross), (d, c)))
    return segments


def world_map_axes():
    """A matplotlib figure (Agg canvas, no pyplot state) and its axes: an equirectangular world map with a
    graticule every 30 degrees and faint grey dots of the shipped cities (:func:`mobilevision.geo.cities.load_cities`)
    sketching the continents."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..geo.cities import load_cities

    fig = Figure(figsize=(13.0, 7.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set(xlim=(-180, 180), ylim=(-90, 90), aspect="equal", xlabel="longitude", ylabel="latitude")
    ticks_x, ticks_y = range(-180, 181, 30), range(-90, 91, 30)
    ax.set_xticks(list(ticks_x), [f"{abs(x)}°{'E' if x > 0 else 'W' if x < 0 else ''}" for x in ticks_x], fontsize=8)
    ax.set_yticks(list(ticks_y), [f"{abs(y)}°{'N' if y > 0 else 'S' if y < 0 else ''}" for y in ticks_y], fontsize=8)
    ax.grid(True, color="#b0b0b0", linewidth=0.5, linestyle=":")
    ax.set_axisbelow(True)
    ax.set_facecolor("#f4f8fb")
    cities = load_cities()
    ax.scatter(cities.longitude, cities.latitude, s=3.0, c="#c4c4c4", linewidths=0, zorder=1, rasterized=True)
    return fig, ax


def save_figure(fig, path: str | os.PathLike) -> Path:
    """``fig`` as a PNG at ``path`` (tight layout; parent folders created)."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def save_error_map(pred_lat, pred_lon, true_lat, true_lon, path: str | os.PathLike, title: str | None = None,
                   max_points: int = 2000) -> Path:
    """Save a PNG world map (equirectangular, graticule every 30 degrees) of geolocalization errors.

    True locations are drawn as dark circles, predictions as crosses, each joined to its truth by a
    thin line coloured by error bucket (<= 25, <= 200, <= 750, <= 2500, > 2500 km; see the legend).
    Lines take the short way in longitude: one crossing the antimeridian is split at +-180 instead of
    running across the map. Faint grey dots of the shipped cities (:func:`mobilevision.geo.cities.load_cities`)
    sketch the continents. Above ``max_points`` images a fixed-seed random subset is drawn (the title
    says so; the legend counts and median refer to all images). Uses matplotlib's Agg canvas directly
    (no pyplot state); creates parent folders.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    arrays = [np.asarray(torch.as_tensor(v).detach().cpu().double().reshape(-1).numpy())
              for v in (pred_lat, pred_lon, true_lat, true_lon)]
    if len({a.shape for a in arrays}) != 1:
        raise UserError("pred_lat, pred_lon, true_lat, true_lon must have one length, got "
                         + ", ".join(str(len(a)) for a in arrays))
    p_lat, p_lon, t_lat, t_lon = arrays
    n = len(p_lat)
    if n == 0:
        raise UserError("no locations to draw")
    if max_points < 1:
        raise UserError(f"max_points must be >= 1, got {max_points}")
    dist = haversine_km(p_lat, p_lon, t_lat, t_lon).numpy()
    bucket_all = np.searchsorted(np.asarray([b for b, _ in _BUCKETS[:-1]]), dist, side="left")
    counts = np.bincount(bucket_all, minlength=len(_BUCKETS))
    if n > max_points:
        keep = np.sort(np.random.default_rng(0).choice(n, size=max_points, replace=False))
    else:
        keep = np.arange(n)
    shown = len(keep)

    fig, ax = world_map_axes()

    handles = []
    lower = 0.0
    width = 0.6 if shown > 500 else 1.0
    for k, (upper, colour) in enumerate(_BUCKETS):
        sel = keep[bucket_all[keep] == k]
        if len(sel):
            segs = _antimeridian_segments(t_lon[sel], t_lat[sel], p_lon[sel], p_lat[sel])
            # the far errors underneath, so the short ones stay visible
            ax.add_collection(LineCollection(segs, colors=colour, linewidths=width, alpha=0.8,
                                             zorder=2 + (len(_BUCKETS) - k) * 0.1))
        label = f"> {lower:g} km" if math.isinf(upper) else f"<= {upper:g} km"
        handles.append(Line2D([], [], color=colour, linewidth=2, label=f"{label} ({counts[k]})"))
        lower = upper
    size = 6 if shown > 300 else 18
    ax.scatter(t_lon[keep], t_lat[keep], s=size, facecolors="none", edgecolors="#202020", linewidths=0.7,
               zorder=3)
    ax.scatter(p_lon[keep], p_lat[keep], s=size, marker="x", c="#1f4e9c", linewidths=0.8, zorder=4)
    handles += [
        Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="#202020",
               label="true location"),
        Line2D([], [], linestyle="none", marker="x", color="#1f4e9c", label="predicted location"),
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9, title="error (images)",
              title_fontsize=8)
    median = float(np.median(dist))
    if title is None:
        title = f"geolocalization errors: {n} images, median {median:.1f} km"
    if shown < n:
        title += f" (showing {shown} of {n})"
    ax.set_title(title)
    return save_figure(fig, path)
