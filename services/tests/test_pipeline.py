"""End to end on a real 3-broker cluster: producer -> predictor -> aggregator, run as the
console scripts a user runs, each in its own process. Each test keeps to topics and groups of
its own (--topic-prefix) on the session's shared cluster."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from taxi_events import ModelMetrics, Prediction, decode
from taxi_kafka import KafkaConfig, ensure_topics, project_topics
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import read_all, wait_for
from taxi_model import (
    Decider,
    current_roles,
    load_model,
    quality_metrics,
    read_trips,
    write_synthetic,
)
from taxi_services.registry import ModelRegistry, RegistryTopics, ensure_champion, record_of

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRIPS = 2000
DECIDER = Decider("test@here")


def replay(csv: Path, instance: str, *extra: str) -> list[str]:
    """taxi-producer arguments replaying the train rows of `csv`."""
    return [
        "--source",
        "train",
        "--data",
        str(csv),
        "--no-progress",
        "--instance",
        instance,
        *extra,
    ]


class Topics:
    """The test's own namespace on the shared cluster: its services get the prefix through
    TAXI_TOPIC_PREFIX, and `read` reads a topic of it."""

    def __init__(self, cluster: LocalCluster, prefix: str) -> None:
        self.cluster = cluster
        self.prefix = prefix

    def read(self, topic: str) -> list:
        return read_all(self.cluster.bootstrap_servers, self.prefix + topic)

    def keys(self, topic: str) -> list[str]:
        return [m.key().decode() for m in self.read(topic)]

    @property
    def registry(self) -> ModelRegistry:
        config = KafkaConfig(self.cluster.bootstrap_servers)
        return ModelRegistry(config, RegistryTopics.prefixed(self.prefix))


@pytest.fixture
def topics(kafka_cluster: LocalCluster, shared_services, trained_model_path) -> Topics:
    """The test's namespace, with `trained_model_path` its champion."""
    prefix = f"pipeline-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    shared_services.env["TAXI_TOPIC_PREFIX"] = prefix
    topics = Topics(kafka_cluster, prefix)
    ensure_champion(topics.registry, trained_model_path, "test")
    return topics


@pytest.fixture
def services(shared_services, topics):
    """The shared cluster's services, in the test's namespace."""
    return shared_services


def all_predictions(topics: Topics) -> list[Prediction]:
    """Wait until every trip has its prediction (or more: duplicates must show)."""
    return wait_for(
        f"{TRIPS} predictions",
        lambda: (p := predictions(topics)) and len(p) >= TRIPS and p,
        120,
    )


def predictions(topics: Topics) -> list[Prediction]:
    return [decode(m.value(), Prediction) for m in topics.read("ml_predictions")]


def final_cumulative(topics: Topics) -> ModelMetrics | None:
    metrics = [decode(m.value(), ModelMetrics) for m in topics.read("model_metrics")]
    train = [m for m in metrics if m.scope == "cumulative" and m.source == "train"]
    return train[-1] if train and train[-1].count == TRIPS else None


@pytest.mark.parametrize("kill_predictor", [False, True], ids=["clean", "predictor-killed"])
def test_every_trip_is_predicted_once_and_scored_exactly(
    topics, services, trained_model_path, tmp_path, kill_predictor
):
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=77, test_rows=0)
    try:
        services.start("taxi-predictor", "--instance", "p1")
        services.start("taxi-aggregator", "--instance", "a1", "--window", "2", "--grace", "1")
        producer = services.start(
            "taxi-producer",
            *replay(train_csv, "e2e", *(["--rate", "200"] if kill_predictor else [])),
        )
        if kill_predictor:
            wait_for("some predictions", lambda: len(predictions(topics)) > 300, 90)
            services.running[0].kill()  # SIGKILL, mid-transaction as likely as not
            services.running[0].wait()
            services.start("taxi-predictor", "--instance", "p1")
        assert producer.wait(timeout=120) == 0

        got = all_predictions(topics)
        cumulative = wait_for("the final cumulative metrics", lambda: final_cumulative(topics), 120)
        if kill_predictor:
            # Its predecessor may have predicted every trip already: stopped while still
            # importing, the restarted one would end by Python's default SIGTERM handler (-15).
            wait_for(
                "the restarted predictor to serve",
                lambda: "predicting with champion" in services.logs[-1].read_text(),
                120,
            )
    finally:
        codes = services.stop_all()

    assert len(got) == TRIPS
    assert len({p.trip_id for p in got}) == TRIPS
    trips = read_trips(train_csv).frame
    assert {p.trip_id for p in got} == set(trips["id"])

    offline_predicted = load_model(trained_model_path).predict(trips)
    offline = quality_metrics(trips["trip_duration"], offline_predicted)
    assert cumulative.count == TRIPS
    assert cumulative.unmatched == 0
    assert math.isclose(cumulative.rmsle, offline.rmsle, rel_tol=0, abs_tol=1e-9)
    assert codes == [0, 0]  # the predictor and the aggregator shut down cleanly


def test_a_killed_producer_resumes_without_repeating_or_losing_trips(topics, services, tmp_path):
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=78, test_rows=0)
    args = replay(train_csv, "k")
    first = services.start("taxi-producer", *args, "--rate", "300")

    def started() -> list[str]:
        return topics.keys("new_trips")

    wait_for("a third of the trips started", lambda: len(started()) > TRIPS // 3, 60)
    first.kill()  # SIGKILL: trip ends are owed, a transaction may be open
    first.wait()
    second = services.start("taxi-producer", *args)
    assert second.wait(timeout=120) == 0

    ended = topics.keys("finished_trips")
    ids = set(read_trips(train_csv).frame["id"])
    assert sorted(started()) == sorted(ids)  # every trip started, none twice
    assert sorted(ended) == sorted(ids)  # every started trip ended, once


def test_two_predictors_split_the_partitions(topics, services, trained_model_path, tmp_path):
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=79, test_rows=0)
    logs = [tmp_path / f"taxi-predictor-{i}.log" for i in (0, 1)]

    def partitions_of(log: Path) -> set[str]:
        """new_trips partitions in the instance's latest assignment."""
        if not log.exists():
            return set()
        assigned = [line for line in log.read_text().splitlines() if " assign: " in line]
        return set(assigned[-1].split(" assign: ")[1].split(", ")) if assigned else set()

    def split() -> bool:
        first, second = map(partitions_of, logs)
        return bool(first) and bool(second) and not first & second and len(first | second) == 6

    try:
        services.start("taxi-predictor", "--instance", "p1")
        services.start("taxi-predictor", "--instance", "p2")
        # The trips go once the group has settled: a producer that starts in a second can
        # otherwise finish before the second predictor joins.
        wait_for("the predictors to split the partitions", split, 120)
        producer = services.start("taxi-producer", *replay(train_csv, "two", "--rate", "400"))
        assert producer.wait(timeout=120) == 0
        got = all_predictions(topics)
    finally:
        codes = services.stop_all()
    assert codes == [0, 0]
    assert len(got) == len({p.trip_id for p in got}) == TRIPS
    assert split()  # still, at the end


def test_a_promotion_switches_the_running_predictor_and_a_restart_mid_switch_loses_nothing(
    topics, services, challenger_model_path, tmp_path
):
    """Promoted mid-stream, the same process switches; rolled back and SIGKILLed mid-switch, the
    restarted one serves the champion then current. Every trip is predicted exactly once."""
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=80, test_rows=0)
    registry = topics.registry
    champion = current_roles(registry.history()).champion
    challenger = record_of(challenger_model_path)
    registry.publish(challenger)
    registry.decide(DECIDER.publish(registry.history(), challenger.version, "challenger", "try"))
    try:
        predictor = services.start("taxi-predictor", "--instance", "p1")
        # 20 s of trips: some are left for the restarted predictor.
        producer = services.start("taxi-producer", *replay(train_csv, "swap", "--rate", "100"))
        wait_for(
            "a quarter of the trips predicted", lambda: len(predictions(topics)) > TRIPS // 4, 90
        )
        known = set(registry.raw_records())
        registry.decide(DECIDER.promote(registry.history(), challenger.version, known, "test"))
        wait_for(
            "a prediction by the new champion",
            lambda: any(p.model_version == challenger.version for p in predictions(topics)),
            60,
        )
        # Not restarted by anyone: the same process switched models.
        assert predictor.poll() is None
        registry.decide(DECIDER.rollback(registry.history(), "test"))
        time.sleep(0.5)  # the follower has read the decision and is switching
        predictor.kill()
        predictor.wait()
        services.start("taxi-predictor", "--instance", "p1")
        assert producer.wait(timeout=120) == 0
        got = all_predictions(topics)
    finally:
        services.stop_all()

    # Counted by an independent read_committed reader: every trip exactly once.
    assert len(got) == len({p.trip_id for p in got}) == TRIPS
    assert set(Counter(p.model_version for p in got)) == {champion, challenger.version}
    # Each partition goes champion, new champion, old champion again: no going back and forth,
    # and the restarted predictor serves the champion of the last decision.
    switched = [champion, challenger.version, champion]
    runs = []
    for partition in range(6):
        versions = [
            decode(m.value(), Prediction).model_version
            for m in topics.read("ml_predictions")
            if m.partition() == partition
        ]
        runs.append([v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v])
    assert all(r in ([champion], [champion, challenger.version], switched) for r in runs)
    assert switched in runs
    # While it was the challenger, it predicted the same trips in the shadow, once each.
    shadowed = [p for p in got if p.challenger_version == challenger.version]
    shadow = [decode(m.value(), Prediction) for m in topics.read("shadow_predictions")]
    assert shadowed
    assert sorted(p.trip_id for p in shadow) == sorted(p.trip_id for p in shadowed)
    assert {(p.role, p.model_version) for p in shadow} == {("challenger", challenger.version)}
    assert all(p.model_version == champion for p in shadowed)
