"""Valid events with sensible defaults, for tests: override only the fields a test is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from taxi_events.events import Prediction, TripFinished, TripStarted

PICKUP = datetime(2016, 3, 1, 8, 0)
PRODUCED = datetime(2026, 1, 1, tzinfo=UTC)
_PLACES = {
    "pickup_longitude": -73.98,
    "pickup_latitude": 40.75,
    "dropoff_longitude": -73.96,
    "dropoff_latitude": 40.77,
}


def trip_started(trip_id: str = "id0000001", **fields: Any) -> TripStarted:
    values: dict[str, Any] = {
        "vendor_id": 1,
        "pickup_datetime": PICKUP,
        "passenger_count": 1,
        **_PLACES,
        "store_and_fwd_flag": False,
        "source": "train",
        "produced_at": PRODUCED,
    }
    return TripStarted(trip_id=trip_id, **{**values, **fields})


def trip_finished(trip_id: str = "id0000001", **fields: Any) -> TripFinished:
    values: dict[str, Any] = {
        "dropoff_datetime": PICKUP,
        "trip_duration": 660.0,
        "is_estimate": False,
        "source": "train",
        "produced_at": PRODUCED,
    }
    return TripFinished(trip_id=trip_id, **{**values, **fields})


def prediction(trip_id: str = "id0000001", **fields: Any) -> Prediction:
    values: dict[str, Any] = {
        "source": "train",
        "predicted_duration": 600.0,
        "model_version": "abc123",
        "pickup_datetime": PICKUP,
        **_PLACES,
        "trip_started_at": PRODUCED,
        "predicted_at": PRODUCED,
        "produced_at": PRODUCED,
    }
    return Prediction(trip_id=trip_id, **{**values, **fields})
