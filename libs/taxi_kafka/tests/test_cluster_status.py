"""Status from metadata and quorum-state files, and how it prints."""

from __future__ import annotations

import dataclasses
import json

import pytest
from confluent_kafka.admin import ClusterMetadata, PartitionMetadata, TopicMetadata
from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka._pipeline import coordinator_partition
from taxi_kafka.cluster._status import (
    ClusterStatus,
    NodeStatus,
    PartitionState,
    controller_from_quorum_states,
    format_status,
    partitions_of,
)


def node(node_id: int, pid: int | None = 100, port_open: bool = True, registered: bool = True):
    return NodeStatus(node_id, 19091 + node_id, 19191 + node_id, pid, port_open, registered)


def cluster_status(nodes=None, partitions=(), error=None) -> ClusterStatus:
    return ClusterStatus(
        runtime_dir="/rt",
        cluster_id="abc",
        kafka_version="4.1.2",
        bootstrap_servers="127.0.0.1:19092",
        nodes=tuple(nodes or (node(1), node(2), node(3))),
        controller=2,
        controller_epoch=5,
        partitions=tuple(partitions),
        metadata_error=error,
    )


def quorum_state(leader: int, epoch: int) -> str:
    return json.dumps({"clusterId": "", "leaderId": leader, "leaderEpoch": epoch, "votedId": -1})


@pytest.mark.parametrize(
    ("pid", "port_open", "registered", "state"),
    [
        (100, True, True, "up"),
        (100, False, True, "starting"),
        (100, True, False, "starting"),
        (None, False, False, "down"),
        (None, True, True, "down"),
    ],
)
def test_node_state(pid, port_open, registered, state):
    assert node(1, pid, port_open, registered).state == state


def test_partition_health():
    assert PartitionState("t", 0, 1, (1, 2, 3), (1, 2)).under_replicated
    assert not PartitionState("t", 0, 1, (1, 2, 3), (3, 1, 2)).under_replicated
    assert PartitionState("t", 1, -1, (1, 2, 3), (1,)).offline


def test_partitions_come_sorted_from_metadata():
    metadata = ClusterMetadata()
    topic = TopicMetadata()
    topic.topic = "t"
    for pid, leader, isr in ((1, -1, [3]), (0, 2, [2, 3])):
        partition = PartitionMetadata()
        partition.id, partition.leader, partition.isrs = pid, leader, isr
        partition.replicas = [2, 3]
        topic.partitions[pid] = partition
    metadata.topics = {"t": topic}
    assert partitions_of(metadata) == (
        PartitionState("t", 0, 2, (2, 3), (2, 3)),
        PartitionState("t", 1, -1, (2, 3), (3,)),
    )


def test_healthy_only_when_all_up_and_fully_replicated():
    good = [PartitionState("t", 0, 1, (1, 2, 3), (1, 2, 3))]
    assert cluster_status(partitions=good).healthy
    assert not cluster_status([node(1), node(2), node(3, None)], partitions=good).healthy
    lagging = [PartitionState("t", 0, 1, (1, 2, 3), (1, 2))]
    assert not cluster_status(partitions=lagging).healthy
    assert not cluster_status(partitions=good, error="timed out").healthy


def test_controller_is_the_leader_of_the_newest_epoch():
    states = {1: quorum_state(1, 3), 2: quorum_state(2, 4), 3: quorum_state(2, 4)}
    assert controller_from_quorum_states(states) == (2, 4)


def test_no_controller_during_an_election_or_without_files():
    assert controller_from_quorum_states({1: quorum_state(1, 3), 2: quorum_state(-1, 4)}) == (
        None,
        4,
    )
    assert controller_from_quorum_states({}) == (None, None)
    assert controller_from_quorum_states({1: "not json", 2: "{}"}) == (None, None)


def test_leader_counts_skip_internal_and_offline_partitions():
    partitions = [
        PartitionState("a", 0, 1, (1, 2, 3), (1, 2, 3)),
        PartitionState("a", 1, 1, (1, 2, 3), (1, 2, 3)),
        PartitionState("b", 0, 2, (1, 2, 3), (1, 2, 3)),
        PartitionState("b", 1, -1, (1, 2, 3), ()),
        PartitionState("__consumer_offsets", 0, 3, (1, 2, 3), (1, 2, 3)),
    ]
    status = cluster_status(partitions=partitions)
    assert status.leader_counts() == {1: 2, 2: 1}
    assert status.leader_counts(["b"]) == {2: 1}
    assert status.leader_counts(["__consumer_offsets"]) == {3: 1}


def test_text_and_json_name_the_problems():
    partitions = [PartitionState("t", p, 1, (1, 2, 3), (1, 2)) for p in range(10)]
    partitions.append(PartitionState("u", 0, -1, (1, 2, 3), ()))
    status = cluster_status([node(1), node(2), node(3, None)], partitions=partitions)
    text = format_status(status)
    assert "3     down" in text
    assert "active controller: node 2 (epoch 5)" in text
    assert "under-replicated: 11 (t-0, t-1" in text
    assert "and 3 more" in text
    assert "offline: 1 (u-0)" in text
    data = json.loads(status.to_json())
    assert data["nodes"][2]["state"] == "down"
    assert data["offline"] == ["u-0"]
    assert len(data["under_replicated"]) == 11
    assert data["healthy"] is False


def test_text_without_metadata_says_why():
    text = format_status(cluster_status(error="no node is running"))
    assert "metadata: unavailable (no node is running)" in text
    assert "security: PLAINTEXT\n" in text


def test_a_secure_cluster_says_so_and_where_its_secrets_are():
    status = dataclasses.replace(cluster_status(), security="sasl_ssl", secrets_dir="/rt/secrets")
    assert "security: SASL_SSL (CA, certificates, credentials in /rt/secrets)" in format_status(
        status
    )
    assert json.loads(status.to_json())["security"] == "sasl_ssl"


# Java's ("...".hashCode() & 0x7fffffff) % 50, from jshell on OpenJDK 17.
@pytest.mark.parametrize(
    ("key", "partition"),
    [("taxi-predictor", 23), ("é€😀", 6), ("taxi-predictor-taxi-chaos-1-x", 30), ("", 0)],
)
def test_the_coordinator_partition_is_kafkas(key, partition):
    assert coordinator_partition(key, 50) == partition


@given(st.text(), st.integers(1, 200))
def test_the_coordinator_partition_is_one_of_the_partitions(key, partitions):
    assert 0 <= coordinator_partition(key, partitions) < partitions
