"""New York geography shared by the data reader, the synthetic generator and the features.

Every function is vectorised: it takes scalars, numpy arrays or pandas Series and returns
float64 (or bool) numpy arrays. Distances are in kilometres, angles in degrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Mean Earth radius (IUGG); the error against the ellipsoid is well under 1% at NYC latitudes.
EARTH_RADIUS_KM = 6371.0088
KM_PER_DEG_LAT = np.pi * EARTH_RADIUS_KM / 180.0

# Manhattan's avenues run about 29 degrees east of true north; street-grid distances and
# the synthetic generator's neighbourhood shapes are measured along this rotated grid.
MANHATTAN_GRID_ROTATION_DEG = 29.0


@dataclass(frozen=True)
class BoundingBox:
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def contains(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> BoolArray:
        """True where the point lies inside the box (edges included); NaN is outside."""
        lat_a, lon_a = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        return (
            (lat_a >= self.lat_min)
            & (lat_a <= self.lat_max)
            & (lon_a >= self.lon_min)
            & (lon_a <= self.lon_max)
        )


@dataclass(frozen=True)
class Place:
    """A named point with the radius within which a trip counts as starting or ending there."""

    name: str
    lat: float
    lon: float
    radius_km: float


# Rows outside this box are flagged by the reader: GPS glitches, or trips far outside the city.
NYC_BOX = BoundingBox(lat_min=40.4, lat_max=41.1, lon_min=-74.3, lon_max=-73.6)

# Terminal-area centres. JFK and Newark sprawl over ~2 km; LaGuardia is more compact and
# residential streets start ~1.5 km from its centre, so a wider circle would catch them.
JFK = Place("JFK", 40.6413, -73.7781, 2.0)
LGA = Place("LGA", 40.7769, -73.8740, 1.5)
EWR = Place("EWR", 40.6895, -74.1745, 2.0)
AIRPORTS: Mapping[str, Place] = {p.name: p for p in (JFK, LGA, EWR)}

# Times Square: the origin of `grid_xy_km`, so Midtown sits near (0, 0).
GRID_ORIGIN_LAT, GRID_ORIGIN_LON = 40.7580, -73.9855


def _f64(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance between two points on a spherical Earth."""
    p1, p2 = np.radians(_f64(lat1)), np.radians(_f64(lat2))
    dlat = p2 - p1
    dlon = np.radians(_f64(lon2) - _f64(lon1))
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    # clip: rounding can push h a hair above 1 for antipodal points
    # numpy types np.clip's result Any; the distance is float64, as its inputs are.
    km: FloatArray = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return km


def bearing_deg(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatArray:
    """Initial compass bearing from point 1 to point 2: 0 north, 90 east, in [0, 360)."""
    p1, p2 = np.radians(_f64(lat1)), np.radians(_f64(lat2))
    dlon = np.radians(_f64(lon2) - _f64(lon1))
    y = np.sin(dlon) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dlon)
    # numpy's ufuncs give arrays of dtype Any; the bearing is float64, as its inputs are.
    degrees: FloatArray = np.degrees(np.arctan2(y, x)) % 360.0
    return degrees


def _grid_axes() -> tuple[float, float]:
    theta = np.radians(MANHATTAN_GRID_ROTATION_DEG)
    return float(np.sin(theta)), float(np.cos(theta))


def grid_offset_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Displacement from point 1 to point 2 along the Manhattan grid: (along the avenues,
    across them), in km; positive means uptown and east-side respectively.

    Uses a flat-Earth projection at the mean latitude, exact to well under 0.1% within a city.
    """
    lat1_a, lat2_a = _f64(lat1), _f64(lat2)
    north = (lat2_a - lat1_a) * KM_PER_DEG_LAT
    east = (_f64(lon2) - _f64(lon1)) * KM_PER_DEG_LAT * np.cos(np.radians((lat1_a + lat2_a) / 2))
    s, c = _grid_axes()
    return east * s + north * c, east * c - north * s


def grid_xy_km(lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Position on the Manhattan grid relative to Times Square: (x across the avenues,
    y along them), in km. Avenues are lines of constant x, streets of constant y."""
    along, across = grid_offset_km(GRID_ORIGIN_LAT, GRID_ORIGIN_LON, lat, lon)
    return across, along


def manhattan_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatArray:
    """Street-grid (L1) distance: blocks walked along the avenues plus across the streets."""
    along, across = grid_offset_km(lat1, lon1, lat2, lon2)
    return np.abs(along) + np.abs(across)


def shift_km(
    lat: npt.ArrayLike, lon: npt.ArrayLike, along_km: npt.ArrayLike, across_km: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Move points by a displacement given along and across the Manhattan grid; the inverse
    of `grid_offset_km` for city-scale distances."""
    s, c = _grid_axes()
    along, across = _f64(along_km), _f64(across_km)
    east = along * s + across * c
    north = along * c - across * s
    lat_a = _f64(lat)
    new_lat = lat_a + north / KM_PER_DEG_LAT
    # longitude degrees shrink with latitude; use the midpoint as grid_offset_km does
    mid = np.radians((lat_a + new_lat) / 2)
    return new_lat, _f64(lon) + east / (KM_PER_DEG_LAT * np.cos(mid))


def is_near(
    lat: npt.ArrayLike, lon: npt.ArrayLike, place: Place, radius_km: float | None = None
) -> BoolArray:
    """True where the point lies within `radius_km` (default: the place's own radius) of the
    place's centre."""
    radius = place.radius_km if radius_km is None else radius_km
    return haversine_km(lat, lon, place.lat, place.lon) <= radius


def airport_flags(lat: npt.ArrayLike, lon: npt.ArrayLike) -> dict[str, BoolArray]:
    """One boolean array per airport in `AIRPORTS`, keyed by the airport's name."""
    return {name: is_near(lat, lon, place) for name, place in AIRPORTS.items()}
