"""Where the bench runs: a scratch cluster or an existing one, and namespaces of its own on it.

Every part of a run gets a namespace: a topic prefix (`--topic-prefix` of the services) under
which its own new_trips, ml_predictions, ... and consumer groups live. So parts never see each
other's records, and a pipeline already running on an existing cluster is never touched. The
namespaces' topics are deleted at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from taxi_kafka import (
    BOOTSTRAP_ENV,
    DEAD_LETTERS,
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    MODEL_DEPLOYMENTS,
    MODEL_REGISTRY,
    NEW_TRIPS,
    PRODUCER_CHECKPOINTS,
    PROJECT_TOPICS,
    SHADOW_PREDICTIONS,
    KafkaConfig,
    KafkaProducer,
    TopicSpec,
    admin_client,
    ensure_grants,
    ensure_topics,
    pipeline_grants,
)
from taxi_kafka.cluster import PLAINTEXT, LocalCluster, scratch_cluster

log = logging.getLogger(__name__)

# A deadline for writing a backlog, so a stuck cluster fails the run instead of hanging it.
FILL_TIMEOUT = 600.0
# The topics the predictor and the producer use.
SERVICE_TOPICS = (
    NEW_TRIPS,
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    SHADOW_PREDICTIONS,
    DEAD_LETTERS,
    PRODUCER_CHECKPOINTS,
    MODEL_REGISTRY,
    MODEL_DEPLOYMENTS,
)


@dataclass(frozen=True)
class BenchCluster:
    config: KafkaConfig  # the bench's own clients: admin on a secure scratch cluster
    kafka_version: str | None  # None: an existing cluster, whose version the client can't see
    scratch: LocalCluster | None = None

    @property
    def security(self) -> str:
        return self.scratch.security if self.scratch else PLAINTEXT

    def service_env(self, principal: str) -> dict[str, str]:
        """A measured process's environment: on a secure cluster, as `principal`."""
        if self.scratch is None:  # an existing cluster: the settings in our environment
            return {BOOTSTRAP_ENV: self.config.bootstrap_servers}
        return self.scratch.service_env(principal)


@contextlib.contextmanager
def cluster_at(bootstrap_servers: str | None, security: str = PLAINTEXT) -> Iterator[BenchCluster]:
    """The cluster at `bootstrap_servers`, or a fresh local one of `security` (stopped and
    deleted after)."""
    if bootstrap_servers:
        yield BenchCluster(KafkaConfig.from_env(bootstrap_servers=bootstrap_servers), None)
        return
    log.info("starting a scratch 3-broker cluster (%s) on free ports", security)
    with scratch_cluster("taxi-bench-cluster-", security=security) as cluster:
        yield BenchCluster(cluster.kafka_config(), cluster.status().kafka_version, cluster)


class Backlog:
    """Records written to a topic in one open transaction: invisible to read_committed
    readers until `release()`, when they all appear at once. So readers can join first and
    then drain a full backlog, with nothing written while they are measured."""

    def __init__(
        self, config: KafkaConfig, topic: str, records: Iterable[tuple[bytes, bytes]]
    ) -> None:
        self.topic = topic
        # Per partition, the offset of its first record and the one after its last.
        self.begins: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self._producer = KafkaProducer(
            config,
            transactional_id=f"taxi-bench-backlog-{uuid.uuid4().hex}",
            # Held open while readers start: up to the brokers' default maximum (15 min).
            settings={"transaction.timeout.ms": 900_000},
            on_delivery=self._delivered,
            name=f"{topic} backlog",
        )
        client = self._producer.client
        client.init_transactions(FILL_TIMEOUT)
        client.begin_transaction()
        self.count = 0
        for key, value in records:
            self._producer.produce(topic, value, key)
            self.count += 1
        if self._producer.flush(FILL_TIMEOUT) or self._producer.stats.failed:
            raise RuntimeError(f"writing to {topic} failed: {self._producer.stats.last_error}")

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            partition, offset = message.partition(), message.offset()
            # confluent_kafka types them Optional; a delivered record has both.
            assert partition is not None
            assert offset is not None
            self.begins[partition] = min(self.begins.get(partition, offset), offset)
            self.ends[partition] = max(self.ends.get(partition, 0), offset + 1)

    def release(self) -> None:
        """Commit: every record becomes visible."""
        self._producer.client.commit_transaction(FILL_TIMEOUT)
        self._producer.close()

    def abort(self) -> None:
        """Drop the records (after a failure), so no open transaction is left behind."""
        try:
            self._producer.client.abort_transaction(FILL_TIMEOUT)
        except KafkaException as exc:
            log.warning("could not abort the backlog of %s: %s", self.topic, exc)
        self._producer.close()


def write_to_each_partition(
    config: KafkaConfig, topic: str, partitions: int, value: bytes, key_prefix: bytes
) -> int:
    """One record with `value` in each partition of `topic`, keyed `key_prefix` + its
    partition, committed (no transaction): a design's warm-up. Returns how many."""
    producer = KafkaProducer(config, name=f"{topic} warm-up")
    try:
        for partition in range(partitions):
            key = key_prefix + str(partition).encode()
            producer.client.produce(topic, value, key, partition=partition)
        if producer.flush(FILL_TIMEOUT) or producer.stats.failed:
            raise RuntimeError(f"writing to {topic} failed: {producer.stats.last_error}")
    finally:
        producer.close()
    return partitions


class Namespaces:
    """Topic prefixes for the parts of one run, their topics created on demand and deleted
    by `delete_all`."""

    def __init__(self, admin: AdminClient, run_id: str, *, grant: bool = False) -> None:
        """With `grant` (a secure cluster), each namespace's topics and groups come with the
        services' ACLs, as `taxi topics ensure --topic-prefix` grants them."""
        self.admin = admin
        self._run_id = run_id
        self._grant = grant
        self._topics: list[str] = []

    @property
    def run_prefix(self) -> str:
        """What every topic and group name of this run starts with."""
        return f"taxi-bench-{self._run_id}-"

    @classmethod
    def on(cls, cluster: BenchCluster, run_id: str) -> Namespaces:
        config = cluster.config
        admin = admin_client(config.bootstrap_servers, **config.settings)
        return cls(admin, run_id, grant=cluster.security != PLAINTEXT)

    def create(self, part: str, topics: Iterable[str] = SERVICE_TOPICS) -> str:
        """A new namespace: its prefix, with `topics` (names under the prefix) created as the
        project's topic of that name is, or else like new_trips."""
        prefix = f"{self.run_prefix}{part}."
        project = {spec.name: spec for spec in PROJECT_TOPICS}
        specs = [
            dataclasses.replace(project.get(name, TopicSpec(name)), name=prefix + name)
            for name in topics
        ]
        self._topics += [spec.name for spec in specs]
        ensure_topics(self.admin, specs)
        if self._grant:
            ensure_grants(self.admin, pipeline_grants(prefix))
        return prefix

    def delete_all(self, timeout: float = 30.0) -> None:
        """Delete the run's topics and consumer groups (call once its clients are closed)."""
        groups = [
            g.group_id
            for g in self.admin.list_consumer_groups(request_timeout=timeout).result().valid
            if g.group_id.startswith(self.run_prefix)
        ]
        # And the topics a design made for itself, named after its group (quix-streams'
        # repartition and changelog topics: `repartition__<group>--...`).
        made = [
            name
            for name in self.admin.list_topics(timeout=timeout).topics
            if self.run_prefix in name and name not in self._topics
        ]
        self._topics += made
        doomed: dict[str, Future[Any]] = {}
        if self._topics:
            doomed |= self.admin.delete_topics(self._topics, operation_timeout=timeout)
        if groups:
            doomed |= self.admin.delete_consumer_groups(groups, request_timeout=timeout)
        for name, future in doomed.items():
            try:
                future.result()
            except KafkaException as exc:
                log.warning("could not delete the bench's %s: %s", name, exc)
        log.info("deleted the bench's %d topics and %d groups", len(self._topics), len(groups))
        self._topics = []
