"""Topic administration: create what is missing, report (never silently change) what differs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic

from taxi_kafka._pipeline import (
    CONSUMER_OFFSETS,
    INTERNAL_TOPICS,
    MIN_INSYNC_REPLICAS,
    NEW_TRIPS,
    PIPELINE_GROUPS,
    REPLICATION_FACTOR,
    TopicSpec,
    project_topics,
)
from taxi_kafka._retry import RetryPolicy

log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger("taxi_kafka.librdkafka")

# Metadata and admin calls while brokers start, stop or elect leaders.
ADMIN_RETRY = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=2.0, deadline=30.0, jitter=0.2)

# Errors that go away by themselves once brokers are up and leaders are elected. librdkafka marks
# few of them retriable() (not even a refused connection), hence the explicit list.
_TRANSIENT_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._WAIT_COORD,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_CONTROLLER,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.BROKER_NOT_AVAILABLE,
        # A newly elected leader whose high watermark has not caught up yet (KIP-207); Java's
        # clients retry it (OffsetNotAvailableException is a RetriableException).
        KafkaError.OFFSET_NOT_AVAILABLE,
    }
)


class NotReadyError(Exception):
    """A condition polled under a RetryPolicy does not hold yet."""


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying while a cluster settles."""
    if isinstance(exc, NotReadyError):
        return True
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return error.retriable() or error.code() in _TRANSIENT_CODES
    return False


class _DebugLog:
    """librdkafka logs every refused connection as an error. Brokers that come and go are the
    point of this cluster, so its lines go to DEBUG; real failures surface as exceptions."""

    def log(self, _level: int, msg: str, *args: object) -> None:
        _rdkafka_log.debug(msg, *args)


def _debug_error(error: KafkaError) -> None:
    _rdkafka_log.debug("librdkafka: %s", error)


QUIET_CLIENT_CONFIG: Mapping[str, Any] = {"logger": _DebugLog(), "error_cb": _debug_error}


def admin_client(bootstrap_servers: str, **config: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers, **QUIET_CLIENT_CONFIG, **config})


@dataclass(frozen=True)
class TopicState:
    """What a topic looks like on the cluster."""

    name: str
    partitions: int
    # The smallest replica count among its partitions (they normally agree).
    replication_factor: int
    min_insync_replicas: int | None


_COMPARED = ("partitions", "replication_factor", "min_insync_replicas")


def differences(spec: TopicSpec, state: TopicState, fields: Sequence[str] = _COMPARED) -> list[str]:
    """Human-readable differences between what a topic should be and what it is."""
    return [
        f"{name} is {getattr(state, name)}, expected {getattr(spec, name)}"
        for name in fields
        if getattr(state, name) != getattr(spec, name)
    ]


def topic_states(
    admin: AdminClient, names: Iterable[str], timeout: float = 10.0
) -> dict[str, TopicState]:
    """The current state of those of `names` that exist."""
    metadata: ClusterMetadata = admin.list_topics(timeout=timeout)
    present = [name for name in names if name in metadata.topics]
    if not present:
        return {}
    futures = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, name) for name in present],
        request_timeout=timeout,
    )
    min_isr: dict[str, int | None] = {}
    for resource, future in futures.items():
        entry = future.result().get("min.insync.replicas")
        min_isr[resource.name] = int(entry.value) if entry is not None else None
    states = {}
    for name in present:
        partitions = metadata.topics[name].partitions.values()
        states[name] = TopicState(
            name=name,
            partitions=len(partitions),
            replication_factor=min((len(p.replicas) for p in partitions), default=0),
            min_insync_replicas=min_isr[name],
        )
    return states


def _create(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> list[str]:
    """Create `specs`; returns the names this call created. A topic that turned out to exist
    already (metadata lagged, or someone else created it) is not among them."""
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=spec.topic_configs(),
        )
        for spec in specs
    ]
    futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
    return _done(futures, "created topic", unless=KafkaError.TOPIC_ALREADY_EXISTS)


def _done(futures: Mapping[str, Future[None]], what: str, *, unless: int) -> list[str]:
    """The names whose admin request took effect (each logged as `what`); a request that had
    nothing to do, failing with the `unless` error code, is left out; other failures raise."""
    done = []
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != unless:
                raise
            continue
        log.info("%s %s", what, name)
        done.append(name)
    return done


def _require_leaders(admin: AdminClient, names: Iterable[str], timeout: float) -> None:
    metadata = admin.list_topics(timeout=timeout)
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            raise NotReadyError(f"topic {name} is not in the metadata yet")
        if any(p.leader < 0 for p in topic.partitions.values()):
            raise NotReadyError(f"topic {name} has partitions without a leader")


def ensure_topics(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    *,
    retry: RetryPolicy = ADMIN_RETRY,
    timeout: float = 10.0,
) -> list[str]:
    """Create the missing topics of `specs` and wait until they have leaders; log a WARNING for
    each existing topic whose partitions, replication factor or min.insync.replicas differ.
    Existing topics are never changed. Returns the names created."""

    created: list[str] = []

    def attempt() -> list[str]:
        states = topic_states(admin, [spec.name for spec in specs], timeout)
        missing = [spec for spec in specs if spec.name not in states]
        if missing:
            new = _create(admin, missing, timeout)
            created.extend(new)
            _require_leaders(admin, [spec.name for spec in missing], timeout)
            if len(new) < len(missing):
                # Some existed after all: look again, so that their settings get checked.
                raise NotReadyError("the topic metadata lagged behind the cluster")
        for spec in specs:
            state = states.get(spec.name)
            diffs = differences(spec, state) if state else []
            if diffs:
                log.warning("topic %s differs (left unchanged): %s", spec.name, "; ".join(diffs))
        return created

    return retry.call(attempt, retryable=is_transient, what="ensure topics")


def create_internal_topics(
    settings: Mapping[str, Any], *, retry: RetryPolicy = ADMIN_RETRY, timeout: float = 10.0
) -> None:
    """Make the brokers create __consumer_offsets and __transaction_state now.

    They are created lazily, on the first group coordinator or transaction coordinator lookup;
    if that happens while a broker is down, creation fails. So we trigger both while all
    brokers are up: an offset fetch for a throwaway group and a throwaway init_transactions().
    `settings` are a full client config (bootstrap.servers, and TLS and SASL where needed).
    """
    warm_up = f"taxi-cluster-warm-up-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({**settings, "group.id": warm_up, **QUIET_CLIENT_CONFIG})
    try:
        retry.call(
            lambda: consumer.committed([TopicPartition(NEW_TRIPS, 0)], timeout=timeout),
            retryable=is_transient,
            what=f"create {CONSUMER_OFFSETS}",
        )
    finally:
        consumer.close()
    producer = Producer({**settings, "transactional.id": warm_up, **QUIET_CLIENT_CONFIG})
    retry.call(
        lambda: producer.init_transactions(timeout),
        retryable=is_transient,
        what="create __transaction_state",
    )


def internal_topic_problems(states: Mapping[str, TopicState]) -> list[str]:
    """What is wrong with Kafka's internal topics (their partition count is the broker's choice)."""
    problems = [f"{name} does not exist" for name in INTERNAL_TOPICS if name not in states]
    for name in INTERNAL_TOPICS:
        if name in states:
            expected = TopicSpec(name, 0, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS)
            fields = ("replication_factor", "min_insync_replicas")
            problems += [f"{name}: {d}" for d in differences(expected, states[name], fields)]
    return problems


class GroupInUseError(RuntimeError):
    """A consumer group to delete still has members: a service that reads it is running."""


@dataclass(frozen=True)
class Deleted:
    topics: list[str]
    groups: list[str]


def reset_pipeline(admin: AdminClient, prefix: str = "") -> Deleted:
    """Forget everything the pipeline (under `prefix`) has done: its topics, the producers'
    checkpoints and the aggregator's changelog among them, and its consumer groups."""
    return delete_topics_and_groups(
        admin,
        [spec.name for spec in project_topics(prefix=prefix)],
        [prefix + group for group in PIPELINE_GROUPS],
    )


def delete_topics_and_groups(
    admin: AdminClient,
    topics: Sequence[str],
    groups: Sequence[str],
    *,
    retry: RetryPolicy = ADMIN_RETRY,
    timeout: float = 10.0,
) -> Deleted:
    """Delete the consumer groups, then the topics, of those named that exist, and wait until
    the topics are gone from the metadata (so they can be created again at once).

    Groups go first: a group with members raises GroupInUseError before any topic is deleted,
    rather than leave a running service reading topics that vanish under it.
    """
    deleted_groups = _delete_groups(admin, groups, timeout)
    present = [name for name in topics if name in admin.list_topics(timeout=timeout).topics]
    if present:
        futures = admin.delete_topics(present, operation_timeout=timeout, request_timeout=timeout)
        _done(futures, "deleted topic", unless=KafkaError.UNKNOWN_TOPIC_OR_PART)

        def gone() -> None:
            left = set(present) & set(admin.list_topics(timeout=timeout).topics)
            if left:
                raise NotReadyError(f"topics still in the metadata: {sorted(left)}")

        retry.call(gone, retryable=is_transient, what="wait for deleted topics")
    return Deleted(present, deleted_groups)


def _delete_groups(admin: AdminClient, groups: Sequence[str], timeout: float) -> list[str]:
    if not groups:
        return []
    deleted = []
    futures = admin.delete_consumer_groups(list(groups), request_timeout=timeout)
    for group, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                continue
            if code == KafkaError.NON_EMPTY_GROUP:
                raise GroupInUseError(
                    f"consumer group {group} has members: stop the services that read it first"
                ) from exc
            raise
        log.info("deleted consumer group %s", group)
        deleted.append(group)
    return deleted
