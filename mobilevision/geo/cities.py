"""The shipped table of real city coordinates (a 6,000-city GeoNames sample, see ``CITIES_ATTRIBUTION.md``).

``cities.csv`` (next to this module) has the header ``latitude,longitude,name,admin1,country_code`` and is
csv-quoted (some names hold commas).  It is used to place the generated geolocalization photos at
plausible, unevenly spread locations (dense in Europe, the US, China; sparse in oceans and deserts).
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import UserError

__all__ = ["CITIES_FILE", "Cities", "load_cities"]

#: Name of the shipped csv inside the ``mobilevision.geo`` package.
CITIES_FILE = "cities.csv"
_COLUMNS = ("latitude", "longitude", "name", "admin1", "country_code")


@dataclass(frozen=True, eq=False)
class Cities:
    """City coordinates (degrees, float64) and names, one entry per row of ``cities.csv``."""

    latitude: np.ndarray
    longitude: np.ndarray
    name: list[str]
    admin1: list[str]
    country_code: list[str]

    def __len__(self) -> int:
        return int(self.latitude.shape[0])


def load_cities() -> Cities:
    """The shipped ``cities.csv`` (read once and cached; every call returns fresh copies of the columns)."""
    c = _read_cities()
    return Cities(c.latitude.copy(), c.longitude.copy(), list(c.name), list(c.admin1), list(c.country_code))


@functools.lru_cache(maxsize=1)
def _read_cities() -> Cities:
    text = resources.files(__package__).joinpath(CITIES_FILE).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    if tuple(header) != _COLUMNS:
        raise UserError(f"{CITIES_FILE}: expected header {','.join(_COLUMNS)}, got {','.join(header)}")
    rows = [r for r in reader if r]
    lat = np.array([float(r[0]) for r in rows], dtype=np.float64)
    lon = np.array([float(r[1]) for r in rows], dtype=np.float64)
    if not (np.abs(lat) <= 90).all() or not (np.abs(lon) <= 180).all():
        raise UserError(f"{CITIES_FILE}: coordinates out of range")
    lat.flags.writeable = False
    lon.flags.writeable = False
    return Cities(lat, lon, [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows])
