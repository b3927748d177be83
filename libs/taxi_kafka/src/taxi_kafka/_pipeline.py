"""The pipeline's names and numbers, in one place: its topics and the settings every
one of them must have, its consumer groups, each service's default ports and how an instance is
named. The services, the dashboard, `taxi status` and the tests that check docker-compose.yml
and the Prometheus configs all read them here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

NEW_TRIPS = "new_trips"
FINISHED_TRIPS = "finished_trips"
ML_PREDICTIONS = "ml_predictions"
# A challenger's predictions of the same trips, keyed like ml_predictions, written in the same
# transactions.
SHADOW_PREDICTIONS = "shadow_predictions"
MODEL_METRICS = "model_metrics"
DEAD_LETTERS = "dead_letters"
# Compacted state topics: each producer's replay position, and the aggregator's join and windows.
PRODUCER_CHECKPOINTS = "producer_checkpoints"
AGGREGATOR_CHANGELOG = "aggregator_changelog"
COMPACTED = {"cleanup.policy": "compact"}
# The models: one record per version (its card, artifact and sha256), compacted; and the ordered
# log of deployment decisions (which versions are champion and challenger, who said so and why),
# kept whole, since each decision is history.
MODEL_REGISTRY = "model_registry"
MODEL_DEPLOYMENTS = "model_deployments"
# A record fits a whole model artifact (`taxi train` writes 1-10 MB); the broker's default of
# 1 MB does not. Publishers refuse anything larger, and the clients that write and read these
# records raise their own limits to match.
MODEL_RECORD_MAX_BYTES = 32 * 1024 * 1024
KEPT_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
# What happened to the models, with its evidence: drift detected, candidates trained, automatic
# promotions and rollbacks. One ordered partition, kept whole, like the decisions.
MODEL_EVENTS = "model_events"
# The trainer's restart state: its window of labelled trips, one record, written with every
# transaction (compacted; a window of 50,000 trips is a few MB).
TRAINER_STATE = "trainer_state"

# The pipeline's consumer groups and the topics each reads (before any --topic-prefix).
PREDICTOR_GROUP = "taxi-predictor"
AGGREGATOR_GROUP = "taxi-aggregator"
# Not a PIPELINE_GROUP: the pipeline runs without it, and its lag is thousands of trips by
# design (it trains on windows of them).
TRAINER_GROUP = "taxi-trainer"
PIPELINE_GROUPS: Mapping[str, tuple[str, ...]] = {
    PREDICTOR_GROUP: (NEW_TRIPS,),
    AGGREGATOR_GROUP: (ML_PREDICTIONS, SHADOW_PREDICTIONS, FINISHED_TRIPS),
}

# Each service's Prometheus /metrics endpoint: `taxi up` and docker-compose.yml serve on these,
# observability/prometheus*.yml scrape them, `taxi status` probes them.
METRICS_PORTS: Mapping[str, int] = {
    "producer-train": 9101,
    "producer-test": 9102,
    "predictor": 9103,
    "aggregator": 9104,
    "dashboard": 9105,
    "trainer": 9106,
}
DASHBOARD_PORT = 8501
PROMETHEUS_PORT = 9090
# The interface the metrics endpoints listen on unless told otherwise: loopback only. A
# container publishing its port passes 0.0.0.0 (docker-compose.yml).
METRICS_ADDRESS = "127.0.0.1"

# An instance's name (--instance, $TAXI_INSTANCE) must stay the same across its restarts: it
# fences its predecessor's transactions and resumes its checkpoints. `taxi up` names every
# service it starts UP_INSTANCE, docker-compose.yml COMPOSE_INSTANCE; the default is the host name.
UP_INSTANCE = "up"
COMPOSE_INSTANCE = "compose"


def instance_id(service: str, instance: str) -> str:
    """The stable identity of one instance of a service: its transactional.id (and, for
    consumers, its group.instance.id). Two live processes must never share it."""
    return f"taxi-{service}-{instance}"


def coordinator_partition(key: str, partitions: int) -> int:
    """The partition of __consumer_offsets (for a group id) or __transaction_state (for a
    transactional.id) whose leader coordinates `key`: Kafka's
    `Utils.abs(key.hashCode()) % partitions`, on Java's String.hashCode (UTF-16 code units)."""
    units = key.encode("utf-16-be")
    code = 0
    for i in range(0, len(units), 2):
        code = (31 * code + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return (code & 0x7FFFFFFF) % partitions


DEFAULT_PARTITIONS = 6
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2

# Kafka's own topics, created lazily by the brokers; they need RF 3 / min ISR 2 as well.
CONSUMER_OFFSETS = "__consumer_offsets"
TRANSACTION_STATE = "__transaction_state"
INTERNAL_TOPICS = (CONSUMER_OFFSETS, TRANSACTION_STATE)


@dataclass(frozen=True)
class TopicSpec:
    """What a topic should look like. `configs` holds topic settings beyond min.insync.replicas
    (for example cleanup.policy=compact for a changelog)."""

    name: str
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = REPLICATION_FACTOR
    min_insync_replicas: int = MIN_INSYNC_REPLICAS
    configs: Mapping[str, str] = field(default_factory=dict, hash=False)
    # False for state topics read whole by one instance: --partitions leaves them alone.
    co_partitioned: bool = True

    def topic_configs(self) -> dict[str, str]:
        return {**self.configs, "min.insync.replicas": str(self.min_insync_replicas)}


# The one list of project topics; add new ones (e.g. the aggregator's changelog) here.
PROJECT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(NEW_TRIPS),
    TopicSpec(FINISHED_TRIPS),
    TopicSpec(ML_PREDICTIONS),
    TopicSpec(SHADOW_PREDICTIONS),
    TopicSpec(MODEL_METRICS),
    TopicSpec(DEAD_LETTERS),
    TopicSpec(PRODUCER_CHECKPOINTS, partitions=1, configs=COMPACTED, co_partitioned=False),
    TopicSpec(AGGREGATOR_CHANGELOG, partitions=1, configs=COMPACTED, co_partitioned=False),
    TopicSpec(
        MODEL_REGISTRY,
        partitions=1,
        configs={**COMPACTED, "max.message.bytes": str(MODEL_RECORD_MAX_BYTES)},
        co_partitioned=False,
    ),
    TopicSpec(MODEL_DEPLOYMENTS, partitions=1, configs=KEPT_FOREVER, co_partitioned=False),
    TopicSpec(MODEL_EVENTS, partitions=1, configs=KEPT_FOREVER, co_partitioned=False),
    TopicSpec(
        TRAINER_STATE,
        partitions=1,
        # Small segments, so that compaction soon drops the superseded states.
        configs={
            **COMPACTED,
            "max.message.bytes": str(MODEL_RECORD_MAX_BYTES),
            "segment.bytes": str(64 * 1024 * 1024),
        },
        co_partitioned=False,
    ),
)


def project_topics(partitions: int = DEFAULT_PARTITIONS, prefix: str = "") -> list[TopicSpec]:
    """PROJECT_TOPICS with another partition count for the co-partitioned ones, each name
    after `prefix` (the services' --topic-prefix)."""
    return [
        dataclasses.replace(
            spec,
            name=prefix + spec.name,
            partitions=partitions if spec.co_partitioned else spec.partitions,
        )
        for spec in PROJECT_TOPICS
    ]
