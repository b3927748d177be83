"""The predictor's transform, on hand-made Kafka messages: no broker needed."""

import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import attrs
import numpy as np
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import POISON_PREFIX, Prediction, TripStarted, decode, encode
from taxi_events import testing as events
from taxi_kafka import each_record
from taxi_model import TripDurationModel, events_to_frame, load_model
from taxi_services.deployment import Deployment
from taxi_services.predictor import DeliberateAborts, PredictTransform

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def trip(n: int) -> TripStarted:
    return events.trip_started(
        f"id{n:07d}",
        vendor_id=1 + n % 2,
        pickup_datetime=datetime(2016, 3, 1 + n % 28, n % 24, 15),
        passenger_count=1 + n % 4,
        pickup_longitude=-73.98 + n * 1e-3,
        dropoff_latitude=40.78 - n * 1e-3,
        source="train" if n % 3 else "test",
        produced_at=datetime(2026, 11, 27, 11, 59, 59, tzinfo=UTC),
    )


def message(value: bytes | None, offset: int) -> Message:
    return Message(topic="new_trips", partition=2, offset=offset, key=b"k", value=value)


@attrs.define
class CountingModel:
    """A real model that counts its predict calls."""

    model: TripDurationModel
    calls: list[int] = attrs.Factory(list)

    @property
    def version(self) -> str:
        return self.model.version

    def predict(self, trips):
        self.calls.append(len(trips))
        return self.model.predict(trips)


@pytest.fixture
def model(trained_model_path):
    return CountingModel(load_model(trained_model_path))


def serving(champion, challenger=None) -> Callable[[], Deployment]:
    deployment = Deployment(champion, challenger)
    return lambda: deployment


class Halved(CountingModel):
    """A challenger that predicts half the champion's durations, to tell them apart."""

    @property
    def version(self) -> str:
        return "halved"

    def predict(self, trips):
        return super().predict(trips) / 2


class Broken(CountingModel):
    @property
    def version(self) -> str:
        return "broken"

    def predict(self, trips):
        raise KeyError("weather")


def test_a_batch_is_predicted_in_one_call(model):
    trips = [trip(n) for n in range(50)]
    result = PredictTransform(serving(model), clock=lambda: NOW)(
        [message(encode(t), i) for i, t in enumerate(trips)]
    )
    assert model.calls == [50]
    assert not result.failures
    predictions = [decode(r.value, Prediction) for r in each_record(result.records)]
    assert [r.key for r in each_record(result.records)] == [t.trip_id.encode() for t in trips]
    assert {r.topic for r in each_record(result.records)} == {"ml_predictions"}
    expected = model.model.predict(events_to_frame(trips))
    assert np.allclose([p.predicted_duration for p in predictions], expected)
    first = predictions[0]
    assert first.model_version == model.version
    assert first.trip_started_at == trips[0].produced_at
    assert first.predicted_at == NOW
    assert (first.source, first.pickup_latitude) == (trips[0].source, trips[0].pickup_latitude)
    assert result.event_times == {"new_trips": [t.produced_at for t in trips]}


def test_bad_records_become_failures_and_the_rest_goes_on(model):
    newer = encode(trip(2)).replace(b'"schema_version":"1.2"', b'"schema_version":"2.0"')
    batch = [
        message(encode(trip(1)), 0),
        message(b"\xff\x00 not json", 1),
        message(None, 2),
        message(newer, 3),
        message(encode(trip(4)), 4),
    ]
    result = PredictTransform(serving(model), clock=lambda: NOW)(batch)
    assert [decode(r.value, Prediction).trip_id for r in each_record(result.records)] == [
        "id0000001",
        "id0000004",
    ]
    assert [f.message.offset() for f in result.failures] == [1, 2, 3]
    assert {f.kind for f in result.failures} == {"decode"}
    assert "schema_version" in result.failures[2].reason


def test_an_empty_batch_gives_nothing(model):
    assert not PredictTransform(serving(model))([]).records


def test_a_challenger_predicts_the_same_batch_into_the_shadow_topic(model, trained_model_path):
    challenger = Halved(load_model(trained_model_path))
    trips = [trip(n) for n in range(30)]
    result = PredictTransform(serving(model, challenger), clock=lambda: NOW)(
        [message(encode(t), i) for i, t in enumerate(trips)]
    )
    champion = [
        decode(r.value, Prediction)
        for r in each_record(result.records)
        if r.topic == "ml_predictions"
    ]
    shadow = [
        decode(r.value, Prediction)
        for r in each_record(result.records)
        if r.topic == "shadow_predictions"
    ]
    # One result is one transaction: both models' predictions of every trip commit together.
    assert (
        [p.trip_id for p in champion] == [p.trip_id for p in shadow] == [t.trip_id for t in trips]
    )
    assert [r.key for r in each_record(result.records) if r.topic == "shadow_predictions"] == [
        t.trip_id.encode() for t in trips
    ]
    assert {(p.role, p.model_version, p.challenger_version) for p in champion} == {
        ("champion", model.version, "halved")
    }
    assert {(p.role, p.model_version, p.challenger_version) for p in shadow} == {
        ("challenger", "halved", None)
    }
    assert np.allclose(
        [p.predicted_duration for p in shadow], [p.predicted_duration / 2 for p in champion]
    )
    assert (model.calls, challenger.calls) == ([30], [30])


def test_each_batch_takes_the_deployment_current_at_its_start(model, trained_model_path):
    deployments = [Deployment(model), Deployment(Halved(load_model(trained_model_path)))]
    transform = PredictTransform(lambda: deployments[0], clock=lambda: NOW)
    first = transform([message(encode(trip(1)), 0)])
    deployments.pop(0)
    second = transform([message(encode(trip(2)), 1)])
    versions = [
        decode(r.value, Prediction).model_version
        for r in each_record([*first.records, *second.records])
    ]
    assert versions == [model.version, "halved"]


def test_a_challenger_that_fails_on_the_stream_is_dropped_and_the_champion_goes_on(
    model, trained_model_path
):
    refused: list[tuple[str, str]] = []
    transform = PredictTransform(
        serving(model, Broken(load_model(trained_model_path))),
        clock=lambda: NOW,
        on_rejected=lambda version, reason: refused.append((version, reason)),
    )
    for offset in range(2):
        result = transform([message(encode(trip(offset)), offset)])
        [record] = each_record(result.records)
        assert record.topic == "ml_predictions"
        assert decode(record.value, Prediction).challenger_version is None
    assert refused == [("broken", "missing-feature")]  # reported once, not per batch


def crc32_markers(trip_ids: Iterable[str], every: int) -> set[str]:
    return {t for t in trip_ids if zlib.crc32(t.encode()) % every == 0}


@given(
    st.integers(1, 5),
    st.lists(st.lists(st.sampled_from([f"id{n:07d}" for n in range(40)]), max_size=15)),
)
def test_each_marker_is_handed_out_once_per_process_and_no_other_trip(every, batches):
    aborts = DeliberateAborts(every)
    taken = []
    for batch in batches:
        fresh = aborts.take(batch)
        assert set(fresh) <= set(batch)
        taken += fresh
    seen = {t for batch in batches for t in batch}
    assert Counter(taken) == Counter(crc32_markers(seen, every))


def test_a_batch_with_a_marker_is_aborted_with_poison_then_predicted_plainly(model):
    trips = [trip(n) for n in range(30)]
    markers = crc32_markers((t.trip_id for t in trips), 4)
    assert 0 < len(markers) < len(trips)  # the batch holds markers and other trips
    batch = [message(encode(t), i) for i, t in enumerate(trips)]
    transform = PredictTransform(serving(model), clock=lambda: NOW, aborts=DeliberateAborts(4))

    aborted = transform(batch)
    assert aborted.abort is not None
    records = list(each_record(aborted.records))
    real = {r.key: r.value for r in records if not r.key.startswith(POISON_PREFIX.encode())}
    poison = {r.key: r.value for r in records if r.key.startswith(POISON_PREFIX.encode())}
    assert set(real) == {t.trip_id.encode() for t in trips}
    # One poison record per marker, on ml_predictions, holding the marker's real prediction.
    assert poison == {f"{POISON_PREFIX}{t}".encode(): real[t.encode()] for t in markers}
    assert {r.topic for r in records} == {"ml_predictions"}

    # Redone, the batch is predicted as without aborts.
    again = transform(batch)
    plain = PredictTransform(serving(model), clock=lambda: NOW)(batch)
    assert again.abort is None
    assert list(each_record(again.records)) == list(each_record(plain.records))
