"""pytest plugin (entry point `pytest11`): the real 3-broker cluster for tests that need Kafka.

- `kafka_cluster` (session): a LocalCluster in a temporary directory on free ports away from the
  default 19092, so a developer's own cluster is left alone. Started once, stopped at the end;
  its directory is deleted then, unless a test failed (its logs are kept for a post-mortem).
  Tests using it are marked `kafka` automatically (deselect them with `-m "not kafka"`).
- `secure_kafka_cluster` (session): another such cluster, on SASL_SSL with the project's ACLs,
  started by the first test that asks for it; `LocalCluster.client_settings(principal)` gives a
  principal's client settings.
- After each such test, any broker it left down is started again and the cluster is waited on
  until healthy, so a failure test cannot poison the tests after it; then the topics it made
  (its own namespaces included) are deleted.
- `make_topic(partitions=6, configs=None)` creates a uniquely named topic (RF 3, min ISR 2) and
  returns its name; `unique_topic` is one such topic.
- `kafka_config`: a taxi_kafka.KafkaConfig for the cluster.
- Plain helpers: `numbered` records, `produce_all` (idempotent, waits for every ack),
  `read_all` (a whole topic with read_committed, up to its end offsets) and `wait_for` (a
  condition, polled until it holds or a timeout passes).

Env TAXI_TEST_CLUSTER_BASE_PORT pins the ports instead of scanning for free ones.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import Message

from taxi_kafka._admin import delete_topics_and_groups, ensure_topics
from taxi_kafka._config import KafkaConfig
from taxi_kafka._pipeline import DEFAULT_PARTITIONS, TopicSpec
from taxi_kafka._table import read_to_end
from taxi_kafka.cluster import NODE_IDS, SASL_SSL, LocalCluster, free_base_port
from taxi_kafka.producer import KafkaProducer

log = logging.getLogger(__name__)

TEST_BASE_PORT_ENV = "TAXI_TEST_CLUSTER_BASE_PORT"
MakeTopic = Callable[..., str]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the real local 3-broker Kafka cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"kafka_cluster", "secure_kafka_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


def _session_cluster(
    request: pytest.FixtureRequest, name: str, base_port: int, security: str | None = None
) -> Iterator[LocalCluster]:
    # Not under pytest's basetemp: pytest deletes all but the newest three of those, and so a
    # concurrent pytest run would delete a running cluster's files. Laid out as `taxi up` lays
    # out TAXI_RUNTIME_DIR (cluster/, secrets/), so `taxi` commands given that find it.
    runtime_dir = Path(tempfile.mkdtemp(prefix=f"taxi-kafka-test-{name}-"))
    cluster = LocalCluster(
        runtime_dir / "cluster",
        base_port=base_port,
        security=security,
        secrets_dir=runtime_dir / "secrets",
    )
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
        if request.session.testsfailed:
            log.warning("the test %s's logs are kept in %s", name, runtime_dir)
        else:
            shutil.rmtree(runtime_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    base_port = int(os.environ.get(TEST_BASE_PORT_ENV) or free_base_port())
    yield from _session_cluster(request, "cluster", base_port)


@pytest.fixture(scope="session")
def secure_kafka_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A second cluster, on SASL_SSL with the project's ACLs; its secrets (CA, certificates,
    each principal's password and client config) are in secrets/ beside its runtime dir, where
    `taxi` commands run with TAXI_RUNTIME_DIR=<runtime dir's parent> look for them."""
    yield from _session_cluster(request, "secure-cluster", free_base_port(), SASL_SSL)


@pytest.fixture(autouse=True)
def _kafka_clean_up_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    if "kafka_cluster" not in request.fixturenames:
        yield
        return
    cluster: LocalCluster = request.getfixturevalue("kafka_cluster")
    before = _topic_names(cluster)
    yield
    if any(cluster.pid(n) is None for n in NODE_IDS):
        cluster.up()
    else:
        cluster.wait_healthy()
    # Left behind, a test's topics would slow every later test: the brokers' work per request
    # grows with the partitions they hold (see BROKER_SETTINGS).
    delete_topics_and_groups(cluster.admin(), sorted(_topic_names(cluster) - before), [])


def _topic_names(cluster: LocalCluster) -> set[str]:
    return set(cluster.admin().list_topics(timeout=30).topics)


@pytest.fixture
def make_topic(kafka_cluster: LocalCluster, request: pytest.FixtureRequest) -> MakeTopic:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:100]

    def make(partitions: int = DEFAULT_PARTITIONS, configs: Mapping[str, str] | None = None) -> str:
        name = f"test-{slug}-{uuid.uuid4().hex[:8]}"
        spec = TopicSpec(name, partitions, configs=dict(configs or {}))
        ensure_topics(kafka_cluster.admin(), [spec])
        return name

    return make


@pytest.fixture
def unique_topic(make_topic: MakeTopic) -> str:
    return make_topic()


@pytest.fixture
def kafka_config(kafka_cluster: LocalCluster) -> KafkaConfig:
    return KafkaConfig(kafka_cluster.bootstrap_servers)


def numbered(count: int, *, keys: int = 50, start: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: value i, key i mod `keys`; within a key the values increase."""
    return [(f"key-{i % keys}".encode(), str(i).encode()) for i in range(start, start + count)]


def produce_all(
    bootstrap_servers: str, topic: str, records: Iterable[tuple[bytes, bytes]], timeout: float = 60
) -> None:
    """Produce `records` (key, value) idempotently and wait until every one is acknowledged."""
    with KafkaProducer(KafkaConfig(bootstrap_servers), name="test producer") as producer:
        for key, value in records:
            producer.produce(topic, value, key)
        remaining = producer.flush(timeout)
    if remaining or producer.stats.failed:
        raise AssertionError(
            f"{remaining} undelivered, {producer.stats.failed} failed: {producer.stats.last_error}"
        )


def read_all(bootstrap_servers: str, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every committed record of `topic` up to its end offsets as of the call, read with
    read_committed: by partition, in offset order. Raises TimeoutError when the end is not
    reached in `timeout` seconds (say, a transaction is left open)."""
    return read_to_end(KafkaConfig(bootstrap_servers), topic, timeout)


T = TypeVar("T")


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 90.0, interval: float = 0.5
) -> T:
    """Poll `check` until it returns something truthy, and return that; AssertionError naming
    `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
