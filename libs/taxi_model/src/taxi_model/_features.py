"""Features from what is known at pickup time. Pure and vectorised: frame in, frame out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from taxi_events import TripStarted
from taxi_events.columns import TripStartColumns
from taxi_model import _geo as geo
from taxi_model._data import TEST_COLUMNS

# The raw columns a prediction needs; Kaggle's names, so a CSV frame and a batch of events agree.
INPUT_COLUMNS = tuple(c for c in TEST_COLUMNS if c != "id")


def trip_features(trips: pd.DataFrame) -> pd.DataFrame:
    """Numeric model features for each trip, in a fixed column order."""
    missing = [c for c in INPUT_COLUMNS if c not in trips.columns]
    if missing:
        raise KeyError(f"trip frame lacks columns {missing}")
    plat = trips["pickup_latitude"].to_numpy(np.float64)
    plon = trips["pickup_longitude"].to_numpy(np.float64)
    dlat = trips["dropoff_latitude"].to_numpy(np.float64)
    dlon = trips["dropoff_longitude"].to_numpy(np.float64)
    pickup_at = pd.to_datetime(trips["pickup_datetime"])
    hour = pickup_at.dt.hour.to_numpy() + pickup_at.dt.minute.to_numpy() / 60.0
    day_of_week = pickup_at.dt.day_of_week.to_numpy()
    pickup_x, pickup_y = geo.grid_xy_km(plat, plon)
    dropoff_x, dropoff_y = geo.grid_xy_km(dlat, dlon)

    features: dict[str, np.ndarray] = {
        "haversine_km": geo.haversine_km(plat, plon, dlat, dlon),
        "manhattan_km": geo.manhattan_km(plat, plon, dlat, dlon),
        "bearing_deg": geo.bearing_deg(plat, plon, dlat, dlon),
        "pickup_latitude": plat,
        "pickup_longitude": plon,
        "dropoff_latitude": dlat,
        "dropoff_longitude": dlon,
        # Coordinates along the rotated street grid let the trees split on avenues and streets.
        "pickup_grid_x": pickup_x,
        "pickup_grid_y": pickup_y,
        "dropoff_grid_x": dropoff_x,
        "dropoff_grid_y": dropoff_y,
        "centre_latitude": (plat + dlat) / 2,
        "centre_longitude": (plon + dlon) / 2,
        "hour": hour,
        "day_of_week": day_of_week,
        "week_hour": day_of_week * 24 + hour,
        "day_of_year": pickup_at.dt.day_of_year.to_numpy(),
        "vendor_id": trips["vendor_id"].to_numpy(np.float64),
        "passenger_count": trips["passenger_count"].to_numpy(np.float64),
        "store_and_fwd": _flag_is_set(trips["store_and_fwd_flag"]),
    }
    for end, (lat, lon) in {"pickup": (plat, plon), "dropoff": (dlat, dlon)}.items():
        for airport, near in geo.airport_flags(lat, lon).items():
            features[f"{end}_{airport.lower()}"] = near.astype(np.float64)
    return pd.DataFrame(features, index=trips.index)


def _flag_is_set(flag: pd.Series) -> np.ndarray:
    # Kaggle writes the flag as "Y"/"N"; events carry it as a bool.
    if flag.dtype == bool:
        return flag.to_numpy(np.float64)
    return (flag.astype(str) == "Y").to_numpy(np.float64)


def columns_to_frame(trips: TripStartColumns) -> pd.DataFrame:
    """Decoded trip starts as a frame with the model's input columns."""
    return pd.DataFrame(
        {
            "vendor_id": trips.vendor_id,
            "pickup_datetime": pd.to_datetime(trips.pickup_datetime),
            "passenger_count": trips.passenger_count,
            "pickup_longitude": trips.pickup_longitude,
            "pickup_latitude": trips.pickup_latitude,
            "dropoff_longitude": trips.dropoff_longitude,
            "dropoff_latitude": trips.dropoff_latitude,
            "store_and_fwd_flag": trips.store_and_fwd_flag,
        },
        columns=list(INPUT_COLUMNS),
    )


def events_to_frame(events: Sequence[TripStarted]) -> pd.DataFrame:
    """A batch of TripStarted events as a frame with the model's input columns."""
    return columns_to_frame(TripStartColumns.from_events(events))


class TripFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped: bases are Any
    """`trip_features` as the first step of the saved scikit-learn pipeline. Stateless."""

    def fit(self, trips: pd.DataFrame, y: object = None) -> TripFeatures:
        return self

    def transform(self, trips: pd.DataFrame) -> pd.DataFrame:
        return trip_features(trips)


# A saved model (skops) records this class by module and name, and loading trusts it by that
# name: the public package's, so that saved models stay loadable when it moves between modules.
TripFeatures.__module__ = "taxi_model"
