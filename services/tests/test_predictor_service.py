"""taxi-predictor as a process on the real 3-broker cluster, with --deliberate-aborts: Jepsen's
aborted reads. Batches holding a marker trip are written with poison records and aborted, then
predicted again; read_committed readers must see every trip's prediction once and no poison,
while the log (read read_uncommitted) holds the poison. The test keeps to topics and groups of
its own (--topic-prefix) on the session's shared cluster."""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, datetime

import pytest

from taxi_events import POISON_PREFIX, Prediction, decode, encode
from taxi_events import testing as events
from taxi_kafka import KafkaConfig, ensure_topics, project_topics, read_to_end
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import produce_all, read_all, wait_for
from taxi_services.registry import ModelRegistry, RegistryTopics, ensure_champion

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRIPS = 600
EVERY = 7  # a marker: a trip whose id's CRC32 this divides


def trips(first: int, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of TripStarted records, each trip its own."""
    records = []
    for n in range(first, first + count):
        trip = events.trip_started(
            f"id{n:07d}",
            vendor_id=1 + n % 2,
            passenger_count=1 + n % 4,
            produced_at=datetime.now(UTC),
        )
        records.append((trip.trip_id.encode(), encode(trip)))
    return records


def test_no_record_of_a_deliberately_aborted_batch_is_ever_read_committed(
    kafka_cluster: LocalCluster, shared_services, trained_model_path
):
    prefix = f"predictor-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    shared_services.env["TAXI_TOPIC_PREFIX"] = prefix
    config = KafkaConfig(kafka_cluster.bootstrap_servers)
    ensure_champion(ModelRegistry(config, RegistryTopics.prefixed(prefix)), trained_model_path, "t")
    new_trips, predictions = prefix + "new_trips", prefix + "ml_predictions"
    ids = [f"id{n:07d}" for n in range(TRIPS)]
    markers = {t for t in ids if zlib.crc32(t.encode()) % EVERY == 0}

    def committed() -> list[str]:
        return [m.key().decode() for m in read_all(config.bootstrap_servers, predictions)]

    try:
        # Half before the predictor starts (one backlog), half while it runs.
        produce_all(config.bootstrap_servers, new_trips, trips(0, TRIPS // 2))
        shared_services.start(
            "taxi-predictor", "--instance", "p1", "--deliberate-aborts", str(EVERY)
        )
        wait_for("the first half's predictions", lambda: len(committed()) >= TRIPS // 2, 120)
        produce_all(config.bootstrap_servers, new_trips, trips(TRIPS // 2, TRIPS - TRIPS // 2))
        wait_for("every prediction", lambda: len(committed()) >= TRIPS, 120)
    finally:
        codes = shared_services.stop_all()
    assert codes == [0]

    # read_committed: every trip's prediction once, no poison.
    seen = read_all(config.bootstrap_servers, predictions)
    keys = [m.key().decode() for m in seen]
    assert not [key for key in keys if key.startswith(POISON_PREFIX)]
    assert sorted(keys) == ids
    assert {decode(m.value(), Prediction).trip_id for m in seen} == set(ids)
    # read_uncommitted: the aborts wrote poison for markers only, each once, and the aborted
    # batches' real predictions too; so the check above could have failed.
    log = read_to_end(config, predictions, isolation_level="read_uncommitted")
    poison = [m.key().decode() for m in log if m.key().decode().startswith(POISON_PREFIX)]
    assert poison
    assert len(poison) == len(set(poison))
    assert {key.removeprefix(POISON_PREFIX) for key in poison} <= markers
    assert len(log) - len(poison) > TRIPS
