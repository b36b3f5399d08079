"""Geography for geolocalization: great-circle distances (torch), PlaNet's adaptive S2 cell partition, and a
sample of real city coordinates (GeoNames, see ``CITIES_ATTRIBUTION.md``).

Depends on nothing else in mobilevision; ``data``, ``evaluation`` and ``tasks`` use it.
"""

from .cells import CellPartition, build_partition, leaf_cell_ids
from .cities import Cities, load_cities
from .distance import (
    EARTH_RADIUS_KM,
    from_unit_vectors,
    haversine_km,
    pairwise_haversine_km,
    spherical_mean,
    to_unit_vectors,
)

__all__ = [
    "EARTH_RADIUS_KM",
    "CellPartition",
    "Cities",
    "build_partition",
    "from_unit_vectors",
    "haversine_km",
    "leaf_cell_ids",
    "load_cities",
    "pairwise_haversine_km",
    "spherical_mean",
    "to_unit_vectors",
]
