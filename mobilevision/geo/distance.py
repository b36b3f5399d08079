"""Great-circle distances and spherical means, vectorized in torch.

Coordinates are degrees (latitude in [-90, 90], longitude in [-180, 180]); distances are kilometres on a
sphere of the IUGG mean Earth radius, ``EARTH_RADIUS_KM`` = 6371.0088 km (geopy's ``EARTH_RADIUS``).
"""

from __future__ import annotations

import torch

__all__ = ["EARTH_RADIUS_KM", "haversine_km", "locations_from_logits", "pairwise_haversine_km", "spherical_mean", "to_unit_vectors",
           "from_unit_vectors"]

#: IUGG mean Earth radius R1 in km (the radius geopy's ``great_circle`` uses by default).
EARTH_RADIUS_KM = 6371.0088


def _as_float64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def haversine_km(lat1, lon1, lat2, lon2, radius: float = EARTH_RADIUS_KM) -> torch.Tensor:
    """Great-circle distance in km between points given in degrees (broadcasting tensors or numbers).

    The haversine formula, evaluated as ``2 R atan2(sqrt(h), sqrt(1 - h))``: unlike ``2 R asin(sqrt(h))``
    this stays accurate for nearly antipodal points. Computed in float64 whatever the input dtype.
    """
    lat1, lon1, lat2, lon2 = (torch.deg2rad(_as_float64(v)) for v in (lat1, lon1, lat2, lon2))
    h = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    h = h.clamp(0.0, 1.0)
    return 2 * radius * torch.atan2(h.sqrt(), (1 - h).sqrt())


def pairwise_haversine_km(lat1, lon1, lat2, lon2, radius: float = EARTH_RADIUS_KM) -> torch.Tensor:
    """Distances [N, M] between N points ``(lat1, lon1)`` and M points ``(lat2, lon2)``."""
    lat1, lon1 = _as_float64(lat1).reshape(-1, 1), _as_float64(lon1).reshape(-1, 1)
    lat2, lon2 = _as_float64(lat2).reshape(1, -1), _as_float64(lon2).reshape(1, -1)
    return haversine_km(lat1, lon1, lat2, lon2, radius)


def to_unit_vectors(lat, lon) -> torch.Tensor:
    """Points in degrees -> unit vectors [..., 3] (x towards (0, 0), z towards the north pole), float64."""
    lat, lon = torch.deg2rad(_as_float64(lat)), torch.deg2rad(_as_float64(lon))
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


def from_unit_vectors(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors [..., 3] (any non-zero length) -> (latitude, longitude) in degrees."""
    v = _as_float64(v)
    x, y, z = v.unbind(-1)
    lat = torch.rad2deg(torch.atan2(z, torch.hypot(x, y)))
    lon = torch.rad2deg(torch.atan2(y, x))
    return lat, lon


def spherical_mean(lat, lon, weights=None, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """(Weighted) mean location along ``dim``: the normalized sum of unit vectors, in degrees.

    Unlike averaging degrees it is right across the antimeridian (179 and -179 average to 180, not 0).
    Points that cancel out exactly (antipodes) have no mean; the result is then arbitrary but finite.
    """
    v = to_unit_vectors(lat, lon)  # [..., 3]
    if weights is not None:
        v = v * _as_float64(weights).unsqueeze(-1)
    s = v.sum(dim=dim - 1 if dim < 0 else dim)
    return from_unit_vectors(s)


def locations_from_logits(logits: torch.Tensor, locations: torch.Tensor, predict: str = "argmax",
                          top_k: int = 5) -> torch.Tensor:
    """Predicted (latitude, longitude) [B, 2] float64 from cell logits [B, C] and the cells' locations [C, 2]:
    the best cell's location (``argmax``), or the probability-weighted mean direction of the ``top_k`` best
    cells (``topk``)."""
    locations = locations.double()
    if predict == "argmax":
        return locations[logits.argmax(dim=1)]
    probs = logits.float().softmax(dim=1)
    p, idx = probs.topk(min(top_k, probs.shape[1]), dim=1)
    v = (to_unit_vectors(locations[idx, 0], locations[idx, 1]) * p.double().unsqueeze(-1)).sum(1)
    lat, lon = from_unit_vectors(v)
    return torch.stack([lat, lon], dim=1)
