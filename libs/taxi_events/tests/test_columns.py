"""The batch codec against the one-event codec: every field at and across every boundary."""

import json
import math
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from taxi_events import (
    MAX_INTEGER,
    SCHEMA_VERSION,
    EventDecodeError,
    InvalidFieldError,
    TripStarted,
    decode,
    encode,
)
from taxi_events.columns import (
    TripStartColumns,
    decode_trip_starts,
    encode_predictions,
    prediction_for,
)
from taxi_events.testing import trip_started

AT = datetime(2026, 1, 1, 12, tzinfo=UTC)

# Values on, just inside and just beyond each of TripStarted's rules, and of the wrong types.
BOUNDARIES: list[Any] = [
    *(-181, -180.5, -180, -180.0, 180.0, 180.5, 181),
    *(-91, -90.5, -90.0, 90.0, 90.5, 91),
    *(-1, 0, 1, 9, 10, 0.0, 1.0, -0.0, 3.5),
    *(MAX_INTEGER, MAX_INTEGER + 1, 2**64, -(2**63) - 1, 1e300),
    *(True, False, None, [], {}, "", "1", "x" * 64, "x" * 65, "\u00e9\U0001f695"),
    *("\U0001f695" * 64, "\U0001f695" * 65),
    *("train", "test", "validation", "Train"),
    *(SCHEMA_VERSION, "1.7", "0.9", "2.0", "1", "1.0.0"),
    "2016-03-14T17:24:55",
    "2016-03-14 17:24:55.5",
    "2016-03-14T17:24:55+00:00",
    "2016-03-14T17:24:55-05:00",
    "2016-03-14T17:24:55Z",
    "2016-02-30T00:00:00",
    "20160314T172455",
]


def with_field(name: str, value: Any) -> bytes:
    document = json.loads(encode(trip_started()))
    document[name] = value
    return json.dumps(document).encode("utf-8")


def without_field(name: str) -> bytes:
    document = json.loads(encode(trip_started()))
    del document[name]
    return json.dumps(document).encode("utf-8")


def with_raw_member(member: bytes) -> bytes:
    """A valid trip with `member` written after its fields, as bytes no json module writes."""
    return encode(trip_started())[:-1] + b"," + member + b"}"


def outcome(value: bytes | None) -> TripStarted | tuple[Any, ...]:
    try:
        return decode(value, TripStarted)
    except EventDecodeError as error:
        return error.args


def batch_outcomes(values: list[bytes | None]) -> list[TripStarted | tuple[Any, ...]]:
    batch = decode_trip_starts(values)
    found: dict[int, TripStarted | tuple[Any, ...]] = {
        position: error.args for position, error in batch.errors
    }
    for row, position in enumerate(batch.positions):
        found[position] = batch.columns.event(row)
    return [found[position] for position in range(len(values))]


@pytest.mark.parametrize("name", [field.name for field in attrs.fields(TripStarted)])
def test_every_field_at_every_boundary_decodes_as_decode_does(name: str) -> None:
    values: list[bytes | None] = [with_field(name, value) for value in BOUNDARIES]
    values.append(without_field(name))
    assert batch_outcomes(values) == [outcome(value) for value in values]


def test_records_that_are_no_trip_are_rejected_with_decode_s_reason() -> None:
    values = [None, b"", b"{", b"[]", b"\xff", b'{"trip_id": "\\ud800"}', b"{}"]
    assert batch_outcomes(values) == [outcome(value) for value in values]
    assert decode_trip_starts(values).positions == []


@pytest.mark.parametrize(
    "member",
    [
        b'"tip_amount":1.5',  # unknown fields are ignored
        b'"tip_amount":1e400',  # ... but must still be JSON that decode reads
        b'"tip_amount":"\\ud800"',
        b'"tip_amount":' + b"[" * 1100 + b"]" * 1100,
        b'"trip_id":' + b"[" * 1100 + b"]" * 1100,
        b'"passenger_count":2',  # a repeated key: the last one counts
        b'"passenger_count":10',
        b'"\\u0070assenger_count":10',  # an escaped key
        b'"pickup_latitude":-0',
        b'"pickup_latitude":40.0000000000000000001',
        b'"trip_id":"\\ud83d\\ude95"',
    ],
)
def test_unusual_json_decodes_as_decode_does(member: bytes) -> None:
    values: list[bytes | None] = [with_raw_member(member)]
    assert batch_outcomes(values) == [outcome(value) for value in values]


def test_a_batch_keeps_its_order_and_says_where_each_trip_came_from() -> None:
    values = [
        encode(trip_started("a")),
        b"not json",
        with_field("pickup_latitude", 40),  # integral: valid, through decode
        encode(trip_started("c", schema_version="1.3")),  # an older reader's minor: valid
        with_field("passenger_count", 10),
    ]
    batch = decode_trip_starts(values)
    assert batch.positions == [0, 2, 3]
    assert batch.columns.trip_id == ["a", "id0000001", "c"]
    assert batch.columns.pickup_latitude[1] == 40.0
    assert [position for position, _ in batch.errors] == [1, 4]
    assert str(batch.errors[1][1]).startswith("TripStarted.passenger_count: 10 is outside")


def test_columns_are_the_fields_of_trip_started_and_give_the_events_back() -> None:
    assert [column.name for column in fields(TripStartColumns)] == [
        field.name for field in attrs.fields(TripStarted)
    ]
    trips = [trip_started("a"), trip_started("b", passenger_count=4)]
    columns = TripStartColumns.from_events(trips)
    assert len(columns) == 2
    assert [columns.event(row) for row in range(2)] == trips


def test_predictions_encode_as_the_prediction_events_do() -> None:
    trips = [trip_started("a"), trip_started("b", pickup_latitude=40.5)]
    encoded = encode_predictions(TripStartColumns.from_events(trips), [600.0, 0.0], "v1", AT)
    assert encoded == [
        encode(prediction_for(trips[0], 600.0, "v1", AT)),
        encode(prediction_for(trips[1], 0.0, "v1", AT)),
    ]
    assert encode_predictions(TripStartColumns(), [], "v1", AT) == []


@pytest.mark.parametrize("duration", [5e-324, 0.1, 1e15, 9.999999999999998e15, 1e16, 1.5e300])
def test_durations_of_every_size_encode_as_the_prediction_events_do(duration: float) -> None:
    trips = [trip_started("a"), trip_started("b")]
    encoded = encode_predictions(TripStartColumns.from_events(trips), [600.0, duration], "v1", AT)
    assert encoded == [
        encode(prediction_for(trip, d, "v1", AT))
        for trip, d in zip(trips, [600.0, duration], strict=True)
    ]


@pytest.mark.parametrize("duration", [-1.0, math.nan, math.inf])
def test_an_invalid_duration_raises_as_prediction_does(duration: float) -> None:
    columns = TripStartColumns.from_events([trip_started("a"), trip_started("b")])
    with pytest.raises(InvalidFieldError) as caught:
        encode_predictions(columns, [600.0, duration], "v1", AT)
    assert caught.value.field == "predicted_duration"


@pytest.mark.parametrize(
    ("model_version", "at", "field"),
    [("", AT, "model_version"), ("v1", datetime(2026, 1, 1), "predicted_at")],
)
def test_an_invalid_model_version_or_time_raises_as_prediction_does(
    model_version: str, at: datetime, field: str
) -> None:
    columns = TripStartColumns.from_events([trip_started("a")])
    with pytest.raises(InvalidFieldError) as caught:
        encode_predictions(columns, [600.0], model_version, at)
    assert caught.value.field == field


def test_one_duration_per_trip_is_required() -> None:
    columns = TripStartColumns.from_events([trip_started("a")])
    with pytest.raises(ValueError, match="2 durations for 1 trips"):
        encode_predictions(columns, [1.0, 2.0], "v1", AT)
