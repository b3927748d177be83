"""Topic specs and the pure parts of topic administration."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from taxi_kafka._admin import (
    NotReadyError,
    TopicState,
    differences,
    internal_topic_problems,
    is_transient,
)
from taxi_kafka._pipeline import PROJECT_TOPICS, TopicSpec, project_topics


def test_project_topics_follow_the_contract():
    assert [spec.name for spec in PROJECT_TOPICS] == [
        "new_trips",
        "finished_trips",
        "ml_predictions",
        "shadow_predictions",
        "model_metrics",
        "dead_letters",
        "producer_checkpoints",
        "aggregator_changelog",
        "model_registry",
        "model_deployments",
        "model_events",
        "trainer_state",
    ]
    for spec in PROJECT_TOPICS:
        assert (spec.replication_factor, spec.min_insync_replicas) == (3, 2)
        assert spec.topic_configs()["min.insync.replicas"] == "2"
    event_topics = [spec for spec in PROJECT_TOPICS if spec.co_partitioned]
    assert {spec.partitions for spec in event_topics} == {6}
    assert all(spec.topic_configs() == {"min.insync.replicas": "2"} for spec in event_topics)
    state_topics = [spec for spec in PROJECT_TOPICS if not spec.co_partitioned]
    assert {spec.partitions for spec in state_topics} == {1}
    # The state and the models are compacted to their latest record per key; the deployment
    # decisions and the model events are history, kept whole.
    assert {spec.name: spec.configs.get("cleanup.policy") for spec in state_topics} == {
        "producer_checkpoints": "compact",
        "aggregator_changelog": "compact",
        "model_registry": "compact",
        "model_deployments": None,
        "model_events": None,
        "trainer_state": "compact",
    }
    history = {spec.name: spec.configs.get("retention.ms") for spec in PROJECT_TOPICS[-3:-1]}
    assert history == {"model_deployments": "-1", "model_events": "-1"}
    # A whole model fits one registry record, a whole window of trips the trainer's state.
    for name in ("model_registry", "trainer_state"):
        spec = next(spec for spec in PROJECT_TOPICS if spec.name == name)
        assert int(spec.configs["max.message.bytes"]) >= 16 * 1024 * 1024
    resized = project_topics(12)
    assert {spec.partitions for spec in resized if spec.co_partitioned} == {12}
    assert {spec.partitions for spec in resized if not spec.co_partitioned} == {1}
    prefixed = project_topics(prefix="run7.")
    assert [spec.name for spec in prefixed] == [f"run7.{spec.name}" for spec in PROJECT_TOPICS]
    assert [spec.configs for spec in prefixed] == [spec.configs for spec in PROJECT_TOPICS]


def test_spec_configs_keep_min_isr_authoritative():
    spec = TopicSpec("c", configs={"cleanup.policy": "compact", "min.insync.replicas": "1"})
    assert spec.topic_configs() == {"cleanup.policy": "compact", "min.insync.replicas": "2"}


def test_differences_name_each_setting():
    spec = TopicSpec("t")
    assert differences(spec, TopicState("t", 6, 3, 2)) == []
    assert differences(spec, TopicState("t", 3, 1, None)) == [
        "partitions is 3, expected 6",
        "replication_factor is 1, expected 3",
        "min_insync_replicas is None, expected 2",
    ]


def test_internal_topic_problems():
    good = {
        "__consumer_offsets": TopicState("__consumer_offsets", 50, 3, 2),
        "__transaction_state": TopicState("__transaction_state", 50, 3, 2),
    }
    assert internal_topic_problems(good) == []
    bad = {"__consumer_offsets": TopicState("__consumer_offsets", 50, 1, 1)}
    assert internal_topic_problems(bad) == [
        "__transaction_state does not exist",
        "__consumer_offsets: replication_factor is 1, expected 3",
        "__consumer_offsets: min_insync_replicas is 1, expected 2",
    ]


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (NotReadyError("soon"), True),
        (KafkaException(KafkaError(KafkaError._TRANSPORT)), True),
        (KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)), True),
        (KafkaException(KafkaError(KafkaError.OFFSET_NOT_AVAILABLE)), True),
        (KafkaException(KafkaError(KafkaError.INVALID_REPLICATION_FACTOR)), False),
        (ValueError("no"), False),
    ],
)
def test_transient_errors(exc, transient):
    assert is_transient(exc) is transient
