"""The model registry on the real cluster: records and decisions written and read back, each
test in topics of its own (a prefix), created with the project's settings."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import attrs
import numpy as np
import pytest
from confluent_kafka import Message

from taxi_events.testing import trip_started
from taxi_kafka import (
    MODEL_RECORD_MAX_BYTES,
    KafkaConfig,
    ensure_topics,
    project_topics,
    read_to_end,
)
from taxi_kafka.cluster import LocalCluster
from taxi_model import (
    Decider,
    RegistryRecord,
    generate_trips,
    load_model,
    read_card,
    train_and_save,
)
from taxi_services.registry import (
    ModelRegistry,
    RegistryError,
    RegistryTopics,
    ensure_champion,
    max_record_bytes,
    record_of,
)

# The broker's default message.max.bytes: what a record may be on a topic that does not raise it.
KAFKA_DEFAULT_MAX_BYTES = 1_048_588


def registry_topics(cluster: LocalCluster, prefix: str) -> RegistryTopics:
    """The registry's topics under `prefix`, created as `taxi topics ensure` creates them."""
    topics = RegistryTopics.prefixed(prefix)
    specs = [s for s in project_topics(prefix=prefix) if s.name in attrs.astuple(topics)]
    assert len(specs) == 2
    ensure_topics(cluster.admin(), specs)
    return topics


@pytest.fixture
def registry(kafka_cluster: LocalCluster, kafka_config: KafkaConfig) -> ModelRegistry:
    prefix = f"registry-{uuid.uuid4().hex[:8]}."
    return ModelRegistry(kafka_config, registry_topics(kafka_cluster, prefix))


@pytest.fixture(scope="module")
def second_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model, of other trips: another version."""
    path = tmp_path_factory.mktemp("second") / "taxi_pipeline.skops"
    train_and_save(generate_trips(rows=2000, seed=11), "synthetic rows=2000 seed=11", path)
    return path


def test_a_trained_model_bigger_than_kafkas_default_limit_round_trips(registry, trained_model_path):
    record = record_of(trained_model_path)
    # As the real sample's model (~2.6 MB): too big for a topic that keeps Kafka's default.
    assert len(record.encode()) > KAFKA_DEFAULT_MAX_BYTES
    assert registry.records() == {}
    registry.publish(record)

    assert registry.raw_records() == {record.version: record.encode()}
    read_back = registry.records()[record.version]
    assert read_back == record
    assert isinstance(read_back, RegistryRecord)
    trips = [trip_started(f"id{i}", pickup_latitude=40.70 + i / 100) for i in range(20)]
    expected = load_model(trained_model_path).predict(trips)
    assert np.array_equal(read_back.load().predict(trips), expected)


def test_decisions_come_back_in_the_order_they_were_made(
    registry, trained_model_path, second_model_path
):
    first, second = record_of(trained_model_path), record_of(second_model_path)
    for record in (first, second):
        registry.publish(record)
    decider = Decider("tester@host")
    made = []
    steps = [
        lambda h: decider.publish(h, first.version, "champion", "first"),
        lambda h: decider.publish(h, second.version, "challenger", "try it"),
        lambda h: decider.promote(h, second.version, {first.version, second.version}, "better"),
        lambda h: decider.rollback(h, "worse live"),
        lambda h: decider.publish(h, second.version, "challenger", "again"),
        lambda h: decider.withdraw(h, "enough"),
    ]
    for step in steps:
        decision = step(made)
        registry.decide(decision)
        made.append(decision)
    assert registry.history() == made
    assert [d.action for d in made] == [
        "publish",
        "publish",
        "promote",
        "rollback",
        "publish",
        "withdraw",
    ]
    assert (made[-1].champion, made[-1].challenger) == (first.version, None)


def test_ensure_champion_publishes_the_first_champion_once(
    registry, trained_model_path, second_model_path
):
    version = ensure_champion(registry, trained_model_path, "first start")
    assert version == read_card(trained_model_path).version
    assert list(registry.raw_records()) == [version]
    (decision,) = registry.history()
    assert (decision.action, decision.version, decision.champion) == ("publish", version, version)
    assert decision.challenger is None
    assert decision.reason == "first start"

    # Day two: the champion stays, whatever model file is at hand, and nothing is written.
    assert ensure_champion(registry, trained_model_path, "second start") == version
    assert ensure_champion(registry, second_model_path, "other model") == version
    assert registry.history() == [decision]
    assert list(registry.raw_records()) == [version]


def test_ensure_champion_does_not_write_a_version_again(registry, trained_model_path):
    record = record_of(trained_model_path)
    registry.publish(record)
    ensure_champion(registry, trained_model_path, "first start")
    versions = [m.key() for m in _registry_messages(registry)]
    assert versions == [record.version.encode()]


def _registry_messages(registry: ModelRegistry) -> list[Message]:
    """Every record of the registry topic as written, before any compaction."""
    return read_to_end(registry.kafka, registry.topics.registry)


def test_an_oversized_record_is_refused_before_it_is_sent(registry, trained_model_path):
    card = read_card(trained_model_path)
    too_big = RegistryRecord.of(card, os.urandom(MODEL_RECORD_MAX_BYTES))
    with pytest.raises(RegistryError, match="more than a registry record holds"):
        registry.publish(too_big)
    assert _registry_messages(registry) == []


def test_the_largest_record_allowed_is_taken_by_the_brokers(registry, trained_model_path):
    card = read_card(trained_model_path)
    empty = len(RegistryRecord.of(card, b"").encode())
    allowed = max_record_bytes(card.version) - empty
    # Incompressible: the limit holds on the bytes as sent.
    record = RegistryRecord.of(card, os.urandom(allowed))
    registry.publish(record)
    assert registry.raw_records() == {card.version: record.encode()}
    assert empty + allowed > MODEL_RECORD_MAX_BYTES - 4096
    with pytest.raises(RegistryError, match="more than a registry record holds"):
        registry.publish(RegistryRecord.of(card, os.urandom(allowed + 1)))


def test_a_registry_without_its_topics_says_how_to_create_them(kafka_config, trained_model_path):
    registry = ModelRegistry(kafka_config, RegistryTopics.prefixed(f"none-{uuid.uuid4().hex}."))
    for call in (registry.records, registry.history):
        with pytest.raises(RegistryError, match="taxi topics ensure"):
            call()
    with pytest.raises(RegistryError, match="taxi topics ensure"):
        ensure_champion(registry, trained_model_path, "no topics")
