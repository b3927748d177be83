"""taxi-aggregator as a process on the real 3-broker cluster, scoring a champion and a challenger
in its shadow: champion and challenger predictions and trip ends produced as the predictor and
the producers write them, the metrics read back from model_metrics and held to an offline
computation over the same trips. Once cleanly, once SIGKILLed mid-stream and restarted. From
trip DRIFT_FROM on every trip takes 1.5 times as long as the models expect: the champion's
concept drift is published to model_events once, kill or not.

While the killed aggregator is down the stream pauses. Page-Hinkley reads the errors in the
order they are scored, and a restarted aggregator catching up on a long backlog reads it
partition by partition: trips from after the change can come in among those from before it,
diluting the change below the threshold (in a simulation of such catch-ups over six
partitions, 8 in 105 found no drift). The pause keeps the backlog to what the killed
transaction held, so this test checks that the kill loses and doubles nothing, the alarm
included, rather than how a detector fares on shuffled input.

Each test keeps to topics and groups of its own (--topic-prefix) on the session's shared
cluster."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter

import pytest
from click.testing import CliRunner

from taxi_events import ModelEvent, ModelMetrics, Source, decode, encode
from taxi_events import testing as events
from taxi_kafka import KafkaConfig, ensure_topics, project_topics
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.producer import KafkaProducer
from taxi_kafka.testing import read_all, wait_for
from taxi_model import quality_metrics
from taxi_services.aggregator import main

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRIPS = 1_200
CHUNK = 40  # trips produced together, every PACE_S
PACE_S = 0.4
CHAMPION = "m1"
DRIFT_FROM = TRIPS // 2
SLOWDOWN = 1.5
# The challenger deployed when trip i started: c2 for the first half, then c3; every fifth trip
# started while none was (its prediction names none, and it has no shadow).
Key = tuple[Source, str, str, str | None]  # source, role, model version, challenger


def source(i: int) -> Source:
    return "train" if i % 2 else "test"


def challenger(i: int) -> str | None:
    if i % 5 == 0:
        return None
    return "c2" if i < TRIPS // 2 else "c3"


def usual_s(i: int) -> float:
    """How long trip i would take before the drift: what the models learnt."""
    return 120.0 + (i * 37) % 1_800


def actual_s(i: int) -> float:
    return usual_s(i) * (SLOWDOWN if i >= DRIFT_FROM else 1.0)


def champion_s(i: int) -> float:
    return usual_s(i) * (0.7 + 0.05 * (i % 13))


def challenger_s(i: int) -> float:
    return usual_s(i) * (0.8 + 0.03 * (i % 11))


def trip_id(i: int) -> str:
    return f"id{i:06d}"


def records(i: int) -> dict[str, tuple[bytes, bytes]]:
    """Trip i's records by topic (key, value), as the predictor and its producer write them."""
    key = trip_id(i).encode()
    version = challenger(i)
    found = {
        "ml_predictions": events.prediction(
            trip_id(i),
            source=source(i),
            predicted_duration=champion_s(i),
            model_version=CHAMPION,
            challenger_version=version,
        ),
        "finished_trips": events.trip_finished(
            trip_id(i), source=source(i), trip_duration=actual_s(i), is_estimate=i % 2 == 0
        ),
    }
    if version is not None:
        found["shadow_predictions"] = events.prediction(
            trip_id(i),
            source=source(i),
            predicted_duration=challenger_s(i),
            model_version=version,
            role="challenger",
        )
    return {topic: (key, encode(event)) for topic, event in found.items()}


def offline() -> dict[Key, tuple[list[float], list[float]]]:
    """Every key's (actual, predicted) durations, worked out from the trips themselves."""
    pairs: dict[Key, tuple[list[float], list[float]]] = {}

    def add(key: Key, predicted: float, i: int) -> None:
        actual, guesses = pairs.setdefault(key, ([], []))
        actual.append(actual_s(i))
        guesses.append(predicted)

    for i in range(TRIPS):
        add((source(i), "champion", CHAMPION, None), champion_s(i), i)
        if (version := challenger(i)) is not None:
            add((source(i), "champion", CHAMPION, version), champion_s(i), i)
            add((source(i), "challenger", version, version), challenger_s(i), i)
    return pairs


class Stream(threading.Thread):
    """Produces the trips' records in chunks, PACE_S apart: each chunk's predictions (champion
    and shadow) with the previous chunk's trip ends, and every seventh trip's end ahead of its
    predictions."""

    def __init__(self, bootstrap_servers: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.config = KafkaConfig(bootstrap_servers)
        self.prefix = prefix
        self.produced = 0  # trips whose every record was acknowledged
        self.error: BaseException | None = None
        self.flowing = threading.Event()  # cleared: the stream waits before its next chunk
        self.flowing.set()

    def run(self) -> None:
        try:
            with KafkaProducer(self.config, name="test stream") as producer:
                for first in range(0, TRIPS + CHUNK, CHUNK):
                    assert self.flowing.wait(180), "the stream was paused for 3 minutes"
                    chunk = range(first, min(first + CHUNK, TRIPS))
                    ended = range(max(0, first - CHUNK), min(first, TRIPS))
                    for i in chunk:
                        for topic, (key, value) in records(i).items():
                            if topic != "finished_trips" or i % 7 == 0:
                                producer.produce(self.prefix + topic, value, key)
                    for i in ended:
                        if i % 7:
                            key, value = records(i)["finished_trips"]
                            producer.produce(self.prefix + "finished_trips", value, key)
                    assert producer.flush(60) == 0
                    self.produced = min(first, TRIPS)
                    time.sleep(PACE_S)
        except BaseException as exc:  # reported by the test
            self.error = exc


def key_of(m: ModelMetrics) -> Key:
    return (m.source, m.role, m.model_version, m.challenger_version)


@pytest.mark.parametrize("kill", [False, True], ids=["clean", "aggregator-killed"])
def test_the_champion_and_the_challenger_are_scored_on_the_same_trips(
    kafka_cluster: LocalCluster, shared_services, kill
):
    prefix = f"aggregator-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    shared_services.env["TAXI_TOPIC_PREFIX"] = prefix
    expected = offline()

    def published() -> list[ModelMetrics]:
        return [
            decode(m.value(), ModelMetrics)
            for m in read_all(kafka_cluster.bootstrap_servers, prefix + "model_metrics")
        ]

    def final() -> dict[Key, ModelMetrics] | None:
        last = {key_of(m): m for m in published() if m.scope == "cumulative"}
        done = all(
            key in last and last[key].count == len(pairs[0]) for key, pairs in expected.items()
        )
        return last if done else None

    aggregator = ["taxi-aggregator", "--instance", "a1", "--window", "2", "--grace", "1"]
    # Page-Hinkley at its defaults needs more steady trips before a drift than this short
    # stream has (docs/drift.md); these settings suit 300.
    aggregator += ["--page-hinkley-delta", "0.05", "--page-hinkley-threshold", "30"]
    stream = Stream(kafka_cluster.bootstrap_servers, prefix)

    def assigned(log_number: int) -> None:
        log = shared_services.workdir / f"taxi-aggregator-{log_number}.log"
        wait_for(
            "the aggregator's partitions",
            lambda: (
                log.exists()
                and any(
                    " assign: " in line and "shadow_predictions" in line
                    for line in log.read_text().splitlines()
                )
            ),
            90,
        )

    try:
        first = shared_services.start(*aggregator)
        assigned(0)
        stream.start()
        if kill:
            # Killed while it scores a challenger: some head-to-head figures are out, many
            # trips are waiting, and a transaction is as likely as not open.
            wait_for(
                "the first head-to-head figures",
                lambda: any(m.role == "challenger" for m in published()),
                90,
            )
            stream.flowing.clear()
            assert stream.produced < TRIPS * 3 // 4, "the stream was nearly over before the kill"
            first.kill()
            first.wait()
            shared_services.start(*aggregator)
            assigned(1)
            stream.flowing.set()
        stream.join(120)
        assert stream.error is None
        assert stream.produced == TRIPS
        last = wait_for("every key's final cumulative figures", final, 120)
        metrics = published()
        drift_events = [
            decode(m.value(), ModelEvent)
            for m in read_all(kafka_cluster.bootstrap_servers, prefix + "model_events")
        ]
    finally:
        codes = shared_services.stop_all()
    assert codes == [0]  # the one still running shut down cleanly

    assert isinstance(last, dict)
    assert_the_figures_add_up(last, metrics, expected)
    assert_the_slowdown_was_detected_once(drift_events)


def assert_the_figures_add_up(
    last: dict[Key, ModelMetrics],
    metrics: list[ModelMetrics],
    expected: dict[Key, tuple[list[float], list[float]]],
) -> None:
    """Every key's final figures are the offline ones, its windows add up to them, and head to
    head the two roles were scored on the same trips."""
    assert set(last) == set(expected)
    for key, (actual, predicted) in expected.items():
        figures = quality_metrics(actual, predicted)
        got = last[key]
        assert (got.count, got.unmatched) == (figures.count, 0), key
        assert got.rmsle == pytest.approx(figures.rmsle, rel=0, abs=1e-9), key
        assert got.mae == pytest.approx(figures.mae, rel=0, abs=1e-9), key
        assert got.within_30 == pytest.approx(figures.within_30, rel=0, abs=1e-9), key
        # Every window published once, and they add up to the cumulative figures.
        windows = [m for m in metrics if m.scope == "window" and key_of(m) == key]
        assert len({m.window_start for m in windows}) == len(windows), key
        assert sum(m.count for m in windows) == got.count, key
    # Head to head, the two roles were scored on the same number of trips.
    head_to_head = Counter()
    for (src, role, _, version), m in last.items():
        if version is not None:
            head_to_head[src, version, role] += m.count
    for src, version, role in head_to_head:
        assert head_to_head[src, version, role] == head_to_head[src, version, "champion"]


def assert_the_slowdown_was_detected_once(drift_events: list[ModelEvent]) -> None:
    """Once, on the train trips (the test source's ends are estimates), with evidence of the
    errors falling (by log 1.5, diluted by trips before the change). How soon depends on the
    order the trips were scored in: a restarted aggregator catching up scores them out of order.
    No data drift: the registry holds no profile for these models."""
    assert [(e.kind, e.source, e.model_version) for e in drift_events] == [
        ("concept-drift", "train", CHAMPION)
    ]
    alarm = drift_events[0]
    assert alarm.detector == "page-hinkley"
    assert alarm.value > alarm.threshold
    assert int(alarm.last_trip_id.removeprefix("id")) >= DRIFT_FROM
    shift = alarm.evidence["mean_log_error_after"] - alarm.evidence["mean_log_error_before"]
    # At most log 1.5; less when trips from before the change are on the "after" side of
    # Page-Hinkley's estimated change point (out of order, after a restart, most of all).
    assert -math.log(SLOWDOWN) - 0.1 < shift < -math.log(SLOWDOWN) / 2


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("distance_km,hour", "unknown: hour (choose from distance_km, week_hour, pickup_area)"),
        ("speed,area", "unknown: area, speed"),
    ],
)
def test_an_unknown_psi_feature_is_refused_before_anything_starts(value, complaint):
    result = CliRunner().invoke(main, ["--psi-features", value, "--metrics-port", "0"])
    assert result.exit_code == 2
    assert complaint in result.output
