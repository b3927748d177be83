"""`taxi topics ensure|list` as an operator runs them, against the real 3-broker cluster."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka.admin import AdminClient

from taxi_kafka import (
    CONSUMER_OFFSETS,
    DEAD_LETTERS,
    DEFAULT_PARTITIONS,
    INTERNAL_TOPICS,
    MIN_INSYNC_REPLICAS,
    PROJECT_TOPICS,
    REPLICATION_FACTOR,
    topic_states,
)
from taxi_kafka.cluster import LocalCluster, free_base_port


def _bootstrap(cluster: LocalCluster) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}


def _listed(taxi, env: dict[str, str], *args: str) -> tuple[int, dict[str, dict]]:
    code, output, errors = taxi("topics", "list", "--json", *args, env=env)
    assert output, errors
    return code, {row["topic"]: row for row in json.loads(output)}


def _delete(admin: AdminClient, topic: str, timeout: float = 60.0) -> None:
    """Delete `topic` and wait until the metadata no longer shows it."""
    admin.delete_topics([topic], operation_timeout=30)[topic].result()
    deadline = time.monotonic() + timeout
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} still listed {timeout:.0f} s after deletion"
        time.sleep(0.5)


def test_ensure_creates_what_is_missing_and_reports_what_existed(taxi, kafka_cluster):
    admin = kafka_cluster.admin()
    _delete(admin, DEAD_LETTERS)
    others = [spec.name for spec in PROJECT_TOPICS if spec.name != DEAD_LETTERS]

    code, output, errors = taxi("topics", "ensure", env=_bootstrap(kafka_cluster))

    assert code == 0, errors
    assert "3 broker(s) up" in output
    assert f"created: {DEAD_LETTERS}\n" in output
    assert f"already existed: {', '.join(others)}\n" in output
    state = topic_states(admin, [DEAD_LETTERS])[DEAD_LETTERS]
    assert (state.partitions, state.replication_factor, state.min_insync_replicas) == (
        DEFAULT_PARTITIONS,
        REPLICATION_FACTOR,
        MIN_INSYNC_REPLICAS,
    )

    code, output, errors = taxi("topics", "ensure", env=_bootstrap(kafka_cluster))
    assert code == 0, errors
    assert "created: none\n" in output


def test_a_topic_prefix_gives_a_second_pipeline_topics_of_its_own(taxi, kafka_cluster):
    env = _bootstrap(kafka_cluster)
    code, output, errors = taxi("topics", "ensure", "--topic-prefix", "run7.", env=env)
    assert code == 0, errors
    names = [f"run7.{spec.name}" for spec in PROJECT_TOPICS]
    assert f"created: {', '.join(names)}\n" in output
    code, listed = _listed(taxi, env, "--topic-prefix", "run7.")
    assert code == 0
    assert set(names) <= set(listed)
    admin = kafka_cluster.admin()
    for name in names:
        _delete(admin, name)


def test_list_shows_every_topic_healthy_then_under_replicated_with_a_broker_down(
    taxi, kafka_cluster
):
    env = _bootstrap(kafka_cluster)
    code, rows = _listed(taxi, env)
    assert code == 0, rows
    assert list(rows) == [spec.name for spec in PROJECT_TOPICS] + list(INTERNAL_TOPICS)
    for spec in PROJECT_TOPICS:
        row = rows[spec.name]
        assert row["partitions"] == spec.partitions
        assert row["replication_factor"] == REPLICATION_FACTOR
        assert row["min_insync_replicas"] == MIN_INSYNC_REPLICAS
        assert (row["under_replicated"], row["offline"], row["ok"]) == (0, 0, True)
    assert rows[CONSUMER_OFFSETS]["replication_factor"] == REPLICATION_FACTOR

    kafka_cluster.stop_broker(3)  # the plugin starts it again after the test
    deadline = time.monotonic() + 60
    while True:
        code, rows = _listed(taxi, env)
        # Every replica set of an RF-3 topic on 3 brokers includes broker 3.
        if all(rows[s.name]["under_replicated"] == s.partitions for s in PROJECT_TOPICS):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(1)
    assert code == 1
    for spec in PROJECT_TOPICS:
        assert rows[spec.name]["problems"] == [f"{spec.partitions} under-replicated"]

    code, output, _errors = taxi("topics", "list", env=env)
    assert code == 1
    assert f"{DEFAULT_PARTITIONS} under-replicated" in output


def test_list_reports_a_partition_count_other_than_expected(taxi, kafka_cluster):
    code, rows = _listed(taxi, _bootstrap(kafka_cluster), "--partitions", "3")
    assert code == 1
    for spec in PROJECT_TOPICS:
        expected = ["partitions is 6, expected 3"] if spec.co_partitioned else []
        assert rows[spec.name]["problems"] == expected


def test_an_unreachable_cluster_fails_after_the_timeout(taxi):
    nobody = f"127.0.0.1:{free_base_port()}"
    code, _output, errors = taxi(
        "topics", "ensure", "--bootstrap-servers", nobody, "--timeout", "2"
    )
    assert code == 1
    assert f"the Kafka cluster at {nobody} is not ready after 2 s" in errors


@pytest.mark.parametrize("command", ["ensure", "list"])
def test_secure_refuses_to_reach_a_cluster_unencrypted(taxi, kafka_cluster, command):
    """--secure on a plaintext cluster: refused before a byte is sent, as with
    TAXI_CLUSTER_SECURITY=sasl_ssl; with TLS settings of its own it goes ahead (and then fails
    the TLS handshake with this plaintext broker: not reached)."""
    env = _bootstrap(kafka_cluster)
    for args, extra_env in ((["--secure"], {}), ([], {"TAXI_CLUSTER_SECURITY": "sasl_ssl"})):
        code, _output, errors = taxi("topics", command, *args, env={**env, **extra_env})
        assert code == 1, errors
        assert f"--secure: {kafka_cluster.bootstrap_servers} would be reached unencrypted" in errors
    code, _output, errors = taxi(
        "topics", command, "--secure", "-X", "security.protocol=SSL", "--timeout", "2", env=env
    )
    assert code == 1
    assert "would be reached unencrypted" not in errors
    assert "not ready after 2 s" in errors


@pytest.mark.parametrize("command", ["ensure", "list"])
def test_a_malformed_setting_is_a_usage_error(taxi, command):
    code, _output, errors = taxi("topics", command, "-X", "no-equals-sign")
    assert code == 2
    assert "expected key=value" in errors
