"""Trip starts decoded into columns, and predictions encoded from them, a batch at a time.

This is the predictor's hot path: it builds no attrs object per record. `decode` stays the one
definition of a valid event. A record the quick checks here do not pass is handed to `decode`,
so a batch accepts and rejects exactly what `decode` does, with its reasons, and a prediction
encodes to the same bytes as `encode` gives for the equal Prediction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from math import inf

import orjson

from taxi_events.codec import decode, dumps
from taxi_events.errors import EventDecodeError
from taxi_events.events import (
    MAX_INTEGER,
    MAX_TRIP_ID_LENGTH,
    SCHEMA_VERSION,
    Prediction,
    TripStarted,
)

_UTC_OFFSET = timedelta(0)
_SOURCES = ("train", "test")


@dataclass(slots=True)
class TripStartColumns:
    """Valid TripStarted events, one list per field: row i of every list is one trip."""

    trip_id: list[str] = field(default_factory=list)
    vendor_id: list[int] = field(default_factory=list)
    pickup_datetime: list[datetime] = field(default_factory=list)
    passenger_count: list[int] = field(default_factory=list)
    pickup_longitude: list[float] = field(default_factory=list)
    pickup_latitude: list[float] = field(default_factory=list)
    dropoff_longitude: list[float] = field(default_factory=list)
    dropoff_latitude: list[float] = field(default_factory=list)
    store_and_fwd_flag: list[bool] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    schema_version: list[str] = field(default_factory=list)
    produced_at: list[datetime] = field(default_factory=list)

    @classmethod
    def from_events(cls, trips: Iterable[TripStarted]) -> TripStartColumns:
        columns = cls()
        for trip in trips:
            columns.append(trip)
        return columns

    def __len__(self) -> int:
        return len(self.trip_id)

    def append(self, trip: TripStarted) -> None:
        for column in fields(self):
            getattr(self, column.name).append(getattr(trip, column.name))

    def event(self, row: int) -> TripStarted:
        """Row `row` as a TripStarted again."""
        values = {column.name: getattr(self, column.name)[row] for column in fields(self)}
        return TripStarted(**values)


@dataclass(slots=True)
class DecodedTripStarts:
    """A batch of record values, decoded: the valid trips, and why the others are not."""

    columns: TripStartColumns
    # The position in the input of each row of `columns`.
    positions: list[int]
    errors: list[tuple[int, EventDecodeError]]


def decode_trip_starts(values: Sequence[bytes | bytearray | None]) -> DecodedTripStarts:
    """Decode a batch of record values as TripStarted, keeping the input order."""
    columns = TripStartColumns()
    positions: list[int] = []
    errors: list[tuple[int, EventDecodeError]] = []
    for position, value in enumerate(values):
        if not _append_if_plainly_valid(columns, value):
            try:
                columns.append(decode(value, TripStarted))
            except EventDecodeError as error:
                errors.append((position, error))
                continue
        positions.append(position)
    return DecodedTripStarts(columns, positions, errors)


def _append_if_plainly_valid(columns: TripStartColumns, value: bytes | bytearray | None) -> bool:
    """Append the trip if it is valid in the usual way, and say whether it was.

    False means "ask `decode`": the record may still be valid (an integer coordinate, an older
    minor version) or not. Every check here is one of TripStarted's validators, or stricter.
    """
    if value is None:
        return False
    try:
        document = orjson.loads(value)
        trip_id = document["trip_id"]
        vendor_id = document["vendor_id"]
        passenger_count = document["passenger_count"]
        pickup_longitude = document["pickup_longitude"]
        pickup_latitude = document["pickup_latitude"]
        dropoff_longitude = document["dropoff_longitude"]
        dropoff_latitude = document["dropoff_latitude"]
        store_and_fwd_flag = document["store_and_fwd_flag"]
        source = document["source"]
        schema_version = document["schema_version"]
        pickup_datetime = datetime.fromisoformat(document["pickup_datetime"])
        produced_at = datetime.fromisoformat(document["produced_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return False
    # orjson never returns a lone surrogate, so a string of the right length is a valid id.
    if not (
        type(trip_id) is str
        and 0 < len(trip_id) <= MAX_TRIP_ID_LENGTH
        and type(vendor_id) is int
        and 1 <= vendor_id <= MAX_INTEGER
        and type(passenger_count) is int
        and 0 <= passenger_count <= 9
        and type(pickup_longitude) is float
        and -180 <= pickup_longitude <= 180
        and type(pickup_latitude) is float
        and -90 <= pickup_latitude <= 90
        and type(dropoff_longitude) is float
        and -180 <= dropoff_longitude <= 180
        and type(dropoff_latitude) is float
        and -90 <= dropoff_latitude <= 90
        and type(store_and_fwd_flag) is bool
        and source in _SOURCES
        and schema_version == SCHEMA_VERSION
        and pickup_datetime.tzinfo is None
        and produced_at.utcoffset() == _UTC_OFFSET
    ):
        return False
    columns.trip_id.append(trip_id)
    columns.vendor_id.append(vendor_id)
    columns.pickup_datetime.append(pickup_datetime)
    columns.passenger_count.append(passenger_count)
    columns.pickup_longitude.append(pickup_longitude)
    columns.pickup_latitude.append(pickup_latitude)
    columns.dropoff_longitude.append(dropoff_longitude)
    columns.dropoff_latitude.append(dropoff_latitude)
    columns.store_and_fwd_flag.append(store_and_fwd_flag)
    columns.source.append(source)
    columns.schema_version.append(schema_version)
    columns.produced_at.append(produced_at)
    return True


def prediction_for(
    trip: TripStarted, duration: float, model_version: str, predicted_at: datetime
) -> Prediction:
    """The Prediction answering `trip`."""
    return Prediction(
        trip_id=trip.trip_id,
        source=trip.source,
        predicted_duration=duration,
        model_version=model_version,
        pickup_datetime=trip.pickup_datetime,
        pickup_longitude=trip.pickup_longitude,
        pickup_latitude=trip.pickup_latitude,
        dropoff_longitude=trip.dropoff_longitude,
        dropoff_latitude=trip.dropoff_latitude,
        trip_started_at=trip.produced_at,
        predicted_at=predicted_at,
        produced_at=predicted_at,
    )


def encode_predictions(
    trips: TripStartColumns,
    durations: Sequence[float],
    model_version: str,
    predicted_at: datetime,
) -> list[bytes]:
    """The encoded Prediction for each trip: the bytes `encode(prediction_for(...))` gives.

    Raises InvalidFieldError, as Prediction does, if a duration is negative or not finite, or
    the model version or the time is invalid.
    """
    if len(durations) != len(trips):
        raise ValueError(f"{len(durations)} durations for {len(trips)} trips")
    if not len(trips):
        return []
    # NaN fails both comparisons.
    invalid = (row for row, duration in enumerate(durations) if not 0 <= duration < inf)
    # The trips are valid already. Building one Prediction checks what the rows share (the
    # model version and the time), or raises Prediction's own error for the bad duration.
    row = next(invalid, 0)
    prediction_for(trips.event(row), durations[row], model_version, predicted_at)
    return [
        dumps(
            {
                "trip_id": trip_id,
                "source": source,
                "predicted_duration": float(duration),
                "model_version": model_version,
                "pickup_datetime": pickup_datetime,
                "pickup_longitude": pickup_longitude,
                "pickup_latitude": pickup_latitude,
                "dropoff_longitude": dropoff_longitude,
                "dropoff_latitude": dropoff_latitude,
                "trip_started_at": started_at,
                "predicted_at": predicted_at,
                "schema_version": SCHEMA_VERSION,
                "produced_at": predicted_at,
            }
        )
        for (
            trip_id,
            source,
            duration,
            pickup_datetime,
            pickup_longitude,
            pickup_latitude,
            dropoff_longitude,
            dropoff_latitude,
            started_at,
        ) in zip(
            trips.trip_id,
            trips.source,
            durations,
            trips.pickup_datetime,
            trips.pickup_longitude,
            trips.pickup_latitude,
            trips.dropoff_longitude,
            trips.dropoff_latitude,
            trips.produced_at,
            strict=True,
        )
    ]
