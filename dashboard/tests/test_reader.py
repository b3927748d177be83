"""The background reader and health poller against the real 3-broker cluster.

The cluster is the shared test cluster, whose project topics other tests may write to as well:
every check looks for this test's own trip ids and reasons only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from taxi_dashboard.reader import LiveData
from taxi_dashboard.settings import DashboardSettings
from taxi_dashboard.state import Snapshot
from taxi_events import DeadLetter, DeploymentDecision, ModelEvent, ModelMetrics, encode
from taxi_events.testing import prediction, trip_finished, trip_started
from taxi_kafka import KafkaConfig, KafkaProducer
from taxi_kafka.testing import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_the_reader_shows_committed_records_skips_bad_ones_and_reports_health(kafka_cluster):
    config = KafkaConfig(kafka_cluster.bootstrap_servers)
    run = uuid.uuid4().hex[:8]
    kept, aborted = f"kept-{run}", f"aborted-{run}"
    now = datetime.now(UTC)
    version = f"model-{run}"
    letter = DeadLetter(
        source_topic="new_trips", partition=0, offset=1, service="predictor", reason=f"bad {run}"
    )
    decision = DeploymentDecision(
        action="publish",
        version=version,
        champion=version,
        challenger=None,
        actor="test@host",
        reason=f"first model {run}",
    )
    drift = ModelEvent(
        kind="concept-drift",
        model_version=version,
        source="train",
        detector="page-hinkley",
        statistic="log_error",
        value=12.0,
        threshold=10.0,
        detail=f"drift {run}",
    )
    with KafkaProducer(config, name="test producer") as producer:
        producer.produce("new_trips", encode(trip_started(kept, produced_at=now)), kept.encode())
        producer.produce(
            "ml_predictions",
            encode(prediction(kept, predicted_duration=600.0, trip_started_at=now)),
            kept.encode(),
        )
        producer.produce("finished_trips", encode(trip_finished(kept, trip_duration=500.0)))
        producer.produce("ml_predictions", f"not json {run}".encode(), b"x")
        producer.produce("dead_letters", b"\x00", b"x", letter.to_headers())
        producer.produce(
            "model_metrics",
            encode(
                ModelMetrics(
                    source="test",
                    scope="cumulative",
                    window_start=None,
                    window_end=None,
                    count=1,
                    rmsle=0.1,
                    mae=10.0,
                    median_ape=0.1,
                    within_30=1.0,
                    unmatched=0,
                    model_version=version,
                )
            ),
        )
        # Older than any look-back: the models' history is read from its first record on.
        decided = now - timedelta(hours=3)
        for topic, value in (("model_deployments", decision), ("model_events", drift)):
            producer.client.produce(topic, encode(value), timestamp=int(decided.timestamp() * 1000))
        assert producer.flush(60) == 0
    # A transaction that is aborted: read_committed never shows it.
    transactional = KafkaProducer(config, transactional_id=f"test-dashboard-{run}")
    transactional.client.init_transactions(60)
    transactional.client.begin_transaction()
    transactional.produce(
        "ml_predictions", encode(prediction(aborted, trip_started_at=now)), aborted.encode()
    )
    transactional.flush(60)
    transactional.client.abort_transaction(60)
    transactional.close()

    live = LiveData(DashboardSettings(kafka=config, metrics_port=0, health_interval_s=1)).start()
    try:

        def caught_up() -> Snapshot | None:
            snapshot = live.snapshot()
            trip = next((t for t in snapshot.trips if t.trip_id == kept), None)
            seen = (
                trip is not None
                and trip.finished
                and any(d.reason == letter.reason for d in snapshot.dead_letters)
                and any(m.model_version == version for m in snapshot.cumulative.values())
                and any(p.topic == "ml_predictions" for p in snapshot.problems)
                and decision in snapshot.decisions
                and drift in snapshot.model_events
            )
            return snapshot if seen else None

        snapshot = wait_for("the records produced", caught_up)
        assert isinstance(snapshot, Snapshot)
        trip = next(t for t in snapshot.trips if t.trip_id == kept)
        assert (trip.predicted_duration, trip.actual_duration, trip.error) == (600, 500, 100)
        assert aborted not in {t.trip_id for t in snapshot.trips}
        assert snapshot.malformed.get("ml_predictions", 0) >= 1
        assert live.assigned == {
            "new_trips",
            "ml_predictions",
            "finished_trips",
            "model_metrics",
            "model_deployments",
            "model_events",
            "dead_letters",
        }

        health = wait_for("a health check", live.health)
        assert health.reachable
        assert health.brokers_up == (1, 2, 3)
        assert health.brokers_down == 0
        assert {g.group for g in health.groups} == {"taxi-predictor", "taxi-aggregator"}
        assert all(g.lag is not None and g.partitions > 0 for g in health.groups)
    finally:
        live.stop()
