"""The real 3-broker cluster: topics, broker failures, restarts."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import Consumer, Producer

from taxi_kafka._admin import (
    QUIET_CLIENT_CONFIG,
    TopicState,
    ensure_topics,
    internal_topic_problems,
    topic_states,
)
from taxi_kafka._pipeline import CONSUMER_OFFSETS, INTERNAL_TOPICS, PROJECT_TOPICS, TopicSpec
from taxi_kafka._retry import RetryPolicy
from taxi_kafka.cluster import ClusterError, LocalCluster
from taxi_kafka.cluster._status import ClusterStatus

pytestmark = pytest.mark.kafka
log = logging.getLogger(__name__)

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0) -> T:
    """`check()` once its assertions hold."""
    policy = RetryPolicy(initial=0.1, multiplier=1.5, max_delay=0.5, deadline=timeout, jitter=0)
    return policy.call(check, retry_on=(AssertionError,))


def produce(cluster: LocalCluster, topic: str, count: int) -> None:
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", **QUIET_CLIENT_CONFIG}
    )
    errors = []
    for i in range(count):
        producer.produce(
            topic,
            str(i).encode(),
            key=str(i).encode(),
            on_delivery=lambda e, _m: errors.append(e) if e else None,
        )
    assert producer.flush(30) == 0
    assert errors == []


def consume_all(cluster: LocalCluster, topic: str, count: int) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            **QUIET_CLIENT_CONFIG,
        }
    )
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + 60
    while len(values) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value().decode())
    consumer.close()
    return values


def test_three_brokers_with_safe_topics(kafka_cluster):
    status = kafka_cluster.status()
    assert status.healthy, status.to_json()
    assert [n.state for n in status.nodes] == ["up", "up", "up"]
    assert status.controller in (1, 2, 3)
    admin = kafka_cluster.admin()
    assert len(admin.describe_cluster(request_timeout=10).result().nodes) == 3
    states = topic_states(admin, [spec.name for spec in PROJECT_TOPICS] + list(INTERNAL_TOPICS))
    for spec in PROJECT_TOPICS:
        assert states[spec.name] == TopicState(spec.name, spec.partitions, 3, 2)
    assert internal_topic_problems(states) == []


def test_up_again_only_checks_health(kafka_cluster):
    result = kafka_cluster.up()
    assert result.already_running
    assert result.created_topics == ()
    # A second handle on the same runtime directory finds the same cluster and its ports.
    other = LocalCluster(kafka_cluster.runtime_dir)
    assert other.bootstrap_servers == kafka_cluster.bootstrap_servers
    assert other.up().already_running


def test_ensure_topics_is_idempotent_and_warns_about_differences(
    kafka_cluster, unique_topic, caplog
):
    admin = kafka_cluster.admin()
    assert ensure_topics(admin, [TopicSpec(unique_topic)]) == []
    wanted = TopicSpec(unique_topic, partitions=3, min_insync_replicas=1)
    with caplog.at_level(logging.WARNING, logger="taxi_kafka._admin"):
        assert ensure_topics(admin, [wanted]) == []
    assert (
        f"topic {unique_topic} differs (left unchanged): partitions is 6, expected 3; "
        "min_insync_replicas is 2, expected 1"
    ) in caplog.text
    assert topic_states(admin, [unique_topic])[unique_topic] == TopicState(unique_topic, 6, 3, 2)


def test_a_stopped_broker_hands_over_and_comes_back(kafka_cluster, unique_topic):
    victim = kafka_cluster.leader_of_most_partitions([unique_topic])
    assert kafka_cluster.stop_broker(victim)

    def degraded() -> ClusterStatus:
        status = kafka_cluster.status()
        assert status.node(victim).state == "down"
        assert all(p.leader != victim for p in status.partitions)
        assert status.under_replicated
        return status

    status = eventually(degraded, timeout=10)
    assert status.offline == []
    # Each broker is asked on its own: the stopped one cannot answer.
    with pytest.raises(ClusterError, match=f"not in sync after 3 s: broker {victim}: "):
        kafka_cluster.wait_in_sync(timeout=3)
    # Two replicas in sync still satisfy min.insync.replicas=2: acks=all writes go on.
    produce(kafka_cluster, unique_topic, 50)
    assert kafka_cluster.start_broker(victim)
    assert kafka_cluster.status().node(victim).state == "up"
    kafka_cluster.wait_in_sync(60)
    assert kafka_cluster.wait_healthy(5).healthy


def test_a_killed_leader_fails_over_within_seconds(kafka_cluster, unique_topic):
    victim = kafka_cluster.leader_of_most_partitions([unique_topic])
    led = {p.partition for p in kafka_cluster.status().partitions if p.topic == unique_topic}
    started = time.monotonic()
    assert kafka_cluster.kill_broker(victim)
    assert kafka_cluster.status().node(victim).state == "down"

    def failed_over() -> ClusterStatus:
        status = kafka_cluster.status(timeout=2)
        leaders = {p.partition: p.leader for p in status.partitions if p.topic == unique_topic}
        assert set(leaders) == led
        assert all(leader not in (victim, -1) for leader in leaders.values())
        return status

    status = eventually(failed_over)
    failover = time.monotonic() - started
    log.info("leaderships of killed node %d moved after %.1f s", victim, failover)
    # Fencing after broker.session.timeout.ms (4 s), plus a controller election if need be.
    assert failover < 15
    assert status.under_replicated
    assert kafka_cluster.start_broker(victim)
    assert kafka_cluster.wait_healthy(60).healthy


def test_a_restarted_cluster_keeps_its_data(kafka_cluster, unique_topic):
    produce(kafka_cluster, unique_topic, 100)
    cluster_id = kafka_cluster.status().cluster_id
    assert sorted(kafka_cluster.down()) == [1, 2, 3]
    assert [n.state for n in kafka_cluster.status().nodes] == ["down", "down", "down"]
    result = kafka_cluster.up()
    assert result.started == (1, 2, 3)
    assert kafka_cluster.status().cluster_id == cluster_id  # started, not re-formatted
    assert sorted(consume_all(kafka_cluster, unique_topic, 100), key=int) == [
        str(i) for i in range(100)
    ]


def test_the_environment_adds_broker_jvm_options(tmp_path):
    env = {"TAXI_CLUSTER_JVM_OPTIONS": "-XX:TieredStopAtLevel=1 '-Dname=a b'"}
    cluster = LocalCluster(tmp_path, base_port=29092, env=env)
    assert cluster.jvm_options == ("-XX:TieredStopAtLevel=1", "-Dname=a b")
    assert LocalCluster(tmp_path, base_port=29092, env={}).jvm_options == ()


def test_the_brokers_run_with_the_quick_jit(kafka_cluster):
    # C2 compiling three fresh brokers on 2 cores slows everything for minutes (JVM_OPTIONS).
    pid = kafka_cluster.pid(1)
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-XX:TieredStopAtLevel=1" in argv


def test_the_coordinator_the_status_names_is_the_one_the_brokers_name(kafka_cluster):
    # Groups and transactional ids hash alike in Kafka's coordinator lookup, and the brokers
    # tell which broker coordinates a group (known or not): groups check the status's answer.
    groups = [f"taxi-coordinator-check-{n}" for n in range(12)]
    described = kafka_cluster.admin().describe_consumer_groups(groups)
    status = kafka_cluster.status()
    answers = {group: described[group].result(timeout=30).coordinator.id for group in groups}
    assert {group: status.coordinator(group, CONSUMER_OFFSETS) for group in groups} == answers
