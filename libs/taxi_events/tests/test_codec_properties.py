"""Hypothesis properties of the codec: exact round trips, determinism, total decoding, and a
batch codec that agrees with the one-event codec byte for byte."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taxi_events import (
    MAX_INTEGER,
    MAX_TRIP_ID_LENGTH,
    SCHEMA_VERSION,
    DeploymentAction,
    DeploymentDecision,
    Event,
    EventDecodeError,
    ModelEvent,
    ModelEventKind,
    ModelMetrics,
    Prediction,
    Role,
    Scope,
    Source,
    TripFinished,
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

EVENT_TYPES = [TripStarted, TripFinished, Prediction, ModelMetrics, DeploymentDecision, ModelEvent]

# st.text() leaves out surrogates, which events reject.
trip_ids = st.text(min_size=1, max_size=MAX_TRIP_ID_LENGTH)
names = st.text(min_size=1, max_size=20)
optional_names = st.none() | names
roles = st.sampled_from(get_args(Role))
sources = st.sampled_from(get_args(Source))
local_times = st.datetimes()
utc_times = st.datetimes(timezones=st.just(UTC))
versions = st.builds("{}.{}".format, st.integers(0, 1), st.integers(0, 999_999_999))
latitudes = st.floats(-90, 90)
longitudes = st.floats(-180, 180)
# Integers exercise the int -> float conversion; it must not break the round trip.
durations = st.floats(min_value=0, allow_infinity=False) | st.integers(0, 10**6)
non_negative = st.floats(min_value=0, allow_infinity=False)
counts = st.integers(0, MAX_INTEGER)
finite = st.floats(allow_nan=False, allow_infinity=False)
# Integers exercise the int -> float conversion of evidence too.
evidence = st.dictionaries(names, finite | st.integers(-(10**9), 10**9), max_size=4)

trips_started = st.builds(
    TripStarted,
    trip_id=trip_ids,
    vendor_id=st.integers(1, MAX_INTEGER),
    pickup_datetime=local_times,
    passenger_count=st.integers(0, 9),
    pickup_longitude=longitudes,
    pickup_latitude=latitudes,
    dropoff_longitude=longitudes,
    dropoff_latitude=latitudes,
    store_and_fwd_flag=st.booleans(),
    source=sources,
    schema_version=versions,
    produced_at=utc_times,
)

trips_finished = st.builds(
    TripFinished,
    trip_id=trip_ids,
    dropoff_datetime=local_times,
    trip_duration=durations,
    is_estimate=st.booleans(),
    source=sources,
    schema_version=versions,
    produced_at=utc_times,
)

predictions = st.builds(
    Prediction,
    trip_id=trip_ids,
    source=sources,
    predicted_duration=durations,
    model_version=names,
    pickup_datetime=local_times,
    pickup_longitude=longitudes,
    pickup_latitude=latitudes,
    dropoff_longitude=longitudes,
    dropoff_latitude=latitudes,
    trip_started_at=utc_times,
    predicted_at=utc_times,
    role=roles,
    challenger_version=optional_names,
    schema_version=versions,
    produced_at=utc_times,
)


@st.composite
def model_metrics(draw: st.DrawFn) -> ModelMetrics:
    scope = draw(st.sampled_from(get_args(Scope)))
    start = end = None
    if scope == "window":
        naive_start = draw(st.datetimes(max_value=datetime(9998, 1, 1)))
        length = draw(
            st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=1))
        )
        start, end = naive_start.replace(tzinfo=UTC), (naive_start + length).replace(tzinfo=UTC)
    count = draw(st.just(0) | st.integers(1, MAX_INTEGER))
    metric = st.none() if count == 0 else non_negative
    return ModelMetrics(
        source=draw(sources),
        scope=scope,
        window_start=start,
        window_end=end,
        count=count,
        rmsle=draw(metric),
        mae=draw(metric),
        median_ape=draw(metric),
        within_30=draw(st.none() if count == 0 else st.floats(0, 1)),
        unmatched=draw(counts),
        model_version=draw(names),
        role=draw(roles),
        challenger_version=draw(optional_names),
        schema_version=draw(versions),
        produced_at=draw(utc_times),
    )


deployment_decisions = st.builds(
    DeploymentDecision,
    action=st.sampled_from(get_args(DeploymentAction)),
    version=names,
    champion=optional_names,
    challenger=optional_names,
    actor=names,
    reason=names,
    decided_at=utc_times,
    evidence=evidence,
    schema_version=versions,
    produced_at=utc_times,
)

model_events = st.builds(
    ModelEvent,
    kind=st.sampled_from(get_args(ModelEventKind)),
    model_version=names,
    detail=names,
    source=st.none() | sources,
    detector=optional_names,
    statistic=optional_names,
    value=st.none() | finite,
    threshold=st.none() | finite,
    trips=counts,
    first_trip_id=st.none() | trip_ids,
    last_trip_id=st.none() | trip_ids,
    evidence=evidence,
    occurred_at=utc_times,
    schema_version=versions,
    produced_at=utc_times,
)


events = st.one_of(
    trips_started, trips_finished, predictions, model_metrics(), deployment_decisions, model_events
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
# Values near the edges of the rules, so mutations also hit the interesting rejections.
edge_values = st.sampled_from(
    [
        -181,
        -91,
        -90,
        0,
        9,
        10,
        -1,
        1e308,
        -0.0,
        1.5,
        "",
        "x" * (MAX_TRIP_ID_LENGTH + 1),
        "train",
        "window",
        "cumulative",
        "1.0",
        "2.0",
        "1.x",
        "2016-03-14T17:24:55",
        "2016-03-14T17:24:55.123456+00:00",
        "2016-03-14T17:24:55+01:00",
        "2016-02-30T00:00:00",
        "\ud800",
    ]
)


def assert_decodes_or_rejects(data: bytes, event_type: type[Event]) -> None:
    """The codec's totality contract: a valid event, or EventDecodeError naming a real field."""
    outcome = decode_or_error(data, event_type)
    if isinstance(outcome, EventDecodeError):
        assert outcome.field is None or outcome.field in attrs.fields_dict(event_type)
        assert str(outcome)
    else:
        assert type(outcome) is event_type
        # Whatever was accepted is a valid event in its own right.
        assert decode(encode(outcome), event_type) == outcome


def decode_or_error(data: bytes, event_type: type[Event]) -> Event | EventDecodeError:
    # Any other exception escapes and fails the test.
    try:
        return decode(data, event_type)
    except EventDecodeError as error:
        return error


@given(events)
def test_every_valid_event_round_trips_exactly(event: Event) -> None:
    assert decode(encode(event), type(event)) == event


@given(events)
def test_encoding_is_deterministic_sorted_and_compact(event: Event) -> None:
    data = encode(event)
    assert encode(attrs.evolve(event)) == data
    assert data == orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)
    # The standard library reads the very same document.
    assert json.loads(data) == orjson.loads(data)


@given(events)
def test_encoding_writes_every_field(event: Event) -> None:
    assert set(json.loads(encode(event))) == set(attrs.fields_dict(type(event)))


@given(st.binary(), st.sampled_from(EVENT_TYPES))
def test_arbitrary_bytes_decode_or_raise_event_decode_error(
    data: bytes, event_type: type[Event]
) -> None:
    assert_decodes_or_rejects(data, event_type)


@given(json_values, st.sampled_from(EVENT_TYPES))
def test_arbitrary_json_decodes_or_raises_event_decode_error(
    value: Any, event_type: type[Event]
) -> None:
    assert_decodes_or_rejects(json.dumps(value).encode("utf-8"), event_type)


@st.composite
def mutated_documents(
    draw: st.DrawFn, originals: st.SearchStrategy[Event] = events
) -> tuple[type[Event], dict[str, Any]]:
    event = draw(originals)
    document = json.loads(encode(event))
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(["drop", "replace", "add"]))
        if mutation == "add" or not document:
            document[draw(st.text(max_size=10))] = draw(json_values)
            continue
        key = draw(st.sampled_from(sorted(document)))
        if mutation == "drop":
            del document[key]
        else:
            document[key] = draw(json_values | edge_values)
    return type(event), document


@settings(max_examples=300)
@given(mutated_documents())
def test_mutated_json_decodes_or_raises_event_decode_error(
    mutated: tuple[type[Event], dict[str, Any]],
) -> None:
    event_type, document = mutated
    assert_decodes_or_rejects(json.dumps(document).encode("utf-8"), event_type)


@given(events, st.data())
def test_truncated_encoding_is_rejected(event: Event, data: st.DataObject) -> None:
    encoded = encode(event)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(EventDecodeError):
        decode(encoded[:cut], type(event))


@given(events, st.data())
def test_corrupted_bytes_decode_or_raise_event_decode_error(
    event: Event, data: st.DataObject
) -> None:
    encoded = bytearray(encode(event))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    assert_decodes_or_rejects(bytes(encoded), type(event))


@given(events, st.dictionaries(st.text(max_size=10), json_values, max_size=3))
def test_unknown_fields_are_ignored(event: Event, extra: dict[str, Any]) -> None:
    document = json.loads(encode(event))
    document |= {key: value for key, value in extra.items() if key not in document}
    assert decode(json.dumps(document).encode("utf-8"), type(event)) == event


def _dumped(mutated: tuple[type[Event], dict[str, Any]]) -> bytes:
    return json.dumps(mutated[1]).encode("utf-8")


# What a new_trips partition may hold: mostly valid trips, some of them written differently
# (an older minor version, an integral coordinate), broken trips, other JSON, other bytes.
current_trips = st.builds(attrs.evolve, trips_started, schema_version=st.just(SCHEMA_VERSION))
trip_start_values = st.one_of(
    current_trips.map(encode),
    trips_started.map(encode),
    mutated_documents(current_trips).map(_dumped),
    json_values.map(lambda value: json.dumps(value).encode("utf-8")),
    st.binary(max_size=40),
    st.none(),
)


@settings(max_examples=300)
@given(st.lists(trip_start_values, max_size=8))
def test_a_batch_decodes_exactly_as_decode_does(values: list[bytes | None]) -> None:
    batch = decode_trip_starts(values)
    rejected = dict(batch.errors)
    assert sorted([*batch.positions, *rejected]) == list(range(len(values)))
    assert batch.positions == sorted(batch.positions)
    assert len(batch.columns) == len(batch.positions)
    for row, position in enumerate(batch.positions):
        assert batch.columns.event(row) == decode(values[position], TripStarted)
    for position, error in rejected.items():
        with pytest.raises(EventDecodeError) as caught:
            decode(values[position], TripStarted)
        assert caught.value.args == error.args


@given(
    st.lists(trips_started, max_size=5),
    st.lists(st.floats(min_value=0, allow_infinity=False), min_size=5, max_size=5),
    names,
    utc_times,
    st.fixed_dictionaries({"role": roles, "challenger_version": optional_names}),
)
def test_a_batch_encodes_exactly_as_encode_does(
    trips: list[TripStarted],
    durations: list[float],
    model_version: str,
    at: datetime,
    parts: dict[str, Any],
) -> None:
    durations = durations[: len(trips)]
    encoded = encode_predictions(
        TripStartColumns.from_events(trips), durations, model_version, at, **parts
    )
    expected = [
        encode(prediction_for(trip, duration, model_version, at, **parts))
        for trip, duration in zip(trips, durations, strict=True)
    ]
    assert encoded == expected
