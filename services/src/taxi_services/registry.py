"""The model registry's Kafka edge: publish versions and deployment decisions, read them back.

The pure parts (record bytes, checks, decisions) are taxi_model's; this module only moves them
through `model_registry` and `model_deployments`, and puts together what `taxi model` shows and
does. Every operation reads the topics afresh.
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
from confluent_kafka import KafkaError, KafkaException, Message

from taxi_events import (
    DeploymentDecision,
    EventDecodeError,
    ModelMetrics,
    Role,
    Source,
    decode,
    encode,
)
from taxi_kafka import (
    MODEL_DEPLOYMENTS,
    MODEL_METRICS,
    MODEL_RECORD_MAX_BYTES,
    MODEL_REGISTRY,
    KafkaConfig,
    KafkaProducer,
    read_table,
    read_tail,
    read_to_end,
)
from taxi_model import (
    Decider,
    DeploymentError,
    ModelLoadError,
    RegistryRecord,
    Roles,
    TrainingProfile,
    current_roles,
    load_model,
    read_card,
)

log = logging.getLogger("taxi.registry")

T = TypeVar("T")

# What a record batch holds beside its one record's value and key: the batch header (61 bytes)
# and the record's own lengths and deltas (a few varints). The topic's max.message.bytes bounds
# the whole batch.
_BATCH_FRAMING = 512
# The clients that write model records: requests big enough for the topic's largest record, and
# no compression, so that the size checked before sending is the size the brokers check (lz4
# makes incompressible bytes slightly bigger).
MODEL_PRODUCER_SETTINGS: Mapping[str, Any] = {
    "message.max.bytes": MODEL_RECORD_MAX_BYTES + (1 << 20),
    "compression.type": "none",
}
# Cumulative metrics are looked for among this many of the last offsets of each partition of
# `model_metrics`: the aggregator writes a few records per source and window.
LIVE_METRICS_TAIL = 500
_TOPICS_HINT = (
    "create the topics with `taxi topics ensure` (with the same --topic-prefix); "
    "`taxi up` and `taxi cluster up` create them too"
)


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why and what to do."""


def whoami() -> str:
    """Who a decision is recorded as made by: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def max_record_bytes(version: str) -> int:
    """The most bytes a record's value (header and artifact) under `version` may have: a batch
    of it must fit the topic's max.message.bytes."""
    return MODEL_RECORD_MAX_BYTES - _BATCH_FRAMING - len(version.encode())


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
        self.kafka = kafka
        self.topics = topics or RegistryTopics()

    def raw_records(self) -> dict[str, bytes]:
        """Each version's record as stored, undecoded."""
        table = _reading(self.topics.registry, lambda: read_table(self.kafka, self.topics.registry))
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
        topic = self.topics.deployments
        history = []
        for message in _reading(topic, lambda: read_to_end(self.kafka, topic)):
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
        """Write a version's record as it is (a version already there is written again). A
        record bigger than the topic takes is refused before it is sent."""
        value = record.encode()
        limit = max_record_bytes(record.version)
        if len(value) > limit:
            raise RegistryError(
                f"model {record.version} is {len(value):,} bytes, more than a registry record "
                f"holds ({limit:,}). Train a smaller model."
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

        try:
            with KafkaProducer(
                self.kafka,
                settings=MODEL_PRODUCER_SETTINGS,
                on_delivery=delivered,
                name=f"{topic} producer",
            ) as producer:
                producer.produce(topic, value, key.encode())
                if producer.flush(60.0):
                    failures.append("not delivered within 60 s: are the brokers up?")
        except KafkaException as exc:
            failures.append(str(exc))
        if failures:
            raise RegistryError(f"writing to {topic} failed: {failures[0]}")


def _reading(topic: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except KeyError as exc:
        raise RegistryError(f"the topic {topic} does not exist: {_TOPICS_HINT}") from exc
    except (TimeoutError, KafkaException) as exc:
        raise RegistryError(f"reading {topic} failed ({exc}): are the brokers up?") from exc


class TrainingProfiles:
    """Each model version's training profile, from its card in the registry: what the
    aggregator's data-drift checks compare a version's live inputs with.

    A version is looked up when first asked for. The registry holds it by then: a predictor
    predicts with a version only after reading it there. A version the registry does not hold
    (it was reset, or the topic is missing) has no profile, and its inputs go unchecked.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._profiles: dict[str, TrainingProfile | None] = {}

    def __call__(self, version: str) -> TrainingProfile | None:
        if version not in self._profiles:
            self._profiles[version] = self._read(version)
        return self._profiles[version]

    def _read(self, version: str) -> TrainingProfile | None:
        try:
            records = self._registry.records()
        except RegistryError as exc:
            log.warning("no data-drift check for model %s: %s", version, exc)
            return None
        for known, record in records.items():
            if isinstance(record, RegistryRecord) and known not in self._profiles:
                self._profiles[known] = record.card.profile
        profile = self._profiles.get(version)
        if profile is None:
            log.warning(
                "no data-drift check for model %s: %s",
                version,
                "its card has no training profile (trained before profiles were recorded)"
                if version in self._profiles
                else "the registry does not hold it",
            )
        return profile


def record_of(model_path: Path) -> RegistryRecord:
    """A model file as a registry record, checked as the predictor will check it (so a model
    the predictors would refuse is refused here, before it is published)."""
    load_model(model_path)
    return RegistryRecord.of(read_card(model_path), model_path.read_bytes())


def ensure_champion(registry: ModelRegistry, model_path: Path, reason: str) -> str:
    """Publish the model file and make it champion if no version is champion yet; returns the
    champion's version (the one there already, if any). A version the registry holds already
    is not written again."""
    champion = current_roles(registry.history()).champion
    if champion is not None:
        return champion
    return publish_model(registry, record_of(model_path), "champion", reason=reason).version


# -- what `taxi model` does --------------------------------------------------------------------


@attrs.frozen
class Published:
    """What publishing a model did."""

    version: str
    written: bool  # False: the registry held the version already, and it was left as it was
    decision: DeploymentDecision | None  # the role it took, if it took one
    # With if_vacant: the version that holds the role, and keeps it.
    holder: str | None = None


def publish_model(
    registry: ModelRegistry,
    record: RegistryRecord,
    role: Role | None = None,
    *,
    if_vacant: bool = False,
    reason: str,
    actor: str | None = None,
) -> Published:
    """Add `record` to the registry unless its version is there already, and give it `role`
    (none: only add it). With `if_vacant` it takes the role only if no version holds it. A
    version holding the role already takes it again with no new decision."""
    history = registry.history()
    written = record.version not in registry.raw_records()
    if written:
        registry.publish(record)
    if role is None:
        return Published(record.version, written, None)
    roles = current_roles(history)
    holder = roles.champion if role == "champion" else roles.challenger
    if holder == record.version:
        return Published(record.version, written, None, holder)
    if if_vacant and holder is not None:
        return Published(record.version, written, None, holder)
    decision = _decide(
        registry,
        lambda decider, history: decider.publish(history, record.version, role, reason),
        actor,
        history,
    )
    return Published(record.version, written, decision)


def promote(
    registry: ModelRegistry, version: str, *, reason: str, actor: str | None = None
) -> DeploymentDecision:
    """Make `version` (or the one version it is a prefix of), a readable record of the
    registry, champion."""
    known = {v for v, record in registry.records().items() if isinstance(record, RegistryRecord)}
    version = resolve(known, version)
    return _decide(
        registry, lambda decider, history: decider.promote(history, version, known, reason), actor
    )


def rollback(
    registry: ModelRegistry, *, reason: str, actor: str | None = None
) -> DeploymentDecision:
    """Make the champion before the current one champion again."""
    return _decide(registry, lambda decider, history: decider.rollback(history, reason), actor)


def withdraw(
    registry: ModelRegistry, *, reason: str, actor: str | None = None
) -> DeploymentDecision:
    """Stop shadowing the challenger."""
    return _decide(registry, lambda decider, history: decider.withdraw(history, reason), actor)


def resolve(versions: Collection[str], version: str) -> str:
    """The one of `versions` that `version` names, in full or by a prefix; `version` as it is
    when it names none of them. RegistryError when it is the prefix of several."""
    if version in versions:
        return version
    matches = sorted(v for v in versions if v.startswith(version))
    if len(matches) > 1:
        raise RegistryError(
            f"{version} is the start of {len(matches)} versions: {', '.join(matches)}"
        )
    return matches[0] if matches else version


def _decide(
    registry: ModelRegistry,
    make: Callable[[Decider, list[DeploymentDecision]], DeploymentDecision],
    actor: str | None,
    history: list[DeploymentDecision] | None = None,
) -> DeploymentDecision:
    """Make a decision from `history` (read now if not given) by `actor` (or user@host), and
    write it."""
    if history is None:
        history = registry.history()
    try:
        decision = make(Decider(actor or whoami()), history)
    except DeploymentError as exc:
        raise RegistryError(str(exc)) from exc
    registry.decide(decision)
    return decision


# What the live figures are keyed by: the source, the model version, its role, and the
# challenger whose shadowed trips they are on (None: every trip the model predicted).
LiveKey = tuple[Source, str, Role, str | None]


def live_metrics(
    kafka: KafkaConfig, topic: str = MODEL_METRICS, per_partition: int = LIVE_METRICS_TAIL
) -> dict[LiveKey, ModelMetrics]:
    """The latest cumulative figures of each source, version, role (and challenger) among the
    last `per_partition` offsets of each partition of `topic`; empty if the topic does not
    exist. Records that do not decode are skipped."""
    try:
        messages = read_tail(kafka, topic, per_partition)
    except KeyError:
        return {}
    except KafkaException as exc:
        log.warning("the live metrics are not known: %s", exc)
        return {}
    latest: dict[LiveKey, ModelMetrics] = {}
    for message in messages:
        try:
            metrics = decode(message.value(), ModelMetrics)
        except EventDecodeError:
            continue
        if metrics.scope != "cumulative":
            continue
        key = (metrics.source, metrics.model_version, metrics.role, metrics.challenger_version)
        if key not in latest or latest[key].produced_at <= metrics.produced_at:
            latest[key] = metrics
    return latest


@attrs.frozen
class VersionView:
    """One version as `taxi model list` and `show` present it."""

    version: str
    size: int  # the stored record's bytes
    record: RegistryRecord | None  # None when it does not decode
    error: ModelLoadError | None
    role: Role | None
    decisions: Sequence[DeploymentDecision]  # the decisions about it, oldest first


@attrs.frozen
class RegistryView:
    roles: Roles
    versions: Sequence[VersionView]  # newest first (by the card's creation time)
    history: Sequence[DeploymentDecision]

    def get(self, version: str) -> VersionView:
        """The version `version` names, in full or by a prefix (see `resolve`)."""
        by_version = {v.version: v for v in self.versions}
        found = by_version.get(resolve(by_version, version))
        if found is None:
            raise RegistryError(
                f"there is no version {version} in the registry. `taxi model list` shows the "
                "versions there."
            )
        return found


def registry_view(registry: ModelRegistry) -> RegistryView:
    """Every version in the registry with its role and the decisions about it."""
    history = registry.history()
    roles = current_roles(history)
    versions = []
    for version, value in registry.raw_records().items():
        try:
            record: RegistryRecord | None = RegistryRecord.decode(value, version)
            error = None
        except ModelLoadError as exc:
            record, error = None, exc
        decisions = decisions_about(history, version)
        role = _role(roles, version)
        versions.append(VersionView(version, len(value), record, error, role, decisions))
    versions.sort(key=lambda v: v.record.card.created_at if v.record else "", reverse=True)
    return RegistryView(roles, versions, history)


def decisions_about(
    history: Sequence[DeploymentDecision], version: str
) -> list[DeploymentDecision]:
    """The decisions that acted on `version` or changed its role (a promotion of another
    version ends a champion's reign), oldest first."""
    about = []
    before = Roles()
    for decision in history:
        after = Roles(decision.champion, decision.challenger)
        if decision.version == version or _role(before, version) != _role(after, version):
            about.append(decision)
        before = after
    return about


def _role(roles: Roles, version: str) -> Role | None:
    if version == roles.champion:
        return "champion"
    if version == roles.challenger:
        return "challenger"
    return None
