"""taxi-trainer as a process on the real 3-broker cluster: it learns a slowdown from the live
trips and proposes a candidate that beats the stale champion, once, though frozen and killed
mid-training and mid-publish; bad labels are counted and never trained on.

The test keeps to topics and groups of its own (--topic-prefix) on the session's shared cluster.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from taxi_events import (
    DeadLetter,
    DeploymentDecision,
    ModelEvent,
    ModelMetrics,
    TripFinished,
    TripStarted,
    decode,
    encode,
)
from taxi_kafka import KafkaConfig, OutputRecord, ensure_topics, project_topics, read_table
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.producer import KafkaProducer
from taxi_kafka.testing import read_all, wait_for
from taxi_model import Decider, RegistryRecord, generate_trips, load_model
from taxi_services.registry import ModelRegistry, RegistryTopics, publish_model, record_of
from taxi_services.trainer import AutoPromoter, RetrainTransform, TrainerTopics
from taxi_stream import PromotionPolicy, Retraining, RetrainingSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRIPS = 8_000
EVERY = 6_000  # new labelled trips that call for a candidate
SLOWDOWN = 1.5
BAD_LABELS = 40
TEST_TRIPS = 60
GARBAGE = 3
JUNK = b'{"trip_id": "junk", "trip_duration": -5}'


def live_trips() -> pd.DataFrame:
    """The trips of a city that slowed down: each takes 1.5 times as long as the champion
    learnt."""
    trips = generate_trips(rows=TRIPS, seed=11).sort_values("pickup_datetime")
    trips["trip_duration"] = trips["trip_duration"] * SLOWDOWN
    return trips.reset_index(drop=True)


def start_of(row: pd.Series, trip_id: str, source: str = "train") -> TripStarted:
    return TripStarted(
        trip_id=trip_id,
        vendor_id=int(row.vendor_id),
        pickup_datetime=row.pickup_datetime.to_pydatetime(),
        passenger_count=int(row.passenger_count),
        pickup_longitude=row.pickup_longitude,
        pickup_latitude=row.pickup_latitude,
        dropoff_longitude=row.dropoff_longitude,
        dropoff_latitude=row.dropoff_latitude,
        store_and_fwd_flag=row.store_and_fwd_flag == "Y",
        source=source,
    )


def end_of(row: pd.Series, trip_id: str, duration: float, source: str = "train") -> TripFinished:
    return TripFinished(
        trip_id=trip_id,
        dropoff_datetime=(row.pickup_datetime + pd.Timedelta(seconds=duration)).to_pydatetime(),
        trip_duration=duration,
        is_estimate=source == "test",
        source=source,
    )


def records(trips: pd.DataFrame) -> Iterator[tuple[str, str, bytes]]:
    """(topic, key, value) of every trip's start and end, and of the bad input among them:
    impossible durations (zero, two days), test-source trips (their ends are estimates) and
    records that are no events at all."""
    for n, row in enumerate(trips.itertuples()):
        trip_id = f"t{n}"  # generated ids may repeat, and a repeat is no new label
        yield "new_trips", trip_id, encode(start_of(row, trip_id))
        yield "finished_trips", trip_id, encode(end_of(row, trip_id, row.trip_duration))
        if n < BAD_LABELS:
            bad = f"bad{n}"
            yield "new_trips", bad, encode(start_of(row, bad))
            yield "finished_trips", bad, encode(end_of(row, bad, 0.0 if n % 2 else 172_800.0))
        if n < TEST_TRIPS:
            test = f"test{n}"
            yield "new_trips", test, encode(start_of(row, test, "test"))
            yield "finished_trips", test, encode(end_of(row, test, 600.0, "test"))
        if n < GARBAGE:
            yield "finished_trips", f"junk{n}", JUNK


def impossible(trips: pd.DataFrame) -> int:
    """The generated trips whose durations no trip can have (zero, or more than a day)."""
    return int(((trips.trip_duration <= 0) | (trips.trip_duration > 86_400)).sum())


def produce(bootstrap: str, prefix: str, trips: pd.DataFrame) -> None:
    with KafkaProducer(KafkaConfig(bootstrap), name="test trips") as producer:
        for topic, key, value in records(trips):
            producer.produce(prefix + topic, value, key.encode())
        assert producer.flush(60) == 0


def frozen_at(process: subprocess.Popen[bytes], log: Path, line: str) -> None:
    """Freeze the process (SIGSTOP) as soon as its log shows `line`."""

    def logged() -> bool:
        return log.exists() and line in log.read_text()

    wait_for(f"{line!r} in {log.name}", logged, timeout=180, interval=0.01)
    process.send_signal(signal.SIGSTOP)


def test_a_slowdown_is_learnt_once_though_the_trainer_is_killed_mid_training_and_mid_publish(
    kafka_cluster: LocalCluster, shared_services, trained_model_path: Path
):
    prefix = f"trainer-{uuid.uuid4().hex[:8]}."
    bootstrap = kafka_cluster.bootstrap_servers
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    registry = ModelRegistry(KafkaConfig(bootstrap), RegistryTopics.prefixed(prefix))
    champion = publish_model(registry, record_of(trained_model_path), "champion", reason="test")
    trips = live_trips()
    produce(bootstrap, prefix, trips)

    def events() -> list[ModelEvent]:
        return [decode(m.value(), ModelEvent) for m in read_all(bootstrap, prefix + "model_events")]

    shared_services.env["TAXI_TOPIC_PREFIX"] = prefix
    trainer = ["taxi-trainer", "--instance", "t1", "--window", str(TRIPS)]
    trainer += ["--every", str(EVERY), "--min-trips", "1000", "--no-auto-promote"]
    try:
        # Frozen while it trains, then killed: nothing of that window is out.
        first = shared_services.start(*trainer)
        frozen_at(first, shared_services.workdir / "taxi-trainer-0.log", "training a candidate")
        assert events() == []
        first.kill()
        # Restarted, it trains the same window again; frozen once it publishes, then killed.
        second = shared_services.start(*trainer)
        log = shared_services.workdir / "taxi-trainer-1.log"
        frozen_at(second, log, "publishing candidate")
        published_before_the_kill = len(events())
        scored_then = log.read_text().split("scored RMSLE ")[1].split()[0]
        second.kill()
        # Restarted again, it resumes from the last state committed and publishes once.
        shared_services.start(*trainer)
        wait_for("a candidate", lambda: [e for e in events() if e.kind == "candidate"], 180)
    finally:
        codes = shared_services.stop_all()
    assert codes[-1] == 0  # the last one shut down cleanly

    candidates = [e for e in events() if e.kind == "candidate"]
    assert len(candidates) == 1, candidates
    assert published_before_the_kill in (0, 1)  # frozen before or after its commit
    candidate = candidates[0]
    # The same trips trained the same model, whatever order they arrived in. (Its version
    # differs: the artifact's bytes carry the time they were written.)
    assert f"{candidate.evidence['candidate_rmsle']:.4f}" == scored_then
    # Every good trip arrived before its first batch was done: the window was all of them.
    labelled = TRIPS - impossible(trips)
    assert candidate.trips == labelled
    assert candidate.evidence["candidate_rmsle"] < candidate.evidence["champion_rmsle"]
    # The registry holds it once, with the window on its card; it is the challenger.
    record = registry.records()[candidate.model_version]
    assert isinstance(record, RegistryRecord)
    assert f"live window: {labelled} train trips" in record.card.data.description
    assert record.card.data.cutoff is not None
    assert record.load().version == candidate.model_version
    history = registry.history()
    assert [(d.action, d.champion, d.challenger) for d in history] == [
        ("publish", champion.version, None),
        ("publish", champion.version, candidate.model_version),
    ]
    assert history[-1].evidence == candidate.evidence
    assert_bad_input_was_counted(bootstrap, prefix, trips)


def test_a_better_candidate_is_held_back_while_the_champion_is_on_probation(
    kafka_cluster: LocalCluster, trained_model_path: Path, challenger_model_path: Path
):
    """A new challenger would end the probation with no verdict: the candidate waits for the
    next window after it."""
    prefix = f"probation-{uuid.uuid4().hex[:8]}."
    bootstrap = kafka_cluster.bootstrap_servers
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    produce(bootstrap, prefix, live_trips().head(1_500))
    topics = TrainerTopics.prefixed(prefix)
    messages = read_all(bootstrap, topics.trips) + read_all(bootstrap, topics.ends)
    predecessor, champion = load_model(trained_model_path), load_model(challenger_model_path)
    decider = Decider("someone")
    history = [decider.publish([], predecessor.version, "champion", "first")]
    history.append(decider.publish(history, champion.version, "challenger", "second"))
    history.append(
        decider.promote(
            history,
            champion.version,
            {predecessor.version, champion.version},
            "better",
            keep_previous_as_challenger=True,
        )
    )

    def outputs(decisions: list[DeploymentDecision]) -> list[OutputRecord]:
        transform = RetrainTransform(
            RetrainingSettings(min_trips=1_000, every_trips=1_000),
            topics,
            champion=lambda: champion,
            history=lambda: decisions,
            restore=lambda: None,
            actor="trainer@test",
        )
        return [r for r in transform(messages).records if r.topic != topics.state]

    held = outputs(history)
    assert [r.topic for r in held] == [topics.events]
    event = decode(held[0].value, ModelEvent)
    assert event.kind == "candidate-rejected"
    assert event.detail.startswith(
        f"held back: {champion.version} is on probation against {predecessor.version}"
    )
    assert event.evidence["candidate_rmsle"] < event.evidence["champion_rmsle"]
    # The probation over (the predecessor withdrawn), the same window's candidate is published.
    history.append(decider.withdraw(history, "probation passed"))
    published = outputs(history)
    assert [r.topic for r in published] == [
        topics.registry.registry,
        topics.registry.deployments,
        topics.events,
    ]
    decision = decode(published[1].value, DeploymentDecision)
    assert (decision.action, decision.champion) == ("publish", champion.version)
    assert decode(published[2].value, ModelEvent).kind == "candidate"


def assert_bad_input_was_counted(bootstrap: str, prefix: str, trips: pd.DataFrame) -> None:
    """The bad labels were counted, never trained on; the junk went to dead letters."""
    state = Retraining.from_bytes(
        read_table(KafkaConfig(bootstrap), prefix + "trainer_state")[b"retraining"]
    )
    assert state.window.rejected["impossible-duration"] == BAD_LABELS + impossible(trips)
    assert state.window.rejected["test-source"] == 2 * TEST_TRIPS
    dead = read_all(bootstrap, prefix + "dead_letters")
    assert [m.value() for m in dead] == [JUNK] * GARBAGE
    assert {DeadLetter.from_headers(m.headers()).service for m in dead} == {"trainer"}


def head_to_head(start: datetime, champion: str, challenger: str, rmsle: dict[str, float]):
    """One window's figures of both roles on the same train trips, as the aggregator writes."""
    window = {
        "source": "train",
        "scope": "window",
        "window_start": start,
        "window_end": start + timedelta(seconds=10),
        "count": 1_000,
        "mae": 100.0,
        "median_ape": 0.2,
        "within_30": 0.6,
        "unmatched": 0,
        "challenger_version": challenger,
    }
    return [
        ModelMetrics(**window, role="champion", model_version=champion, rmsle=rmsle[champion]),
        ModelMetrics(
            **window, role="challenger", model_version=challenger, rmsle=rmsle[challenger]
        ),
    ]


def test_the_promoter_promotes_a_better_challenger_once_with_its_evidence(
    kafka_cluster: LocalCluster, trained_model_path: Path, challenger_model_path: Path
):
    prefix = f"promoter-{uuid.uuid4().hex[:8]}."
    config = KafkaConfig(kafka_cluster.bootstrap_servers)
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    topics = TrainerTopics.prefixed(prefix)
    registry = ModelRegistry(config, topics.registry)
    champion = publish_model(registry, record_of(trained_model_path), "champion", reason="t")
    challenger = publish_model(registry, record_of(challenger_model_path), "challenger", reason="t")
    rmsle = {champion.version: 0.55, challenger.version: 0.40}
    began = registry.history()[-1].decided_at
    promoter = AutoPromoter(config, topics, PromotionPolicy(delta=0.02, min_trips=3_000), "p1")
    promoter.start()
    try:
        with KafkaProducer(config, name="test metrics") as producer:
            # Two windows (2,000 trips): not enough yet. A third: it promotes, once.
            for n in range(2):
                for m in head_to_head(
                    began + timedelta(seconds=10 * n), champion.version, challenger.version, rmsle
                ):
                    producer.produce(topics.metrics, encode(m), b"train")
            assert producer.flush(30) == 0
            time.sleep(3)
            assert len(registry.history()) == 2
            for m in head_to_head(
                began + timedelta(seconds=20), champion.version, challenger.version, rmsle
            ):
                producer.produce(topics.metrics, encode(m), b"train")
            assert producer.flush(30) == 0
        wait_for("the promotion", lambda: len(registry.history()) == 3)
        time.sleep(3)  # time to decide twice, were it to
    finally:
        promoter.close()
    assert promoter.error is None
    history = registry.history()
    assert len(history) == 3
    promotion = history[-1]
    assert (promotion.action, promotion.champion, promotion.challenger) == (
        "promote",
        challenger.version,
        champion.version,  # on probation, in the shadow of the new champion
    )
    assert promotion.actor.startswith("auto-promotion@")
    assert promotion.evidence["trips"] == 3_000
    assert promotion.evidence["challenger_rmsle"] == pytest.approx(0.40)
    events = [
        decode(m.value(), ModelEvent)
        for m in read_all(kafka_cluster.bootstrap_servers, topics.events)
    ]
    assert [(e.kind, e.model_version, e.trips, e.evidence) for e in events] == [
        ("promotion", challenger.version, 3_000, promotion.evidence)
    ]
