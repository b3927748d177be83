"""The model registry's Kafka edge: publish versions and deployment decisions, read them back.

The pure parts (record bytes, checks, decisions) are taxi_model's; this module only moves them
through `model_registry` and `model_deployments`.
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from confluent_kafka import KafkaError, Message

from taxi_events import DeploymentDecision, EventDecodeError, decode, encode
from taxi_kafka import (
    MODEL_DEPLOYMENTS,
    MODEL_RECORD_MAX_BYTES,
    MODEL_REGISTRY,
    KafkaConfig,
    KafkaProducer,
    read_table,
    read_to_end,
)
from taxi_model import (
    Decider,
    ModelLoadError,
    RegistryRecord,
    current_roles,
    load_model,
    read_card,
)

log = logging.getLogger("taxi.registry")

# Room for the record's header and the batch around it.
_RECORD_OVERHEAD = 1 << 20
# What the clients that write or read model records need beyond their defaults: records up to
# the topic's limit.
MODEL_PRODUCER_SETTINGS: Mapping[str, Any] = {
    "message.max.bytes": MODEL_RECORD_MAX_BYTES + _RECORD_OVERHEAD
}


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why and what to do."""


def whoami() -> str:
    """Who a decision is recorded as made by: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@attrs.frozen
class RegistryTopics:
    registry: str = MODEL_REGISTRY
    deployments: str = MODEL_DEPLOYMENTS

    @classmethod
    def prefixed(cls, prefix: str) -> RegistryTopics:
        return cls(prefix + MODEL_REGISTRY, prefix + MODEL_DEPLOYMENTS)


class ModelRegistry:
    """Reads and writes the registry topics of one cluster. Each call reads afresh."""

    def __init__(self, kafka: KafkaConfig, topics: RegistryTopics | None = None) -> None:
        self._kafka = kafka
        self.topics = topics or RegistryTopics()

    def raw_records(self) -> dict[str, bytes]:
        """Each version's record as stored, undecoded."""
        table = read_table(self._kafka, self.topics.registry)
        return {key.decode("utf-8", "replace"): value for key, value in table.items()}

    def records(self) -> dict[str, RegistryRecord | ModelLoadError]:
        """Each version's decoded record, or why it does not decode."""
        decoded: dict[str, RegistryRecord | ModelLoadError] = {}
        for version, value in self.raw_records().items():
            try:
                decoded[version] = RegistryRecord.decode(value, version)
            except ModelLoadError as exc:
                decoded[version] = exc
        return decoded

    def history(self) -> list[DeploymentDecision]:
        """Every deployment decision, oldest first; one that does not decode is logged and
        skipped."""
        history = []
        for message in read_to_end(self._kafka, self.topics.deployments):
            try:
                history.append(decode(message.value(), DeploymentDecision))
            except EventDecodeError as exc:
                log.error(
                    "skipping an unreadable deployment decision at offset %d: %s",
                    message.offset(),
                    exc,
                )
        return history

    def publish(self, record: RegistryRecord) -> None:
        """Write a version's record (a version already there is written again, unchanged)."""
        value = record.encode()
        if len(value) > MODEL_RECORD_MAX_BYTES:
            raise RegistryError(
                f"model {record.version} is {len(value):,} bytes, more than a registry record "
                f"holds ({MODEL_RECORD_MAX_BYTES:,}). Train a smaller model."
            )
        self._write(self.topics.registry, value, record.version)
        log.info("published model %s (%s bytes)", record.version, f"{len(value):,}")

    def decide(self, decision: DeploymentDecision) -> None:
        self._write(self.topics.deployments, encode(decision), decision.version)
        log.info(
            "%s %s by %s: champion %s, challenger %s (%s)",
            decision.action,
            decision.version,
            decision.actor,
            decision.champion,
            decision.challenger,
            decision.reason,
        )

    def _write(self, topic: str, value: bytes, key: str) -> None:
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(str(error))

        with KafkaProducer(
            self._kafka,
            settings=MODEL_PRODUCER_SETTINGS,
            on_delivery=delivered,
            name=f"{topic} producer",
        ) as producer:
            producer.produce(topic, value, key.encode())
            if producer.flush(60.0):
                failures.append("not delivered within 60 s: are the brokers up?")
        if failures:
            raise RegistryError(f"writing to {topic} failed: {failures[0]}")


def record_of(model_path: Path) -> RegistryRecord:
    """A model file as a registry record, checked as the predictor will check it (so a model
    the predictors would refuse is refused here, before it is published)."""
    load_model(model_path)
    return RegistryRecord.of(read_card(model_path), model_path.read_bytes())


def ensure_champion(registry: ModelRegistry, model_path: Path, reason: str) -> str:
    """Publish the model file and make it champion if no version is champion yet; returns the
    champion's version (the one there already, if any)."""
    history = registry.history()
    roles = current_roles(history)
    if roles.champion is not None:
        return roles.champion
    record = record_of(model_path)
    if record.version not in registry.raw_records():
        registry.publish(record)
    registry.decide(Decider(whoami()).publish(history, record.version, "champion", reason))
    return record.version
