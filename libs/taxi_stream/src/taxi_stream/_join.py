"""Joining predictions with trip ends by trip (source and trip_id): the aggregator's core, no I/O.

Whichever side arrives first waits; its partner completes the match. A side that waits longer
than `ttl_ms` (measured on the record timestamps the caller passes, so a replay expires exactly
the same trips) is expired and counted instead of being held forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import attrs

from taxi_events import Prediction, Source, TripFinished, TripKey, trip_key

Side = Literal["prediction", "finish"]


@attrs.frozen
class MatchedTrip:
    trip_id: str
    source: Source
    predicted_duration: float
    actual_duration: float
    is_estimate: bool
    model_version: str
    matched_at_ms: int  # the timestamp of whichever side arrived second


@attrs.frozen
class Pending:
    event: Prediction | TripFinished
    arrived_at_ms: int

    @property
    def side(self) -> Side:
        return "prediction" if isinstance(self.event, Prediction) else "finish"


@attrs.define
class TripJoin:
    ttl_ms: int
    _pending: dict[TripKey, Pending] = attrs.field(factory=dict, init=False)

    def add(self, event: Prediction | TripFinished, timestamp_ms: int) -> MatchedTrip | None:
        """Offer one side of a trip. Returns the match if its partner was waiting.

        A repeat of a side already waiting changes nothing, so a redelivered record is harmless.
        """
        key = trip_key(event)
        waiting = self._pending.get(key)
        if waiting is None or type(waiting.event) is type(event):
            self._pending.setdefault(key, Pending(event, timestamp_ms))
            return None
        del self._pending[key]
        prediction, finish = (
            (event, waiting.event) if isinstance(event, Prediction) else (waiting.event, event)
        )
        assert isinstance(prediction, Prediction)
        assert isinstance(finish, TripFinished)
        return MatchedTrip(
            trip_id=event.trip_id,
            source=finish.source,
            predicted_duration=prediction.predicted_duration,
            actual_duration=finish.trip_duration,
            is_estimate=finish.is_estimate,
            model_version=prediction.model_version,
            matched_at_ms=max(timestamp_ms, waiting.arrived_at_ms),
        )

    def expire(self, now_ms: int) -> list[Pending]:
        """Remove and return every side that has waited longer than the TTL at `now_ms`."""
        expired = [p for p in self._pending.values() if now_ms - p.arrived_at_ms > self.ttl_ms]
        for pending in expired:
            del self._pending[trip_key(pending.event)]
        return expired

    def __getitem__(self, key: TripKey) -> Pending:
        return self._pending[key]

    def discard(self, key: TripKey) -> None:
        self._pending.pop(key, None)

    def pending(self) -> Iterator[Pending]:
        return iter(self._pending.values())

    def __len__(self) -> int:
        return len(self._pending)
