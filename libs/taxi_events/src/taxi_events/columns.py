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
from typing import Annotated

import msgspec
from msgspec import Meta

from taxi_events.codec import decode, encode
from taxi_events.errors import EventDecodeError
from taxi_events.events import (
    MAX_INTEGER,
    MAX_TRIP_ID_LENGTH,
    SCHEMA_VERSION,
    Prediction,
    Role,
    Source,
    TripStarted,
)

_UTC_OFFSET = timedelta(0)
_Longitude = Annotated[float, Meta(ge=-180, le=180)]
_Latitude = Annotated[float, Meta(ge=-90, le=90)]


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


class _UsualTripStart(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A TripStarted as the producers write it: exactly its fields, each plainly valid.

    Every constraint here is one of TripStarted's validators, or stricter. Unknown fields are
    forbidden rather than skipped, because msgspec skips a value without the checks orjson makes
    (1e400, say): such a record goes to `decode`. The times stay text, for `fromisoformat`.
    """

    trip_id: Annotated[str, Meta(min_length=1, max_length=MAX_TRIP_ID_LENGTH)]
    vendor_id: Annotated[int, Meta(ge=1, le=MAX_INTEGER)]
    pickup_datetime: str
    passenger_count: Annotated[int, Meta(ge=0, le=9)]
    pickup_longitude: _Longitude
    pickup_latitude: _Latitude
    dropoff_longitude: _Longitude
    dropoff_latitude: _Latitude
    store_and_fwd_flag: bool
    source: Source
    schema_version: str
    produced_at: str


_decode_usual_trip_start = msgspec.json.Decoder(_UsualTripStart).decode


def _append_if_plainly_valid(columns: TripStartColumns, value: bytes | bytearray | None) -> bool:
    """Append the trip if it is valid in the usual way, and say whether it was.

    False means "ask `decode`": the record may still be valid (an older minor version, an
    unknown field) or not. msgspec reads JSON numbers and strings exactly as orjson does, and
    rejects lone surrogates and bad UTF-8 as orjson does.
    """
    if not isinstance(value, bytes | bytearray):
        return False
    try:
        trip = _decode_usual_trip_start(value)
        pickup_datetime = datetime.fromisoformat(trip.pickup_datetime)
        produced_at = datetime.fromisoformat(trip.produced_at)
    except (msgspec.MsgspecError, ValueError):
        return False
    if not (
        trip.schema_version == SCHEMA_VERSION
        and pickup_datetime.tzinfo is None
        and produced_at.utcoffset() == _UTC_OFFSET
    ):
        return False
    columns.trip_id.append(trip.trip_id)
    columns.vendor_id.append(trip.vendor_id)
    columns.pickup_datetime.append(pickup_datetime)
    columns.passenger_count.append(trip.passenger_count)
    columns.pickup_longitude.append(trip.pickup_longitude)
    columns.pickup_latitude.append(trip.pickup_latitude)
    columns.dropoff_longitude.append(trip.dropoff_longitude)
    columns.dropoff_latitude.append(trip.dropoff_latitude)
    columns.store_and_fwd_flag.append(trip.store_and_fwd_flag)
    columns.source.append(trip.source)
    columns.schema_version.append(trip.schema_version)
    columns.produced_at.append(produced_at)
    return True


def prediction_for(
    trip: TripStarted,
    duration: float,
    model_version: str,
    predicted_at: datetime,
    *,
    role: Role = "champion",
    challenger_version: str | None = None,
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
        role=role,
        challenger_version=challenger_version,
        produced_at=predicted_at,
    )


class _PredictionFields(msgspec.Struct, gc=False):
    """A Prediction's fields, in the sorted order `encode` writes them in.

    msgspec writes naive datetimes and strings as orjson does, and floats too below 1e16.
    It writes UTC as "Z" where `encode` writes "+00:00": trip_started_at, last, is fixed up in
    the bytes, and the times the rows share are written once, as text.
    """

    challenger_version: str | None
    dropoff_latitude: float
    dropoff_longitude: float
    model_version: str
    pickup_datetime: datetime
    pickup_latitude: float
    pickup_longitude: float
    predicted_at: str
    predicted_duration: float
    produced_at: str
    role: str
    schema_version: str
    source: str
    trip_id: str
    trip_started_at: datetime


_encode_prediction_fields = msgspec.json.Encoder().encode
# From here up msgspec writes exponents as "1e16", where orjson writes "1e+16".
_FIRST_EXPONENT_FLOAT = 1e16


def encode_predictions(
    trips: TripStartColumns,
    durations: Sequence[float],
    model_version: str,
    predicted_at: datetime,
    *,
    role: Role = "champion",
    challenger_version: str | None = None,
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

    def event(row: int) -> Prediction:
        return prediction_for(
            trips.event(row),
            durations[row],
            model_version,
            predicted_at,
            role=role,
            challenger_version=challenger_version,
        )

    event(row)
    if max(durations) >= _FIRST_EXPONENT_FLOAT:  # a model gone wrong: no need to be quick
        return [encode(event(row)) for row in range(len(trips))]
    at = predicted_at.isoformat()
    return [
        _encode_prediction_fields(
            _PredictionFields(
                challenger_version,
                dropoff_latitude,
                dropoff_longitude,
                model_version,
                pickup_datetime,
                pickup_latitude,
                pickup_longitude,
                at,
                float(duration),
                at,
                role,
                SCHEMA_VERSION,
                source,
                trip_id,
                started_at,
            )
        )[:-3]
        + b'+00:00"}'
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
