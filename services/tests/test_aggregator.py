"""The aggregator's transform on hand-made messages, with an in-memory changelog."""

import json

import pytest
from confluent_kafka import Message

from taxi_events import ModelMetrics, Prediction, TripFinished, decode, encode
from taxi_events import testing as events
from taxi_model import quality_metrics
from taxi_services.aggregator import AggregateTransform
from taxi_stream import Aggregation


def prediction(n: int) -> Prediction:
    return events.prediction(f"t{n}", predicted_duration=500.0 + n, model_version="m1")


def finish(n: int) -> TripFinished:
    return events.trip_finished(f"t{n}", trip_duration=400.0 + 3 * n)


def message(topic: str, value: bytes, ms: int, offset: int = 0) -> Message:
    return Message(topic=topic, partition=0, offset=offset, value=value, timestamp=(1, ms))


class Changelog:
    """What the aggregator_changelog topic would hold once compacted."""

    def __init__(self) -> None:
        self.table: dict[str, bytes | None] = {}

    def write(self, records) -> None:
        for r in records:
            if r.topic == "aggregator_changelog":
                self.table[r.key.decode()] = r.value

    def restore(self, state: Aggregation) -> None:
        for key, value in self.table.items():
            state.apply_change(key, value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def changelog() -> Changelog:
    return Changelog()


def make(
    changelog: Changelog, clock: FakeClock | None = None, topic_prefix: str = ""
) -> AggregateTransform:
    transform = AggregateTransform(
        lambda: Aggregation.create(ttl_ms=60_000, window_ms=10_000, grace_ms=2_000),
        changelog.restore,
        clock or FakeClock(),
        topic_prefix=topic_prefix,
    )
    transform.rolled_back()
    return transform


def metrics_of_topic(result, topic: str) -> list[ModelMetrics]:
    return [decode(r.value, ModelMetrics) for r in result.records if r.topic == topic]


def metrics_of(result) -> list[ModelMetrics]:
    return metrics_of_topic(result, "model_metrics")


def test_matches_publish_window_and_cumulative_metrics(changelog):
    transform = make(changelog)
    batch = [message("ml_predictions", encode(prediction(n)), 1_000 + n) for n in range(20)]
    batch += [message("finished_trips", encode(finish(n)), 4_000 + n) for n in range(20)]
    result = transform(batch)
    changelog.write(result.records)
    assert metrics_of(result) == []  # the window [0, 10 s) is still open
    assert result.event_times == {
        "ml_predictions": [prediction(n).produced_at for n in range(20)],
        "finished_trips": [finish(n).produced_at for n in range(20)],
    }
    result = transform([message("finished_trips", encode(finish(99)), 12_000)])
    published = {m.scope: m for m in metrics_of(result)}
    offline = quality_metrics([400.0 + 3 * n for n in range(20)], [500.0 + n for n in range(20)])
    assert published["window"].count == published["cumulative"].count == 20
    assert published["cumulative"].rmsle == pytest.approx(offline.rmsle, abs=1e-9)
    assert {r.key for r in result.records if r.topic == "model_metrics"} == {b"train"}


def test_bad_records_become_dead_letters(changelog):
    transform = make(changelog)
    result = transform(
        [
            message("ml_predictions", b"{}", 1_000, offset=7),
            message("finished_trips", encode(prediction(1)), 1_000, offset=8),
        ]
    )
    assert [(f.message.offset(), f.kind) for f in result.failures] == [(7, "decode"), (8, "decode")]


def test_idle_ticks_close_the_last_window(changelog):
    clock = FakeClock()
    transform = make(changelog, clock)
    transform([message("ml_predictions", encode(prediction(1)), 1_000)])
    transform([message("finished_trips", encode(finish(1)), 2_000)])
    clock.now += 5.0
    assert not transform.tick().records  # nothing closed: no transaction of its own
    clock.now += 5.5  # record time now 12.5 s: past the window's end plus grace
    closed = transform.tick()
    assert [m.count for m in metrics_of(closed)] == [1, 1]
    windows = [r for r in closed.records if r.key == b"windows"]
    assert [json.loads(r.value)["watermark_ms"] for r in windows] == [12_500]


def test_a_rollback_returns_to_the_committed_state(changelog):
    transform = make(changelog)
    committed = transform([message("ml_predictions", encode(prediction(1)), 1_000)])
    changelog.write(committed.records)
    transform([message("ml_predictions", encode(prediction(2)), 1_100)])  # never committed
    assert len(transform.state.join) == 2
    transform.rolled_back()
    assert [p.event.trip_id for p in transform.state.join.pending()] == ["t1"]


def test_a_topic_prefix_names_every_topic_read_and_written(changelog):
    transform = make(changelog, topic_prefix="run7.")
    batch = [message("run7.ml_predictions", encode(prediction(1)), 1_000)]
    batch += [message("run7.finished_trips", encode(finish(1)), 2_000)]
    batch += [message("ml_predictions", encode(prediction(2)), 3_000)]  # another pipeline's
    result = transform(batch)
    assert [f.kind for f in result.failures] == ["topic"]
    assert {r.topic for r in result.records} == {"run7.aggregator_changelog"}
    result = transform([message("run7.finished_trips", encode(finish(9)), 12_500)])
    assert {r.topic for r in result.records} == {"run7.model_metrics", "run7.aggregator_changelog"}
    published = metrics_of_topic(result, "run7.model_metrics")
    assert [m.count for m in published if m.scope == "window"] == [1]
