"""Deterministic generator of "geoscenes", a small geolocalization dataset (PlaNet-style photo -> place).

Every photo is "taken" at a real place: a city drawn uniformly from the shipped GeoNames sample
(:func:`mobilevision.geo.cities.load_cities`, 6,000 cities, so the photos are as unevenly spread as
the cities: dense in Europe, the US and East Asia) plus a random offset of up to ``MAX_OFFSET_KM``.

What a photo shows is a smooth function of the place's 3D unit vector ``v`` (x towards (0, 0), z
towards the north pole): no seam at the antimeridian, no singularity at the poles.  The scene is a
little landscape seen from the ground:

* **sky** - a vertical gradient from a zenith to a horizon colour; the zenith colour follows three
  slowly varying fields (|k| 2-3), the horizon haze a fourth;
* **sun** - elevation from the latitude (high in the tropics, low near the poles), distance from
  the image centre from a field (left or right at random);
* **mountains** - a far ridge whose height, roughness (main frequency) and colour follow fields;
  snow-capped at high latitudes;
* **ground** - a biome colour from the latitude and an "aridity" field (tropical forest near the
  equator, desert / steppe in the dry belts around 15-40 degrees where the aridity field is high,
  green temperate, dark boreal, snow above ~60 degrees), tinted by a field, with a perspective
  texture (fields, furrows, dunes) whose orientation, frequency, contrast, colour and stripes-vs-checks
  mix follow fields; the horizon height follows a field too;
* **objects** - buildings (walls, roofs, windows) and trees (conifers in cold places, cacti / shrubs
  in deserts, round crowns elsewhere) on the ground; their density, building share, heights and
  colours follow fields.

A "field" is ``sin(k . v + phase)`` for a fixed direction ``k`` with ``|k|`` between 2 and 8
(wavelengths of ~5,000-20,000 km on the globe: each field alone is ambiguous, but the 21 fields
together, with the latitude, tell places a few hundred km apart apart, in aggregate).  The cues live
at several scales: global colours (sky, ground), mid-scale structure (ridge, horizon height, object density and
heights) and fine texture (stripe orientation and frequency, windows, object colours).

Per-photo nuisance, independent of the place: "weather" (a random shift of the sky colours and an
occasional overcast veil, a random shift of the ground colour), horizon height jitter and a small
camera roll, 0-4 clouds, the sun's side, the ridge's horizontal phase, the texture's phase, random
ground blotches, object positions, sizes and which of the candidate objects exist (with the place's
density), small colour jitter on every object, a global brightness / per-channel colour jitter and
Gaussian pixel noise.  The cues survive a horizontal flip (the texture orientation lies in (0, 90)
degrees, the sun's side is random), so flipping is a label-preserving augmentation.  The renderer
draws the same number of random values whatever the place, so the same random stream at two nearby
places gives two nearly identical photos.

Every photo has its own random streams seeded by ``(seed, split, index)`` (one for the place, one
for the rendering), so the dataset is bit-identical for the same parameters however many processes
render it.  Layout::

    <root>/images/train/000000.jpg ...
    <root>/images/val/000000.jpg ...
    <root>/train.csv            image_path,latitude,longitude   (images/train/000000.jpg,48.858123,2.294512)
    <root>/val.csv
    <root>/geoscenes_manifest.json
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError
from ..geo.cities import load_cities
from ..geo.distance import EARTH_RADIUS_KM
from ._generated import build_generated_dataset, embedded_root, folder_holds, manifest_matches, render_all

__all__ = [
    "GEOSCENES_GENERATOR_VERSION",
    "MANIFEST_NAME",
    "MAX_OFFSET_KM",
    "ensure_geoscenes_dataset",
    "geoscenes_paths",
    "location_fields",
    "render_geoscene",
    "sample_locations",
]

logger = logging.getLogger(__name__)

#: Bump when the rendering (or the location sampling) changes; a stored dataset with another version is regenerated.
GEOSCENES_GENERATOR_VERSION = 1
MANIFEST_NAME = "geoscenes_manifest.json"
_GENERATOR_TAG = "mobilevision.data.geoscenes"
_SPLIT_IDS = {"train": 0, "val": 1}
CSV_HEADER = ("image_path", "latitude", "longitude")

#: Photos are taken up to this far (uniformly over the disc) from their city.
MAX_OFFSET_KM = 15.0

# --------------------------------------------------------------------------------------------
# Location fields
# --------------------------------------------------------------------------------------------

#: Smooth fields of the unit vector v: ``sin(k . v + phase)``, rows ``(kx, ky, kz, phase)``.
#: Fixed constants (drawn once at random, directions uniform on the sphere), part of the "world".
_FIELDS = np.array(
    [
        (-0.7297, -1.7889, +0.5169, 0.7067),  # 0 sky zenith a          |k| 2.0
        (+0.8430, -0.9534, -2.1518, 4.0494),  # 1 sky zenith b          |k| 2.5
        (-2.8012, -0.2274, -1.0497, 4.9148),  # 2 sky zenith c          |k| 3.0
        (+1.1154, -2.3391, -2.3525, 5.3218),  # 3 horizon haze          |k| 3.5
        (-1.9574, +0.7938, +2.1303, 4.0610),  # 4 aridity               |k| 3.0
        (+0.1564, -3.8989, +0.8799, 2.1718),  # 5 urbanity              |k| 4.0
        (+1.1827, -0.9999, +4.2251, 0.3430),  # 6 ridge height          |k| 4.5
        (+4.2350, -1.2630, +2.3388, 0.9258),  # 7 ridge roughness       |k| 5.0
        (+3.4090, -3.9425, +1.7567, 3.4328),  # 8 ridge colour          |k| 5.5
        (-2.9909, -0.0632, -5.2010, 0.4525),  # 9 stripe orientation    |k| 6.0
        (-1.6464, -1.0502, -6.1997, 1.9824),  # 10 stripe frequency     |k| 6.5
        (-1.4783, -1.3366, -6.7103, 5.5030),  # 11 stripe colour        |k| 7.0
        (-1.6943, +3.8728, -2.6703, 0.2157),  # 12 object density       |k| 5.0
        (-2.8538, -3.4479, +6.0181, 2.0744),  # 13 object hue a         |k| 7.5
        (+3.4779, -4.7423, -5.4235, 1.0118),  # 14 object hue b         |k| 8.0
        (+0.3444, -5.6859, -1.8848, 3.1492),  # 15 object height        |k| 6.0
        (-0.1209, +2.9781, +2.6676, 5.0117),  # 16 sun azimuth          |k| 4.0
        (+3.7242, +3.8314, -4.5222, 1.3703),  # 17 ground tint          |k| 7.0
        (-3.0818, +0.2492, -4.5487, 6.0542),  # 18 cross pattern        |k| 5.5
        (+2.8858, -2.1430, +5.4157, 3.3904),  # 19 object width         |k| 6.5
        (-3.9359, -0.7755, -2.0389, 1.0434),  # 20 horizon height       |k| 4.5
    ],
    dtype=np.float64,
)
_F_SKY_A, _F_SKY_B, _F_SKY_C, _F_HAZE, _F_ARID, _F_URBAN = range(6)
_F_RIDGE_H, _F_RIDGE_F, _F_RIDGE_C, _F_STRIPE_O, _F_STRIPE_F, _F_STRIPE_C = range(6, 12)
_F_DENSITY, _F_HUE_A, _F_HUE_B, _F_HEIGHT, _F_SUN, _F_TINT = range(12, 18)
_F_CROSS, _F_WIDTH, _F_HORIZON = range(18, 21)

# Colour mixing matrices (field triples -> RGB offsets).
_SKY_ZENITH = np.array([70.0, 115.0, 195.0])
_SKY_MIX = np.array([[55.0, 10.0, -35.0], [-15.0, 40.0, 25.0], [30.0, -30.0, 30.0]])  # rows: fields a, b, c
_BIOMES = {  # name -> RGB
    "tropical": (28.0, 82.0, 38.0),
    "desert": (214.0, 182.0, 118.0),
    "steppe": (172.0, 158.0, 88.0),
    "temperate": (92.0, 146.0, 62.0),
    "boreal": (46.0, 86.0, 64.0),
    "snow": (228.0, 232.0, 238.0),
}
_BIOME_RGB = np.array(list(_BIOMES.values()))
_RIDGE_PALETTE = np.array([(92.0, 104.0, 140.0), (120.0, 96.0, 78.0), (70.0, 110.0, 84.0)])
#: Relative (multiplicative) colour changes of the light ground stripes: paler, browner, yellower
#: (the dark stripes are just darker).
_STRIPE_PALETTE = np.array([(0.40, 0.36, 0.34), (0.42, 0.10, -0.20), (0.36, 0.40, -0.25)])
_MAX_OBJECTS = 14
_MAX_CLOUDS = 4


def _unit_vector(latitude: float, longitude: float) -> np.ndarray:
    lat, lon = math.radians(latitude), math.radians(longitude)
    return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])


def location_fields(latitude: float, longitude: float) -> np.ndarray:
    """The ``len(_FIELDS)`` smooth location fields in [-1, 1] at a place (degrees)."""
    v = _unit_vector(latitude, longitude)
    return np.sin(_FIELDS[:, :3] @ v + _FIELDS[:, 3])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _biome_weights(latitude: float, aridity: float) -> np.ndarray:
    """Weights (summing to 1) of the biomes in ``_BIOMES`` order; smooth in ``latitude``."""
    a = abs(latitude)  # every weight is (numerically) flat at a = 0, so this is smooth across the equator
    dry = _sigmoid(4.0 * aridity - 0.8)
    w = np.array(
        [
            math.exp(-((a / 13.0) ** 2)) * (1.0 - 0.6 * dry),
            math.exp(-(((a - 26.0) / 9.0) ** 2)) * dry * 1.6,
            math.exp(-(((a - 42.0) / 9.0) ** 2)) * dry,
            math.exp(-(((a - 45.0) / 11.0) ** 2)) * (1.0 - 0.7 * dry) + 0.02,
            math.exp(-(((a - 58.0) / 6.0) ** 2)),
            _sigmoid((a - 63.0) / 3.0) * 1.5,
        ]
    )
    return w / w.sum()


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): (yy, xx)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))  # type: ignore[return-value]


def render_geoscene(
    latitude: float,
    longitude: float,
    rng: np.random.Generator | int,
    image_size: int = 96,
    *,
    noise: bool = True,
) -> np.ndarray:
    """Render one ``image_size`` x ``image_size`` RGB uint8 photo "taken" at (latitude, longitude) in degrees.

    Args:
        rng: a numpy Generator or an int seed; it supplies all per-photo nuisance (the same number of
            draws whatever the place, so one stream at two nearby places gives nearly equal photos).
        noise: add the colour jitter and Gaussian pixel noise (off: debug / tests).
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    size = int(image_size)
    lat = float(np.clip(latitude, -90.0, 90.0))
    f = location_fields(lat, float(longitude))
    coslat2 = math.cos(math.radians(lat)) ** 2
    yy, xx = _grid(size)

    # ---- all random draws up front (fixed count, location independent) ----
    r_horizon = rng.uniform(-1.0, 1.0)
    r_tilt = rng.uniform(-1.0, 1.0)
    r_sun = rng.uniform(-1.0, 1.0, 3)
    r_clouds = rng.random((_MAX_CLOUDS, 6))
    r_ridge_phase = rng.uniform(0.0, 2 * math.pi, 3)
    r_stripe_phase = rng.uniform(0.0, 2 * math.pi)
    r_blotch = rng.uniform(-1.0, 1.0, (4, 4))
    r_objects = rng.random((_MAX_OBJECTS, 9))
    r_sky = rng.standard_normal(4)
    r_overcast = rng.random()
    r_ground = rng.standard_normal(4)
    r_jitter = rng.uniform(-1.0, 1.0, 4)
    r_noise = rng.uniform(2.0, 6.0)

    # ---- horizon: height from a field, jittered; small camera roll ----
    horizon0 = 0.48 + 0.09 * f[_F_HORIZON] + 0.04 * r_horizon
    tilt = math.tan(math.radians(3.0 * r_tilt))
    horizon = horizon0 + tilt * (xx[0] - 0.5)  # per column, [W]

    # ---- sky ----
    # Weather / time of day (nuisance): a random colour shift and a random overcast veil.
    zenith = _SKY_ZENITH + f[[_F_SKY_A, _F_SKY_B, _F_SKY_C]] @ _SKY_MIX + 16.0 * r_sky[:3]
    haze_warm = float(np.clip(0.5 + 0.5 * f[_F_HAZE] + 0.15 * r_sky[3], 0.0, 1.0))  # 0: blue-grey, 1: warm
    haze = np.array([200.0, 212.0, 225.0]) * (1 - haze_warm) + np.array([238.0, 214.0, 170.0]) * haze_warm
    overcast = 0.5 * r_overcast**3
    zenith = zenith * (1 - overcast) + np.array([196.0, 198.0, 204.0]) * overcast
    horizon_col = 0.35 * zenith + 0.65 * haze
    t = np.clip(yy / np.maximum(horizon[None, :], 0.05), 0.0, 1.0) ** 1.4
    img = zenith[None, None, :] * (1 - t[..., None]) + horizon_col[None, None, :] * t[..., None]

    # Sun: elevation from the latitude, azimuth (x) from a field.
    # Distance from the image centre from a field, side at random: flipping the photo keeps the cue.
    sx = 0.5 + math.copysign(0.06 + 0.32 * (0.5 + 0.5 * f[_F_SUN]) + 0.04 * r_sun[0], r_sun[1])
    sy = horizon0 - (0.06 + 0.34 * coslat2**1.5) + 0.02 * r_sun[2]
    d2 = (xx - sx) ** 2 + (yy - sy) ** 2
    sun_col = np.array([255.0, 244.0, 210.0]) * (0.85 + 0.15 * coslat2)
    glow = np.exp(-d2 / 0.012)[..., None] * 0.45 + (d2 < 0.0028)[..., None] * 1.0
    img = img * (1 - np.clip(glow, 0, 1)) + sun_col * np.clip(glow, 0, 1)

    # Clouds: soft white/grey ellipses (nuisance).
    for c in r_clouds:
        if c[0] > 0.45:
            continue
        cx, cy = c[1], 0.05 + c[2] * max(horizon0 - 0.12, 0.05)
        rx, ry = 0.08 + 0.14 * c[3], 0.025 + 0.04 * c[4]
        q = 1.0 - ((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2
        alpha = np.sqrt(np.clip(q, 0.0, 1.0)) * (0.55 + 0.4 * c[5])
        grey = 235.0 - 50.0 * c[5]
        img = img * (1 - alpha[..., None]) + grey * alpha[..., None]

    # ---- far ridge (mountains) ----
    ridge_h = 0.01 + 0.17 * (0.5 + 0.5 * f[_F_RIDGE_H]) ** 1.5
    base_freq = 1.2 + 2.6 * (0.5 + 0.5 * f[_F_RIDGE_F])
    x = xx[0]
    prof = (
        np.sin(2 * math.pi * base_freq * x + r_ridge_phase[0])
        + 0.5 * np.sin(2 * math.pi * base_freq * 2.3 * x + r_ridge_phase[1])
        + 0.25 * np.sin(2 * math.pi * base_freq * 5.1 * x + r_ridge_phase[2])
    ) / 1.75
    ridge_top = horizon - ridge_h * (0.55 + 0.45 * prof)  # [W]
    rw = np.array([0.5 + 0.5 * f[_F_RIDGE_C], 0.5 - 0.5 * f[_F_RIDGE_C], 0.5 + 0.5 * f[_F_RIDGE_H]])
    ridge_col = (rw / rw.sum()) @ _RIDGE_PALETTE
    ridge_col = 0.75 * ridge_col + 0.25 * horizon_col  # aerial perspective
    ridge_mask = (yy >= ridge_top[None, :]) & (yy < horizon[None, :])
    # Snow caps on high ridges in cold places.
    snowy = _sigmoid((abs(lat) - 42.0) / 5.0) * _sigmoid((ridge_h - 0.07) / 0.015)
    cap = yy < (ridge_top[None, :] + ridge_h * 0.35)
    rc = np.where(cap[..., None], ridge_col * (1 - snowy) + np.array([240.0, 242.0, 248.0]) * snowy, ridge_col)
    img = np.where(ridge_mask[..., None], rc, img)

    # ---- ground: biome colour + perspective stripes + blotches ----
    w = _biome_weights(lat, f[_F_ARID])
    ground = w @ _BIOME_RGB
    tint = np.array([f[_F_TINT], f[_F_HUE_A] * 0.5 + f[_F_SKY_C] * 0.5, -f[_F_TINT]]) * 16.0
    ground = ground + tint * (1.0 - w[5])
    ground = ground * (1.0 + 0.07 * r_ground[0]) + 9.0 * r_ground[1:4]  # light / season (nuisance)
    below = yy - horizon[None, :]  # > 0 on the ground
    ground_mask = below >= 0
    depth = 1.0 / (np.maximum(below, 0.0) + 0.03)  # perspective: distance along the ground
    gx = (xx - 0.5) * depth
    # Stripe orientation on the ground plane, in (0, 90) degrees: a mirrored photo shows 180 - theta.
    theta = 0.5 * math.pi * (0.04 + 0.92 * (0.5 + 0.5 * f[_F_STRIPE_O]))
    freq = 0.35 + 0.55 * (0.5 + 0.5 * f[_F_STRIPE_F])
    wave = np.sin(2 * math.pi * freq * (gx * math.cos(theta) + depth * math.sin(theta)) + r_stripe_phase)
    cross = 0.5 + 0.5 * f[_F_CROSS]  # weight of a second, perpendicular wave: stripes -> checks
    wave2 = np.sin(2 * math.pi * freq * 1.3 * (depth * math.cos(theta) - gx * math.sin(theta)) + 2 * r_stripe_phase)
    wave = (1 - 0.6 * cross) * wave + 0.6 * cross * wave * wave2 * 1.6
    fade = np.clip(below / 0.12, 0.0, 1.0)  # no aliasing soup near the horizon
    sw = np.array([0.5 + 0.5 * f[_F_STRIPE_C], 0.5 - 0.5 * f[_F_STRIPE_C], 0.5 + 0.5 * f[_F_STRIPE_O]])
    strength = (0.6 + 0.8 * (0.5 + 0.5 * f[_F_STRIPE_F])) * (1.0 - 0.8 * w[5])  # faint on snow
    stripe_mod = (sw / sw.sum()) @ _STRIPE_PALETTE * strength
    wave = wave * fade
    dark = np.minimum(0.32 * strength * np.maximum(-wave, 0.0), 0.7)  # dark stripes: just darker
    gain = 1.0 + np.maximum(wave, 0.0)[..., None] * stripe_mod - dark[..., None]
    blotch = np.asarray(
        Image.fromarray(((r_blotch + 1) * 127.5).astype(np.uint8)).resize((size, size), Image.BILINEAR),
        np.float32,
    ) / 127.5 - 1.0
    gimg = (
        ground[None, None, :] * gain
        + blotch[..., None] * 14.0
    )
    far = np.clip(1.0 - below / 0.25, 0.0, 1.0)[..., None] ** 2 * 0.45  # haze towards the horizon
    gimg = gimg * (1 - far) + horizon_col * far
    img = np.where(ground_mask[..., None], gimg, img)

    # ---- objects: buildings and trees standing on the ground ----
    pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    density = 0.12 + 0.78 * (0.5 + 0.5 * f[_F_DENSITY]) * (1.0 - 0.7 * w[5])
    urban = _sigmoid(3.5 * f[_F_URBAN] + 0.3) * (1.0 - 0.8 * w[5])
    conifer = w[4] + w[5]
    dryplant = w[1] + 0.5 * w[2]
    height_f = 0.6 + 0.8 * (0.5 + 0.5 * f[_F_HEIGHT])
    wall = np.array([200.0, 190.0, 170.0]) + np.array([40.0, -10.0, -45.0]) * f[_F_HUE_A] + np.array(
        [-30.0, 15.0, 45.0]
    ) * f[_F_HUE_B]
    roof = np.array([150.0, 70.0, 55.0]) + np.array([-60.0, 20.0, 60.0]) * f[_F_HUE_B] + np.array(
        [30.0, 30.0, -20.0]
    ) * f[_F_HUE_A]
    leaf = np.array([45.0, 105.0, 45.0]) + np.array([25.0, 20.0, -15.0]) * f[_F_HUE_A] + np.array(
        [-10.0, 15.0, 20.0]
    ) * f[_F_TINT]
    pitched = _sigmoid(3.0 * f[_F_HUE_B] - 2.0 * f[_F_URBAN])
    objs = sorted(r_objects, key=lambda o: o[2])  # far (small y) first
    hz_mid = horizon0
    for o in objs:
        if o[0] >= density:
            continue
        ox = o[1]
        oy = hz_mid + 0.015 + (1.0 - hz_mid - 0.015) * o[2] ** 0.8 + tilt * (ox - 0.5)
        scale = (oy - horizon0) / max(1.0 - horizon0, 1e-3)  # perspective size
        scale = 0.18 + 0.82 * scale
        jit = (o[7] - 0.5) * 30.0
        if o[3] < urban:
            bw = (0.04 + 0.06 * o[4]) * (0.6 + 1.4 * (0.5 + 0.5 * f[_F_WIDTH])) * scale * size
            bh = (0.1 + 0.22 * o[5]) * height_f * scale * size
            x0, y1 = ox * size - bw / 2, oy * size
            y0 = y1 - bh
            draw.rectangle([x0, y0, x0 + bw, y1], fill=_rgb(wall + jit))
            if o[6] < pitched:
                draw.polygon([(x0 - 1, y0), (x0 + bw / 2, y0 - 0.45 * bw), (x0 + bw + 1, y0)], fill=_rgb(roof + jit))
            else:
                draw.rectangle([x0, y0 - 0.08 * bw, x0 + bw, y0], fill=_rgb(roof * 0.8 + jit))
            if bw >= 6 and bh >= 8:  # windows
                win = _rgb(wall * 0.35 + np.array([20.0, 25.0, 40.0]) * (o[8] > 0.5))
                nx, ny = max(1, int(bw // 5)), max(1, int(bh // 6))
                for i in range(nx):
                    for j in range(ny):
                        wx = x0 + (i + 0.3) * bw / nx
                        wy = y0 + (j + 0.3) * bh / ny
                        draw.rectangle([wx, wy, wx + 0.4 * bw / nx, wy + 0.35 * bh / ny], fill=win)
        else:
            th = (0.08 + 0.14 * o[5]) * scale * size * (0.7 + 0.3 * height_f)
            cx, y1 = ox * size, oy * size
            col = _rgb(leaf * (1.0 - 0.35 * conifer) + jit)
            trunk = _rgb(np.array([90.0, 65.0, 45.0]) + jit * 0.5)
            kind = o[6]
            if kind < conifer:  # conifer: stacked triangle
                tw = 0.45 * th
                draw.polygon([(cx - tw / 2, y1), (cx, y1 - th), (cx + tw / 2, y1)], fill=col)
            elif kind < conifer + dryplant:  # cactus / shrub
                tw = 0.14 * th
                cac = _rgb(np.array([95.0, 125.0, 70.0]) + jit)
                draw.rectangle([cx - tw / 2, y1 - 0.7 * th, cx + tw / 2, y1], fill=cac)
                draw.rectangle([cx - 2.2 * tw, y1 - 0.5 * th, cx - tw / 2, y1 - 0.42 * th], fill=cac)
                draw.rectangle([cx - 2.2 * tw, y1 - 0.62 * th, cx - 1.4 * tw, y1 - 0.42 * th], fill=cac)
            else:  # broadleaf: trunk + round crown
                r = 0.32 * th
                draw.rectangle([cx - 0.05 * th, y1 - 0.55 * th, cx + 0.05 * th, y1], fill=trunk)
                draw.ellipse([cx - r, y1 - th, cx + r, y1 - th + 2 * r], fill=col)
    img = np.asarray(pil, np.float32)

    if noise:
        gain = 1.0 + 0.08 * r_jitter[0] + 0.04 * r_jitter[1:4]
        img = img * gain.astype(np.float32)[None, None, :]
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(r_noise)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def sample_locations(num: int, rng: np.random.Generator | int) -> tuple[np.ndarray, np.ndarray]:
    """``num`` places: a city drawn uniformly from :func:`load_cities` moved by up to ``MAX_OFFSET_KM``.

    The offset is uniform over the disc of radius ``MAX_OFFSET_KM`` (great-circle destination point);
    latitudes are clipped to [-90, 90] and longitudes wrapped to [-180, 180).

    Returns:
        ``(latitude, longitude)`` float64 arrays in degrees.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    cities = load_cities()
    idx = rng.integers(0, len(cities), int(num))
    dist = MAX_OFFSET_KM * np.sqrt(rng.random(int(num))) / EARTH_RADIUS_KM  # angular distance
    bearing = rng.uniform(0.0, 2 * math.pi, int(num))
    lat1, lon1 = np.radians(cities.latitude[idx]), np.radians(cities.longitude[idx])
    sin_lat2 = np.sin(lat1) * np.cos(dist) + np.cos(lat1) * np.sin(dist) * np.cos(bearing)
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    lon2 = lon1 + np.arctan2(np.sin(bearing) * np.sin(dist) * np.cos(lat1), np.cos(dist) - np.sin(lat1) * sin_lat2)
    lat = np.clip(np.degrees(lat2), -90.0, 90.0)
    lon = (np.degrees(lon2) + 180.0) % 360.0 - 180.0
    return lat.astype(np.float64), lon.astype(np.float64)


# --------------------------------------------------------------------------------------------
# Dataset files
# --------------------------------------------------------------------------------------------


def _file_name(index: int) -> str:
    return f"{index:06d}.jpg"


def _streams(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(place stream, rendering stream) of one photo."""
    key = [int(seed), _SPLIT_IDS[split], int(index)]
    return np.random.default_rng(key + [0]), np.random.default_rng(key + [1])


def _render_to_file(args: tuple[str, str, int, int, int, int]) -> tuple[float, float]:
    out_dir, split, seed, index, image_size, quality = args
    place_rng, render_rng = _streams(seed, split, index)
    lat, lon = sample_locations(1, place_rng)
    lat_r, lon_r = round(float(lat[0]), 6), round(float(lon[0]), 6)  # what the csv stores
    image = render_geoscene(lat_r, lon_r, render_rng, image_size)
    Image.fromarray(image).save(
        os.path.join(out_dir, "images", split, _file_name(index)), quality=quality, subsampling=0
    )
    return lat_r, lon_r


def geoscenes_paths(root: str | Path | None = None) -> dict[str, str]:
    """Paths of the geoscenes dataset under ``root`` (whether or not it exists yet)."""
    root = Path(embedded_root("geoscenes", root))
    return {
        "root": str(root),
        "train_images": str(root / "images" / "train"),
        "train_csv": str(root / "train.csv"),
        "val_images": str(root / "images" / "val"),
        "val_csv": str(root / "val.csv"),
        "manifest": str(root / MANIFEST_NAME),
    }


def _params(num_train: int, num_val: int, image_size: int, seed: int, jpeg_quality: int) -> dict[str, Any]:
    return {
        "generator": _GENERATOR_TAG,
        "version": GEOSCENES_GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
        "num_cities": len(load_cities()),
    }


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    if not manifest_matches(root / MANIFEST_NAME, params):
        return False
    return all((root / f"{split}.csv").is_file()
               and folder_holds(root / "images" / split, (_file_name(i) for i in range(params[f"num_{split}"])))
               for split in ("train", "val"))


def ensure_geoscenes_dataset(
    root: str | Path | None = None,
    num_train: int = 4000,
    num_val: int = 800,
    image_size: int = 96,
    seed: int = 0,
    force: bool = False,
    *,
    jpeg_quality: int = 90,
    workers: int | None = None,
) -> Path:
    """Create the geoscenes dataset under ``root`` unless a complete copy with the same parameters exists.

    Renders into a temporary sibling folder and moves it into place at the end (an interrupted run
    never leaves a dataset that looks complete).  An existing ``root`` is only replaced if it is
    empty or holds this generator's ``geoscenes_manifest.json``; any other non-empty folder raises
    ``FileExistsError``.  ``force`` re-renders even a complete dataset.

    Returns:
        ``root`` as a Path.
    """
    root = Path(embedded_root("geoscenes", root))
    if num_train < 1 or num_val < 1:
        raise UserError(f"need at least one image per split, got num_train={num_train}, num_val={num_val}")
    params = _params(num_train, num_val, image_size, seed, jpeg_quality)

    def render(tmp: Path) -> None:
        logger.info("generating geoscenes dataset (%d train / %d val, %dpx) in %s",
                    num_train, num_val, image_size, root)
        jobs = []
        for split, n in (("train", num_train), ("val", num_val)):
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            jobs += [(str(tmp), split, int(seed), i, int(image_size), int(jpeg_quality)) for i in range(n)]
        places = render_all(_render_to_file, jobs, workers)
        for split, n in (("train", num_train), ("val", num_val)):
            split_places, places = places[:n], places[n:]
            with open(tmp / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_HEADER)
                for i, (lat, lon) in enumerate(split_places):
                    writer.writerow([f"images/{split}/{_file_name(i)}", f"{lat:.6f}", f"{lon:.6f}"])

    build_generated_dataset(root, params, MANIFEST_NAME, _is_complete, render, "geoscenes", force)
    return root
