"""Example-based tests of decoding: one per rejection rule, each checking the field is named."""

import json
import pickle
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from taxi_events import (
    SCHEMA_VERSION,
    DeadLetter,
    DeploymentDecision,
    Event,
    EventDecodeError,
    ModelEvent,
    ModelMetrics,
    Prediction,
    TripFinished,
    TripStarted,
    decode,
    encode,
)

PRODUCED_AT = datetime(2016, 3, 14, 22, 24, 56, 123456, tzinfo=UTC)

TRIP_STARTED = TripStarted(
    trip_id="id2875421",
    vendor_id=2,
    pickup_datetime=datetime(2016, 3, 14, 17, 24, 55),
    passenger_count=1,
    pickup_longitude=-73.982154846191406,
    pickup_latitude=40.767936706542969,
    dropoff_longitude=-73.964630126953125,
    dropoff_latitude=40.765602111816406,
    store_and_fwd_flag=False,
    source="train",
    produced_at=PRODUCED_AT,
)
TRIP_FINISHED = TripFinished(
    trip_id="id2875421",
    dropoff_datetime=datetime(2016, 3, 14, 17, 32, 30),
    trip_duration=455.0,
    is_estimate=False,
    source="train",
    produced_at=PRODUCED_AT,
)
PREDICTION = Prediction(
    trip_id="id2875421",
    source="train",
    predicted_duration=512.5,
    model_version="2016-03-01-abc123",
    pickup_datetime=datetime(2016, 3, 14, 17, 24, 55),
    pickup_longitude=-73.982154846191406,
    pickup_latitude=40.767936706542969,
    dropoff_longitude=-73.964630126953125,
    dropoff_latitude=40.765602111816406,
    trip_started_at=PRODUCED_AT,
    predicted_at=datetime(2016, 3, 14, 22, 24, 56, 200000, tzinfo=UTC),
    produced_at=PRODUCED_AT,
)
METRICS = ModelMetrics(
    source="test",
    scope="window",
    window_start=datetime(2016, 3, 14, 22, 0, tzinfo=UTC),
    window_end=datetime(2016, 3, 14, 22, 1, tzinfo=UTC),
    count=120,
    rmsle=0.41,
    mae=230.5,
    median_ape=0.22,
    within_30=0.61,
    unmatched=3,
    model_version="2016-03-01-abc123",
    produced_at=PRODUCED_AT,
)
DECISION = DeploymentDecision(
    action="promote",
    version="fb295ce8d39b",
    champion="fb295ce8d39b",
    challenger=None,
    actor="ana@laptop",
    reason="beat the champion by 0.01 RMSLE on 5,000 trips",
    decided_at=PRODUCED_AT,
    evidence={"champion_rmsle": 0.52, "challenger_rmsle": 0.41, "trips": 5000},
    produced_at=PRODUCED_AT,
)
DRIFT = ModelEvent(
    kind="concept-drift",
    model_version="fb295ce8d39b",
    detail="its log errors moved up by 0.4 on the last 640 train trips",
    source="train",
    detector="page-hinkley",
    statistic="log_error",
    value=61.5,
    threshold=50,
    trips=640,
    first_trip_id="id2875421",
    last_trip_id="id1377394",
    evidence={"mean_before": 0.01, "mean_after": 0.41},
    occurred_at=PRODUCED_AT,
    produced_at=PRODUCED_AT,
)
E = TypeVar("E", bound=Event)
EXAMPLES: dict[type[Any], Event] = {
    TripStarted: TRIP_STARTED,
    TripFinished: TRIP_FINISHED,
    Prediction: PREDICTION,
    ModelMetrics: METRICS,
    DeploymentDecision: DECISION,
    ModelEvent: DRIFT,
}


def document(event_type: type[E], **changes: Any) -> dict[str, Any]:
    return json.loads(encode(EXAMPLES[event_type])) | changes


def decode_with(event_type: type[E], **changes: Any) -> E:
    return decode(json.dumps(document(event_type, **changes)).encode("utf-8"), event_type)


def decode_with_raw(event_type: type[E], field: str, raw_json: str) -> E:
    """Decode with one field set to literal JSON text (for numbers json.dumps cannot write)."""
    text = json.dumps(document(event_type, **{field: "__RAW__"}))
    return decode(text.replace('"__RAW__"', raw_json).encode("utf-8"), event_type)


def test_encoding_matches_the_documented_layout() -> None:
    assert encode(TRIP_FINISHED) == (
        b'{"dropoff_datetime":"2016-03-14T17:32:30","is_estimate":false,'
        b'"produced_at":"2016-03-14T22:24:56.123456+00:00","schema_version":"1.2",'
        b'"source":"train","trip_duration":455.0,"trip_id":"id2875421"}'
    )


@pytest.mark.parametrize("event", EXAMPLES.values(), ids=lambda event: type(event).__name__)
def test_examples_round_trip(event: Event) -> None:
    assert decode(encode(event), type(event)) == event


REJECTIONS = [
    # (event type, field, JSON value, words the problem must contain)
    (TripStarted, "pickup_latitude", 123.5, "123.5 is outside [-90, 90]"),
    (TripStarted, "pickup_latitude", -90.5, "outside [-90, 90]"),
    (TripStarted, "dropoff_latitude", 91, "91.0 is outside [-90, 90]"),
    (TripStarted, "pickup_longitude", 180.5, "outside [-180, 180]"),
    (TripStarted, "dropoff_longitude", -200, "outside [-180, 180]"),
    (Prediction, "pickup_latitude", 100.0, "outside [-90, 90]"),
    (Prediction, "dropoff_longitude", 181.0, "outside [-180, 180]"),
    (TripStarted, "pickup_latitude", "40.7", "expected a number"),
    (TripStarted, "pickup_longitude", None, "expected a number"),
    (TripStarted, "passenger_count", 10, "outside [0, 9]"),
    (TripStarted, "passenger_count", -1, "outside [0, 9]"),
    (TripStarted, "passenger_count", "3", "expected an integer, got a string ('3')"),
    (TripStarted, "passenger_count", 3.5, "expected an integer"),
    (TripStarted, "passenger_count", 3.0, "expected an integer"),
    (TripStarted, "passenger_count", True, "expected an integer, got true"),
    (TripStarted, "vendor_id", 0, "below the minimum 1"),
    (TripStarted, "trip_id", "", "must not be empty"),
    (TripStarted, "trip_id", "x" * 65, "65 characters, more than the maximum 64"),
    (TripStarted, "trip_id", 2875421, "expected a string"),
    (TripStarted, "store_and_fwd_flag", "N", "expected true or false"),
    (TripStarted, "store_and_fwd_flag", 0, "expected true or false"),
    (TripStarted, "source", "validation", "expected one of ['train', 'test']"),
    (TripStarted, "pickup_datetime", "yesterday", "'yesterday' is not an ISO 8601 time"),
    (TripStarted, "pickup_datetime", "2016-02-30 10:00:00", "is not an ISO 8601 time"),
    (TripStarted, "pickup_datetime", 1457976295, "expected an ISO 8601 time string"),
    (TripStarted, "pickup_datetime", "2016-03-14T17:24:55-05:00", "expected a naive New York"),
    (TripStarted, "produced_at", "2016-03-14T22:24:56", "no UTC offset"),
    (TripStarted, "produced_at", "2016-03-14T23:24:56+01:00", "is not UTC"),
    (TripFinished, "dropoff_datetime", "2016-03-14T17:32:30Z", "expected a naive New York"),
    (TripFinished, "trip_duration", -1, "below the minimum 0"),
    (TripFinished, "trip_duration", "455", "expected a number"),
    (TripFinished, "is_estimate", "false", "expected true or false"),
    (Prediction, "predicted_duration", -0.5, "below the minimum 0"),
    (Prediction, "model_version", "", "must not be empty"),
    (Prediction, "trip_started_at", "2016-03-14T22:24:56", "no UTC offset"),
    (Prediction, "predicted_at", None, "expected an ISO 8601 time string, got null"),
    (ModelMetrics, "scope", "hourly", "expected one of ['window', 'cumulative']"),
    (ModelMetrics, "window_start", None, "required for the window scope"),
    (ModelMetrics, "window_end", "2016-03-14T21:59:00+00:00", "not after window_start"),
    (ModelMetrics, "window_end", "2016-03-14T22:00:00+00:00", "not after window_start"),
    (ModelMetrics, "count", -1, "below the minimum 0"),
    (ModelMetrics, "unmatched", 2.0, "expected an integer"),
    (ModelMetrics, "rmsle", None, "must be a number when count is above 0"),
    (ModelMetrics, "mae", -3.0, "below the minimum 0"),
    (ModelMetrics, "within_30", 1.5, "outside [0, 1]"),
    (ModelMetrics, "median_ape", "0.2", "expected a number"),
    (DeploymentDecision, "evidence", [1.0], "expected an object of named numbers"),
    (DeploymentDecision, "evidence", {"trips": "5000"}, "'trips' is a string"),
    (DeploymentDecision, "evidence", {"trips": True}, "'trips' is true, not a number"),
    (DeploymentDecision, "evidence", {"": 1.0}, "names are text"),
    (ModelEvent, "kind", "drift", "expected one of ['concept-drift', 'data-drift'"),
    (ModelEvent, "source", "both", "expected one of ['train', 'test']"),
    (ModelEvent, "value", "61.5", "expected a number"),
    (ModelEvent, "trips", -1, "below the minimum 0"),
    (ModelEvent, "detail", "", "must not be empty"),
    (ModelEvent, "evidence", {"mean_after": None}, "'mean_after' is null, not a number"),
]


@pytest.mark.parametrize(("event_type", "field", "value", "words"), REJECTIONS)
def test_rejection_names_the_field(
    event_type: type[Event], field: str, value: Any, words: str
) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode_with(event_type, **{field: value})
    assert caught.value.field == field
    assert words in caught.value.problem
    assert str(caught.value).startswith(f"{event_type.__name__}.{field}: ")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("1e999", "number is infinity"),
        ("-1e999", "number is infinity"),
        # Integers beyond 64 bits are read as floats; this one is too large even for that.
        ("1" + "0" * 400, "number is infinity"),
        ("NaN", "unexpected character"),
        ("Infinity", "unexpected character"),
        ("-Infinity", "no digit after sign"),
    ],
)
@pytest.mark.parametrize(
    ("event_type", "field"),
    [(TripStarted, "pickup_latitude"), (TripFinished, "trip_duration"), (ModelMetrics, "mae")],
)
def test_non_finite_numbers_are_not_json(
    event_type: type[Event], field: str, raw: str, words: str
) -> None:
    with pytest.raises(EventDecodeError, match=f"^not valid JSON: {words}"):
        decode_with_raw(event_type, field, raw)


def test_integers_beyond_64_bits_are_rejected() -> None:
    with pytest.raises(EventDecodeError, match="vendor_id: expected an integer, got a number"):
        decode_with_raw(TripStarted, "vendor_id", str(2**64))
    with pytest.raises(EventDecodeError, match=r"count: .* the largest 64-bit integer"):
        decode_with_raw(ModelMetrics, "count", str(2**63))


def test_integral_json_numbers_are_accepted_for_float_fields() -> None:
    decoded = decode_with(TripFinished, trip_duration=455)
    assert decoded == TRIP_FINISHED
    assert isinstance(decoded, TripFinished)
    assert type(decoded.trip_duration) is float


def test_the_exact_maximum_trip_id_length_is_accepted() -> None:
    assert decode_with(TripStarted, trip_id="x" * 64).trip_id == "x" * 64


@pytest.mark.parametrize("event_type", EXAMPLES)
def test_a_missing_field_is_named(event_type: type[Event]) -> None:
    for field in document(event_type):
        data = document(event_type)
        del data[field]
        with pytest.raises(EventDecodeError) as caught:
            decode(json.dumps(data).encode("utf-8"), event_type)
        assert caught.value.field == field
        assert str(caught.value) == f"{event_type.__name__}.{field}: required field is missing"


@pytest.mark.parametrize("event_type", [Prediction, ModelMetrics])
def test_a_record_older_than_a_field_decodes_with_its_default(event_type: type[Event]) -> None:
    for written_in in ("1.0", "0.9"):
        data = document(event_type, schema_version=written_in)
        del data["role"], data["challenger_version"]
        event = decode(json.dumps(data).encode("utf-8"), event_type)
        assert isinstance(event, Prediction | ModelMetrics)
        assert (event.role, event.challenger_version) == ("champion", None)
        # Fields it had are still required.
        del data["model_version"]
        with pytest.raises(EventDecodeError, match="model_version: required field is missing"):
            decode(json.dumps(data).encode("utf-8"), event_type)


def test_a_decision_written_before_evidence_has_none() -> None:
    data = document(DeploymentDecision, schema_version="1.1")
    del data["evidence"]
    assert decode(json.dumps(data).encode("utf-8"), DeploymentDecision).evidence == {}


def test_evidence_counts_decode_as_numbers_and_events_stay_hashable() -> None:
    decoded = decode_with(DeploymentDecision)
    assert decoded.evidence == {"champion_rmsle": 0.52, "challenger_rmsle": 0.41, "trips": 5000}
    assert type(decoded.evidence["trips"]) is float
    assert hash(decoded) == hash(DECISION)


def test_a_record_as_new_as_a_field_must_have_it() -> None:
    data = document(Prediction, schema_version="1.1")
    del data["role"]
    with pytest.raises(EventDecodeError, match=r"Prediction\.role: required field is missing"):
        decode(json.dumps(data).encode("utf-8"), Prediction)


def test_a_shadow_prediction_names_its_role() -> None:
    shadow = decode_with(Prediction, role="challenger")
    assert shadow.role == "challenger"
    with pytest.raises(EventDecodeError, match="role"):
        decode_with(Prediction, role="understudy")


@pytest.mark.parametrize("version", ["0.1", "1.0", "1.7", "1.999999999"])
def test_older_and_newer_minor_versions_are_accepted(version: str) -> None:
    assert decode_with(TripStarted, schema_version=version).schema_version == version


@pytest.mark.parametrize(
    ("version", "words"),
    [
        ("2.0", "'2.0' has major version 2, newer than the supported 1"),
        ("10.3", "newer than the supported 1"),
        ("1", "not a 'major.minor' version"),
        ("1.0.0", "not a 'major.minor' version"),
        ("one.zero", "not a 'major.minor' version"),
        ("", "not a 'major.minor' version"),
        ("1" * 20 + ".0", "not a 'major.minor' version"),
        (1.0, "expected a string like '1.2', got a number (1.0)"),
    ],
)
def test_unreadable_schema_versions_are_rejected(version: Any, words: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode_with(Prediction, schema_version=version)
    assert caught.value.field == "schema_version"
    assert words in caught.value.problem


def test_a_newer_major_version_is_reported_before_other_problems() -> None:
    data = json.dumps({"schema_version": "2.0", "renamed": "everything"}).encode("utf-8")
    with pytest.raises(EventDecodeError, match=r"^TripStarted\.schema_version: "):
        decode(data, TripStarted)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not valid JSON: Input is a zero-length, empty document"),
        (b"{", "not valid JSON: unexpected end of data"),
        (b'{"trip_id": "a"} trailing', "not valid JSON: unexpected content after document"),
        (b'{"trip_id": "\\ud800"}', "not valid JSON: no low surrogate in string"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'"\xc3"', "not valid UTF-8"),
        ("\ufeff{}".encode(), "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),
        (b"[]", "expected a JSON object, got an array"),
        (b'"TripStarted"', "expected a JSON object, got a string"),
        (b"null", "expected a JSON object, got null"),
        (None, "expected the record's bytes, got null"),
    ],
)
def test_undecodable_records_have_no_field(data: bytes | None, words: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(data, TripStarted)
    assert caught.value.field is None
    assert words in str(caught.value)
    assert str(caught.value) == caught.value.problem


def test_deeply_nested_values_are_rejected_without_recursing() -> None:
    deep = "[" * 500 + "]" * 500
    with pytest.raises(EventDecodeError, match="trip_id: expected a string, got an array"):
        decode_with_raw(TripStarted, "trip_id", deep)
    # The same value in an unknown field is simply ignored.
    text = json.dumps(document(TripStarted)).replace("{", '{"extra": ' + deep + ", ", 1)
    assert decode(text.encode("utf-8"), TripStarted) == TRIP_STARTED


def test_unknown_fields_are_ignored() -> None:
    assert decode_with(TripStarted, fare={"amount": 12.5}, tip=None) == TRIP_STARTED


def test_bytearray_input_is_accepted() -> None:
    assert decode(bytearray(encode(PREDICTION)), Prediction) == PREDICTION


def test_only_the_event_classes_can_be_decoded_or_encoded() -> None:
    dead_letter = DeadLetter(
        source_topic="new_trips", partition=0, offset=1, service="predictor", reason="bad"
    )
    with pytest.raises(TypeError, match="not an event type"):
        decode(b"{}", DeadLetter)  # type: ignore[type-var]  # the wrong type, on purpose
    with pytest.raises(TypeError, match="not an event"):
        encode(dead_letter)  # type: ignore[arg-type]  # not an event, on purpose


def test_decode_errors_keep_their_parts_and_survive_pickling() -> None:
    error = EventDecodeError("pickup_latitude", "123.5 is outside [-90, 90]", "TripStarted")
    assert str(error) == "TripStarted.pickup_latitude: 123.5 is outside [-90, 90]"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.problem, copy.event, str(copy)) == (
        error.field,
        error.problem,
        error.event,
        str(error),
    )
    assert str(EventDecodeError(None, "not valid JSON: x")) == "not valid JSON: x"
    assert str(EventDecodeError("trip_id", "is bad")) == "trip_id: is bad"


def test_a_default_built_event_carries_the_current_schema_version() -> None:
    assert json.loads(encode(TRIP_STARTED))["schema_version"] == SCHEMA_VERSION
