"""The secure cluster against bad actors: each is refused with an error a user would understand,
on the client (librdkafka's code) and in the brokers' logs, and nothing is written."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import taxi_kafka
from taxi_kafka import (
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    NEW_TRIPS,
    AuthorizationError,
    KafkaConfig,
    read_to_end,
    throwaway_group,
)
from taxi_kafka.cluster import NODE_IDS, LocalCluster
from taxi_kafka.testing import wait_for

pytestmark = pytest.mark.slow

# Long enough for librdkafka to connect and be refused, short enough not to wait out retries.
ATTEMPT_S = 8.0


@dataclass
class Attempt:
    """What a client saw: the error codes of its error callback and of its deliveries, and
    their messages and librdkafka's log lines."""

    codes: set[int]
    messages: list[str]

    def log(self, _level: int, fmt: str, *args: object) -> None:
        """librdkafka's log lines (the client's `logger`), as a user would see them."""
        self.messages.append(fmt % args)

    def note(self, error: KafkaError | None) -> None:
        if error is not None:
            self.codes.add(error.code())
            self.messages.append(error.str())

    @property
    def refused(self) -> bool:
        return bool(self.codes) or any(" FAIL " in f" {line}" for line in self.messages)


def attempt_produce(settings: dict[str, Any], topic: str = NEW_TRIPS) -> Attempt:
    """Produce one record, waiting until it is delivered or the client is refused."""
    seen = Attempt(set(), [])
    producer = Producer(
        {**settings, "error_cb": seen.note, "logger": seen, "message.timeout.ms": 30_000}
    )
    delivered: list[KafkaError | None] = []
    producer.produce(topic, b"intruder", on_delivery=lambda error, _msg: delivered.append(error))
    deadline = time.monotonic() + ATTEMPT_S
    while not delivered and not seen.refused and time.monotonic() < deadline:
        producer.poll(0.2)
    # The error callback follows the log line it comes with.
    end = time.monotonic() + 2.0
    while not seen.codes and time.monotonic() < end:
        producer.poll(0.2)
    for error in delivered:
        seen.note(error)
    # `is None`, not ==: KafkaError's == cannot compare with None.
    if any(error is None for error in delivered):
        seen.messages.append("delivered")
    producer.purge()
    producer.flush(5)
    return seen


def end_offsets(cluster: LocalCluster, topic: str) -> dict[int, int]:
    """Each partition's end offset, read as admin with the library's own end_offsets."""
    admin = cluster.admin()
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    ends = taxi_kafka.end_offsets(admin, [(topic, p) for p in partitions], timeout=10)
    return {partition: end for (_, partition), end in ends.items()}


class BrokerLogs:
    """What the brokers log from now on (their kafka.log files grow; read past the start)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._files = [cluster.log_file(n) for n in NODE_IDS]
        self._starts = {path: path.stat().st_size for path in self._files}

    def since(self) -> str:
        text = []
        for path in self._files:
            with path.open("rb") as log:
                log.seek(self._starts[path])
                text.append(log.read().decode(errors="replace"))
        return "".join(text)

    def wait_for(self, line: str) -> str:
        return wait_for(f"the brokers to log {line!r}", lambda: line in self.since(), 30)


@pytest.fixture
def cluster(secure_kafka_cluster: LocalCluster) -> LocalCluster:
    return secure_kafka_cluster


@pytest.fixture
def logs(cluster: LocalCluster) -> BrokerLogs:
    return BrokerLogs(cluster)


@pytest.fixture
def nothing_written(cluster: LocalCluster) -> Iterator[None]:
    """The test's refused client wrote nothing to new_trips."""
    before = end_offsets(cluster, NEW_TRIPS)
    yield
    assert end_offsets(cluster, NEW_TRIPS) == before


def as_(cluster: LocalCluster, principal: str, **changes: str | None) -> dict[str, Any]:
    """`principal`'s client settings with `changes` (None removes a setting)."""
    settings: dict[str, Any] = cluster.client_settings(principal)
    for key, value in changes.items():
        name = key.replace("_", ".")
        if value is None:
            settings.pop(name)
        else:
            settings[name] = value
    return settings


def test_each_principal_does_its_own_job(cluster: LocalCluster):
    # The control for every refusal below: the same clients, rightly configured, succeed. (To
    # finished_trips: new_trips stays for the pipeline that test_up runs on this cluster, and
    # its aggregator sends a record that is no trip end to dead_letters.)
    before = sum(end_offsets(cluster, FINISHED_TRIPS).values())
    seen = attempt_produce(cluster.client_settings("producer"), FINISHED_TRIPS)
    assert seen.messages == ["delivered"], seen
    assert sum(end_offsets(cluster, FINISHED_TRIPS).values()) == before + 1
    dashboard = cluster.client_settings("dashboard")
    reader = Consumer({**dashboard, "group.id": throwaway_group("reader", dashboard)})
    try:
        partitions = end_offsets(cluster, FINISHED_TRIPS)
        reader.assign([TopicPartition(FINISHED_TRIPS, p, 0) for p in partitions])
        message = wait_for("the dashboard to read a trip", lambda: reader.poll(1), 30)
        assert message.error() is None, message.error()
    finally:
        reader.close()
    own = Producer({**cluster.client_settings("predictor"), "transactional.id": "taxi-predictor-t"})
    own.init_transactions(30)


@dataclass(frozen=True)
class Unauthenticated:
    """A producer's client settings changed by `changes` (None removes one), and what the
    client and the brokers then say."""

    changes: dict[str, str | None]
    client_says: str
    broker_says: str
    # librdkafka's code, where its error callback reliably reports one.
    client_code: int | None = None


WITHOUT_SASL = {"sasl_mechanism": None, "sasl_username": None, "sasl_password": None}


@pytest.mark.usefixtures("nothing_written")
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            # TLS, but no SASL: the broker closes the connection.
            Unauthenticated(
                {"security_protocol": "SSL", **WITHOUT_SASL},
                client_says="SSL connection closed by peer",
                broker_says="Unexpected Kafka request of type METADATA during SASL handshake",
            ),
            id="no-credentials",
        ),
        pytest.param(
            Unauthenticated(
                {"sasl_password": "not-the-password"},
                client_says="invalid credentials with SASL mechanism SCRAM-SHA-512",
                broker_says="due to invalid credentials with SASL mechanism SCRAM-SHA-512",
                client_code=KafkaError._AUTHENTICATION,
            ),
            id="wrong-password",
        ),
        pytest.param(
            Unauthenticated(
                {"ssl_ca_location": None},
                client_says="certificate verify failed",
                broker_says="(SSL handshake failed)",
                client_code=KafkaError._SSL,
            ),
            id="untrusted-ca",
        ),
        pytest.param(
            # The broker reads a TLS handshake, and the client's plaintext is none.
            Unauthenticated(
                {"security_protocol": "PLAINTEXT", "ssl_ca_location": None, **WITHOUT_SASL},
                client_says="Disconnected",
                broker_says="(SSL handshake failed)",
            ),
            id="plaintext-to-tls",
        ),
    ],
)
def test_a_client_that_cannot_authenticate_is_refused(cluster, logs, case):
    seen = attempt_produce(as_(cluster, "producer", **case.changes))
    assert seen.refused, seen
    if case.client_code is not None:
        assert case.client_code in seen.codes, seen
    assert "delivered" not in seen.messages
    assert any(case.client_says in message for message in seen.messages), seen.messages
    logs.wait_for(case.broker_says)


def denied(principal: str, operation: str, resource: str) -> str:
    """The authorizer's log line for a denial, up to the request."""
    return (
        f"Principal = User:{principal} is Denied operation = {operation} from host = 127.0.0.1 "
        f"on resource = {resource} for request"
    )


@pytest.mark.usefixtures("nothing_written")
def test_the_dashboard_may_not_produce(cluster, logs):
    seen = attempt_produce(cluster.client_settings("dashboard"))
    assert seen.codes == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, seen
    logs.wait_for(denied("dashboard", "WRITE", f"Topic:LITERAL:{NEW_TRIPS}"))


def test_the_producer_may_not_read_predictions(cluster, logs):
    settings = cluster.client_settings("producer")
    producer = KafkaConfig(settings.pop("bootstrap.servers"), settings)
    refused = f"refused principal producer: DESCRIBE on topic {ML_PREDICTIONS}"
    with pytest.raises(AuthorizationError, match=refused):
        read_to_end(producer, ML_PREDICTIONS)
    logs.wait_for(denied("producer", "DESCRIBE", f"Topic:LITERAL:{ML_PREDICTIONS}"))


def test_the_predictor_may_not_delete_a_topic(cluster, logs):
    admin = AdminClient(cluster.client_settings("predictor"))
    with pytest.raises(KafkaException) as refused:
        admin.delete_topics([NEW_TRIPS], operation_timeout=10)[NEW_TRIPS].result(30)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    logs.wait_for(denied("predictor", "DELETE", f"Topic:LITERAL:{NEW_TRIPS}"))
    assert NEW_TRIPS in cluster.admin().list_topics(timeout=10).topics


def test_a_principal_may_not_take_anothers_transactional_ids(cluster, logs):
    foreign = f"taxi-aggregator-{uuid.uuid4().hex[:6]}"
    producer = Producer({**cluster.client_settings("predictor"), "transactional.id": foreign})
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    logs.wait_for(denied("predictor", "DESCRIBE", f"TransactionalId:LITERAL:{foreign}"))


def test_the_secrets_are_private_and_never_logged(cluster: LocalCluster):
    secrets = cluster.secrets()
    assert secrets.directory.stat().st_mode & 0o777 == 0o700
    for path in secrets.directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    logged = "".join(cluster.log_file(n).read_text(errors="replace") for n in NODE_IDS)
    for principal, password in secrets.passwords.items():
        assert password not in logged, principal
    for node in NODE_IDS:
        properties = cluster.node_dir(node) / "server.properties"
        assert properties.stat().st_mode & 0o777 == 0o600
