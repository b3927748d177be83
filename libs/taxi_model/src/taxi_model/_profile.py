"""The training profile: how a model's inputs were spread over its training fold.

The model card keeps it, and the stream's data-drift check (taxi_stream's DriftMonitors) holds
a window of live trips up against it, feature by feature. Training and stream bin with the same
code (`TrainingProfile.bin_indices`), so a live trip falls in exactly the bin that a training
trip with the same inputs fell in.

The watched inputs, from the model's input columns (`drift_features`):

- `distance_km`: the haversine distance from pickup to dropoff, binned at its deciles on the
  training fold.
- `week_hour`: the hour of the week of the pickup, 0 (Monday 00:00-00:59) to 167 (Sunday 23:00),
  binned at its twelfths on the training fold, so each bin holds about as many training trips.
- `pickup_area`: the 1.5 km square of the Manhattan street grid (`_geo.grid_xy_km`) that the
  pickup lies in, named `x<i>y<j>`. The squares that held at least 1% of the training pickups
  are the categories; every other square is `other`. Squares rather than boroughs: most
  pickups are in Manhattan, so boroughs would not see a shift within it; squares need no map
  data; and keeping only squares with 1% of the trips gives every category enough trips in a
  window of a thousand for a steady PSI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd

from taxi_model import _geo as geo

# What `drift_features` reads: a frame with the model's input columns (Kaggle's names), or the
# same columns as arrays.
TripColumns = pd.DataFrame | Mapping[str, Any]
IntArray = npt.NDArray[np.int64]

DISTANCE_BINS = 10
WEEK_HOUR_BINS = 12
AREA_KM = 1.5
AREA_MIN_SHARE = 0.01
OTHER_AREA = "other"
# 1970-01-01, hour 0 of the epoch, was a Thursday: hour 72 of a week that starts on Monday.
_EPOCH_WEEK_HOUR = 3 * 24
_POINTS = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")


def week_hour(pickups: npt.ArrayLike) -> IntArray:
    """The hour of the week of each pickup time (naive local times), Monday 00:00 being 0."""
    hours = np.asarray(pickups, dtype="datetime64[h]").astype(np.int64)
    return (hours + _EPOCH_WEEK_HOUR) % (7 * 24)


def pickup_area(latitude: npt.ArrayLike, longitude: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """The street-grid square of each point: `x<i>y<j>`, i across the avenues, j along them."""
    x_km, y_km = geo.grid_xy_km(latitude, longitude)
    across = np.floor(x_km / AREA_KM).astype(np.int64)
    along = np.floor(y_km / AREA_KM).astype(np.int64)
    return np.array([f"x{i}y{j}" for i, j in zip(across, along, strict=True)], dtype=np.str_)


def drift_features(trips: TripColumns) -> dict[str, np.ndarray]:
    """The inputs watched for data drift, one array each, computed from the trips' columns."""
    plat, plon, dlat, dlon = (np.asarray(trips[column], dtype=np.float64) for column in _POINTS)
    return {
        "distance_km": geo.haversine_km(plat, plon, dlat, dlon),
        "week_hour": week_hour(trips["pickup_datetime"]),
        "pickup_area": pickup_area(plat, plon),
    }


def _check_expected(
    feature: FeatureProfile, _: attrs.Attribute[Any], expected: list[float]
) -> None:
    if feature.edges and feature.categories:
        raise ValueError(f"feature {feature.name!r} has both bin edges and categories")
    bins = len(feature.categories or feature.edges) + 1
    if len(expected) != bins:
        raise ValueError(f"feature {feature.name!r}: {len(expected)} proportions for {bins} bins")


@attrs.frozen
class FeatureProfile:
    """One watched input: its bins and the share of the training trips in each.

    A numeric feature has `edges`, increasing: bin 0 holds the values below edges[0], bin i
    those from edges[i-1] up to edges[i], and the last bin those from the last edge up. A
    categorical one has `categories`: bin i holds categories[i], and one more bin, last, every
    value that is none of them.
    """

    name: str
    expected: list[float] = attrs.field(validator=_check_expected)
    edges: list[float] = attrs.field(factory=list)
    categories: list[str] = attrs.field(factory=list)

    @property
    def bins(self) -> int:
        return len(self.expected)

    def bin_indices(self, values: npt.ArrayLike) -> IntArray:
        """The bin of each value, 0 to bins - 1."""
        if self.categories:
            index = {category: i for i, category in enumerate(self.categories)}
            other = len(self.categories)
            return np.array([index.get(str(v), other) for v in np.asarray(values)], dtype=np.int64)
        return np.searchsorted(self.edges, np.asarray(values, dtype=np.float64), side="right")


@attrs.frozen
class TrainingProfile:
    """The watched inputs of a model's training fold (`trips` of them), one profile each."""

    trips: int
    features: list[FeatureProfile]

    def bin_indices(self, trips: TripColumns) -> dict[str, IntArray]:
        """The bin of every trip in each feature's profile: how the stream counts its trips."""
        values = drift_features(trips)
        return {f.name: f.bin_indices(values[f.name]) for f in self.features}


def training_profile(train: TripColumns) -> TrainingProfile:
    """The profile of the training fold `train`: bins learnt from it, and its shares in them."""
    values = drift_features(train)
    features = [
        _numeric_profile("distance_km", values["distance_km"], DISTANCE_BINS),
        _numeric_profile("week_hour", values["week_hour"], WEEK_HOUR_BINS),
        _categorical_profile("pickup_area", values["pickup_area"], AREA_MIN_SHARE),
    ]
    return TrainingProfile(trips=len(values["distance_km"]), features=features)


def _numeric_profile(name: str, values: np.ndarray, bins: int) -> FeatureProfile:
    # Quantile edges give every bin about the same share; ties (a discrete feature) merge bins.
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    edges = [float(edge) for edge in np.unique(quantiles)]
    return _with_shares(FeatureProfile(name, [0.0] * (len(edges) + 1), edges=edges), values)


def _categorical_profile(name: str, values: np.ndarray, min_share: float) -> FeatureProfile:
    categories, counts = np.unique(values, return_counts=True)
    kept = [str(c) for c in categories[counts >= min_share * len(values)]]
    return _with_shares(FeatureProfile(name, [0.0] * (len(kept) + 1), categories=kept), values)


def _with_shares(feature: FeatureProfile, values: np.ndarray) -> FeatureProfile:
    counts = np.bincount(feature.bin_indices(values), minlength=feature.bins)
    return attrs.evolve(feature, expected=[float(c) for c in counts / counts.sum()])
