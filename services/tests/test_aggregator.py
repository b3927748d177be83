"""The aggregator's transform on hand-made messages, with an in-memory changelog."""

import json

import pytest
from confluent_kafka import Message
from prometheus_client import REGISTRY

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
    assert [p.key for p in transform.state.join.pending()] == [("train", "t1")]


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


# -- a challenger in the shadow ---------------------------------------------------------------


def champion(n: int, version: str = "m1", challenger: str | None = "c2", source="train"):
    return events.prediction(
        f"t{n}",
        source=source,
        predicted_duration=500.0 + n,
        model_version=version,
        challenger_version=challenger,
    )


def shadow(n: int, version: str = "c2", source="train", **fields):
    return events.prediction(
        f"t{n}",
        source=source,
        predicted_duration=450.0 + 2 * n,
        model_version=version,
        **{"role": "challenger", **fields},
    )


def test_a_challenger_is_scored_head_to_head_on_the_same_trips(changelog):
    transform = make(changelog)
    batch = [message("shadow_predictions", encode(shadow(n)), 1_000 + n) for n in range(10)]
    batch += [message("ml_predictions", encode(champion(n)), 1_000 + n) for n in range(20)]
    batch += [message("finished_trips", encode(finish(n)), 4_000 + n) for n in range(20)]
    result = transform(batch)
    assert metrics_of(result) == []
    assert set(result.event_times) == {"ml_predictions", "shadow_predictions", "finished_trips"}
    # Trips 10-19 wait for the challenger's predictions, which come in the next batch.
    assert len(transform.state.join) == 10
    batch = [message("shadow_predictions", encode(shadow(n)), 1_000 + n) for n in range(10, 20)]
    transform(batch)
    assert len(transform.state.join) == 0
    result = transform([message("finished_trips", encode(finish(99)), 12_000)])
    published = metrics_of(result)
    assert {r.key for r in result.records if r.topic == "model_metrics"} == {b"train"}
    cumulative = {
        (m.role, m.model_version, m.challenger_version): m
        for m in published
        if m.scope == "cumulative"
    }
    actual = [400.0 + 3 * n for n in range(20)]
    champion_offline = quality_metrics(actual, [500.0 + n for n in range(20)])
    challenger_offline = quality_metrics(actual, [450.0 + 2 * n for n in range(20)])
    for key, offline in (
        (("champion", "m1", None), champion_offline),
        (("champion", "m1", "c2"), champion_offline),
        (("challenger", "c2", "c2"), challenger_offline),
    ):
        assert cumulative[key].count == 20
        assert cumulative[key].rmsle == pytest.approx(offline.rmsle, abs=1e-9)
        assert cumulative[key].mae == pytest.approx(offline.mae, abs=1e-9)
    assert len(cumulative) == 3


def test_the_topic_decides_the_role(changelog):
    transform = make(changelog)
    # A record on shadow_predictions that says otherwise, and a record of schema 1.0 (no role).
    misnamed = shadow(1, role="champion")
    old = json.loads(encode(prediction(1)))
    del old["role"], old["challenger_version"]
    old["schema_version"] = "1.0"
    transform(
        [
            message("shadow_predictions", encode(misnamed), 1_000),
            message("ml_predictions", json.dumps(old).encode(), 1_000),
        ]
    )
    [waiting] = transform.state.join.pending()
    assert waiting.challenger is not None
    assert waiting.challenger.event.role == "challenger"
    assert waiting.champion is not None
    assert waiting.champion.event.role == "champion"


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_gauges_show_the_champion_and_the_challenger(changelog):
    transform = make(changelog)
    source = "test"  # a source and versions of its own: the registry is process-wide
    batch = [
        message("ml_predictions", encode(champion(n, "g1", "g2", source)), 1_000 + n)
        for n in range(10)
    ]
    batch += [
        message("shadow_predictions", encode(shadow(n, "g2", source)), 1_000 + n) for n in range(10)
    ]
    batch += [
        message("finished_trips", encode(events.trip_finished(f"t{n}", source=source)), 3_000)
        for n in range(10)
    ]
    transform(batch)
    result = transform([message("finished_trips", encode(finish(99)), 12_500)])
    published = [m for m in metrics_of(result) if m.source == source]
    assert len(published) == 6  # a window and the cumulative figures, of three keys
    transform.committed()
    for m in published:
        labels = {
            "source": source,
            "scope": m.scope,
            "role": m.role,
            "model_version": m.model_version,
            "challenger": m.challenger_version or "",
        }
        assert sample("taxi_model_rmsle", **labels) == pytest.approx(m.rmsle)
        assert sample("taxi_model_mae_seconds", **labels) == pytest.approx(m.mae)
        assert sample("taxi_model_median_ape_ratio", **labels) == pytest.approx(m.median_ape)
        assert sample("taxi_model_within_30_ratio", **labels) == pytest.approx(m.within_30)
        del labels["scope"]
        assert sample("taxi_matched_trips", **labels) == 10
        assert sample("taxi_unmatched_trips", **labels) == 0
    assert {m.challenger_version for m in published} == {None, "g2"}
    assert sample("taxi_model_info", source=source, version="g1") == 1
