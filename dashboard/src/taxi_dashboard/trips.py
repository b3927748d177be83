"""The trips the dashboard shows: each prediction joined with its trip end (pure: no I/O).

Unlike the aggregator's join, a matched trip is kept (to draw it fading out and to list it),
and nothing waits forever: both the trips and the trip ends still waiting for their prediction
live in bounded maps that evict the oldest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from taxi_dashboard.buffers import BoundedMap
from taxi_events import Prediction, Source, TripFinished, TripKey, trip_key

DEFAULT_TRIPS = 5_000


@dataclass(frozen=True, slots=True)
class LiveTrip:
    """A predicted trip, and once it ended, its real (or, for test rows, estimated) duration."""

    trip_id: str
    source: Source
    predicted_duration: float
    model_version: str
    pickup_datetime: datetime
    pickup_longitude: float
    pickup_latitude: float
    dropoff_longitude: float
    dropoff_latitude: float
    started_at: datetime
    predicted_at: datetime
    finished_at: datetime | None = None
    actual_duration: float | None = None
    is_estimate: bool = False

    @classmethod
    def of(cls, prediction: Prediction) -> LiveTrip:
        return cls(
            trip_id=prediction.trip_id,
            source=prediction.source,
            predicted_duration=prediction.predicted_duration,
            model_version=prediction.model_version,
            pickup_datetime=prediction.pickup_datetime,
            pickup_longitude=prediction.pickup_longitude,
            pickup_latitude=prediction.pickup_latitude,
            dropoff_longitude=prediction.dropoff_longitude,
            dropoff_latitude=prediction.dropoff_latitude,
            started_at=prediction.trip_started_at,
            predicted_at=prediction.predicted_at,
        )

    def ended(self, finish: TripFinished) -> LiveTrip:
        return dataclasses.replace(
            self,
            finished_at=finish.produced_at,
            actual_duration=finish.trip_duration,
            is_estimate=finish.is_estimate,
        )

    @property
    def finished(self) -> bool:
        return self.actual_duration is not None

    @property
    def error(self) -> float | None:
        """Predicted minus actual duration, in seconds (positive: predicted too long)."""
        if self.actual_duration is None:
            return None
        return self.predicted_duration - self.actual_duration

    @property
    def relative_error(self) -> float | None:
        """|error| / actual, as a fraction; None until finished or for a zero-length trip."""
        if self.actual_duration is None or self.actual_duration <= 0:
            return None
        return abs(self.predicted_duration - self.actual_duration) / self.actual_duration


class TripBoard:
    """The latest `capacity` predicted trips, joined with their ends, in order of last change.

    A trip end may arrive before its prediction (the look-back at start-up reads the topics in
    no particular order); it waits in a bounded map of its own. Re-read events change nothing.
    """

    def __init__(self, capacity: int = DEFAULT_TRIPS) -> None:
        self._trips: BoundedMap[TripKey, LiveTrip] = BoundedMap(capacity)
        self._early_ends: BoundedMap[TripKey, TripFinished] = BoundedMap(capacity)

    def predicted(self, prediction: Prediction) -> None:
        key = trip_key(prediction)
        if key in self._trips:
            return
        trip = LiveTrip.of(prediction)
        early = self._early_ends.pop(key)
        self._trips.put(key, trip if early is None else trip.ended(early))

    def finished(self, finish: TripFinished) -> None:
        key = trip_key(finish)
        trip = self._trips.get(key)
        if trip is None:
            self._early_ends.put(key, finish)
        elif not trip.finished:
            self._trips.put(key, trip.ended(finish))

    def trips(self) -> list[LiveTrip]:
        """Every trip held, least recently changed first."""
        return self._trips.values()

    def get(self, key: TripKey) -> LiveTrip | None:
        return self._trips.get(key)

    def __len__(self) -> int:
        return len(self._trips)

    @property
    def waiting_ends(self) -> int:
        """Trip ends held while their prediction has not been read."""
        return len(self._early_ends)
