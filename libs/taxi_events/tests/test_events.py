"""Constructing events: invalid ones cannot exist, valid ones get sensible defaults."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from taxi_events import (
    SCHEMA_VERSION,
    InvalidFieldError,
    InvalidFieldTypeError,
    ModelMetrics,
    TripFinished,
    TripStarted,
    encode,
)

TRIP: dict[str, Any] = {
    "trip_id": "id2875421",
    "vendor_id": 2,
    "pickup_datetime": datetime(2016, 3, 14, 17, 24, 55),
    "passenger_count": 1,
    "pickup_longitude": -73.98,
    "pickup_latitude": 40.76,
    "dropoff_longitude": -73.96,
    "dropoff_latitude": 40.76,
    "store_and_fwd_flag": False,
    "source": "train",
}
CUMULATIVE: dict[str, Any] = {
    "source": "test",
    "scope": "cumulative",
    "window_start": None,
    "window_end": None,
    "count": 0,
    "rmsle": None,
    "mae": None,
    "median_ape": None,
    "within_30": None,
    "unmatched": 0,
    "model_version": "v1",
}
START = datetime(2016, 3, 14, 22, 0, tzinfo=UTC)


def test_defaults_are_the_current_version_and_now_in_utc() -> None:
    before = datetime.now(UTC)
    trip = TripStarted(**TRIP)
    assert trip.schema_version == SCHEMA_VERSION == "1.2"
    assert trip.produced_at.utcoffset() == timedelta(0)
    assert before <= trip.produced_at <= datetime.now(UTC)


def test_events_are_frozen_and_keyword_only() -> None:
    trip = TripStarted(**TRIP)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        trip.passenger_count = 2  # type: ignore[misc]  # writing a frozen field, on purpose
    with pytest.raises(TypeError):
        TripStarted(*TRIP.values())  # type: ignore[call-arg]  # positional, on purpose


def test_a_bad_value_cannot_be_constructed() -> None:
    with pytest.raises(InvalidFieldError) as caught:
        TripStarted(**TRIP | {"pickup_latitude": 123.5})
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "TripStarted.pickup_latitude: 123.5 is outside [-90, 90]"
    assert (caught.value.event, caught.value.field) == ("TripStarted", "pickup_latitude")


def test_evolve_validates_too() -> None:
    with pytest.raises(InvalidFieldError, match="passenger_count: 12 is outside"):
        attrs.evolve(TripStarted(**TRIP), passenger_count=12)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("passenger_count", True),
        ("passenger_count", "3"),
        ("passenger_count", 3.0),
        ("vendor_id", None),
        ("pickup_latitude", "40.7"),
        ("pickup_longitude", False),
        ("store_and_fwd_flag", "N"),
        ("trip_id", 2875421),
        ("pickup_datetime", "2016-03-14 17:24:55"),
        ("produced_at", 1457994295.0),
    ],
)
def test_a_wrong_type_is_a_type_error(field: str, value: Any) -> None:
    with pytest.raises(InvalidFieldTypeError) as caught:
        TripStarted(**TRIP | {field: value})
    assert isinstance(caught.value, TypeError)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("pickup_latitude", float("nan"), "nan is not a finite number"),
        ("pickup_longitude", float("inf"), "inf is not a finite number"),
        ("pickup_latitude", 10**400, "too large for a number"),
        ("trip_id", "a\udcffb", "lone surrogate"),
        ("source", "Train", "expected one of ['train', 'test']"),
        ("pickup_datetime", datetime(2016, 3, 14, tzinfo=UTC), "expected a naive New York"),
        ("produced_at", datetime(2016, 3, 14), "no UTC offset"),
        ("produced_at", datetime(2016, 3, 14, tzinfo=timezone(timedelta(hours=-5))), "not UTC"),
        ("schema_version", "2.0", "newer than the supported 1"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        TripStarted(**TRIP | {field: value})
    assert caught.value.field == field
    assert words in caught.value.problem


def test_any_zero_offset_counts_as_utc() -> None:
    produced_at = datetime(2016, 3, 14, tzinfo=timezone(timedelta(0), "Z"))
    assert TripStarted(**TRIP | {"produced_at": produced_at}).produced_at == produced_at


def test_integers_become_floats_so_equal_events_encode_alike() -> None:
    with_int = TripFinished(
        trip_id="a",
        dropoff_datetime=datetime(2016, 1, 1),
        trip_duration=600,
        is_estimate=True,
        source="test",
        produced_at=START,
    )
    with_float = attrs.evolve(with_int, trip_duration=600.0)
    assert type(with_int.trip_duration) is float
    assert encode(with_int) == encode(with_float)


def test_cumulative_metrics_without_pairs_have_null_values() -> None:
    metrics = ModelMetrics(**CUMULATIVE)
    assert metrics.count == 0
    assert metrics.rmsle is None


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"window_start": START}, "window_start", "must be null for the cumulative scope"),
        ({"scope": "window"}, "window_start", "required for the window scope"),
        ({"scope": "window", "window_start": START}, "window_end", "required for the window"),
        (
            {"scope": "window", "window_start": START, "window_end": START},
            "window_end",
            "is not after window_start",
        ),
        (
            {"scope": "window", "window_start": START.replace(tzinfo=None), "window_end": START},
            "window_start",
            "no UTC offset",
        ),
        ({"rmsle": 0.3}, "rmsle", "must be null when count is 0"),
        ({"count": 4}, "rmsle", "must be a number when count is above 0"),
        (
            {"count": 4, "rmsle": 0.3, "mae": 12.0, "median_ape": 0.1, "within_30": -0.1},
            "within_30",
            "outside [0, 1]",
        ),
        ({"unmatched": -2}, "unmatched", "below the minimum 0"),
        ({"model_version": ""}, "model_version", "must not be empty"),
    ],
)
def test_metrics_rules(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        ModelMetrics(**CUMULATIVE | changes)
    assert caught.value.field == field
    assert words in caught.value.problem


def test_windowed_metrics_with_pairs() -> None:
    metrics = ModelMetrics(
        **CUMULATIVE
        | {
            "scope": "window",
            "window_start": START,
            "window_end": START + timedelta(minutes=1),
            "count": 3,
            "rmsle": 0,
            "mae": 12,
            "median_ape": 0.5,
            "within_30": 1,
        }
    )
    assert (metrics.rmsle, metrics.mae, metrics.within_30) == (0.0, 12.0, 1.0)
