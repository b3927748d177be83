"""The cluster's state as plain data, built from metadata and files, and printed for people."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka.admin import ClusterMetadata

from taxi_kafka._pipeline import coordinator_partition

# How many partition names to list before summarising the rest.
_LISTED = 8


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    # -1 when the partition has no leader (offline).
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def offline(self) -> bool:
        return self.leader < 0


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    broker_port: int
    controller_port: int
    # The pid from the node's pid file, if that process is alive and is this node.
    pid: int | None
    port_open: bool
    # Listed as a live broker in the cluster metadata.
    registered: bool

    @property
    def state(self) -> str:
        if self.pid is None:
            return "down"
        return "up" if self.port_open and self.registered else "starting"


@dataclass(frozen=True)
class ClusterStatus:
    runtime_dir: str
    cluster_id: str | None
    kafka_version: str | None
    bootstrap_servers: str
    nodes: tuple[NodeStatus, ...]
    # The active KRaft controller and its epoch, from the quorum-state files of running nodes.
    controller: int | None
    controller_epoch: int | None
    partitions: tuple[PartitionState, ...]
    # Why no metadata could be fetched (then `partitions` is empty).
    metadata_error: str | None = None
    # The listeners' protocol: plaintext, or sasl_ssl (then where the secrets are).
    security: str = "plaintext"
    secrets_dir: str | None = None

    @property
    def under_replicated(self) -> list[PartitionState]:
        return [p for p in self.partitions if p.under_replicated]

    @property
    def offline(self) -> list[PartitionState]:
        return [p for p in self.partitions if p.offline]

    def node(self, node_id: int) -> NodeStatus:
        return next(n for n in self.nodes if n.node_id == node_id)

    @property
    def all_up(self) -> bool:
        return all(n.state == "up" for n in self.nodes)

    @property
    def healthy(self) -> bool:
        return (
            self.all_up
            and self.metadata_error is None
            and not self.under_replicated
            and not self.offline
        )

    def leader_counts(self, topics: Iterable[str] | None = None) -> collections.Counter[int]:
        """Partitions led per broker, over `topics` (default: all but Kafka's internal ones)."""
        wanted = set(topics) if topics is not None else None
        return collections.Counter(
            p.leader
            for p in self.partitions
            if not p.offline
            and (p.topic in wanted if wanted is not None else not p.topic.startswith("__"))
        )

    def coordinator(self, key: str, topic: str) -> int:
        """The broker coordinating group id or transactional.id `key`: the leader of its
        partition of `topic` (__consumer_offsets or __transaction_state); -1 if it has none."""
        partitions = {p.partition: p for p in self.partitions if p.topic == topic}
        if not partitions:
            raise ValueError(f"no partitions of {topic} in the metadata")
        return partitions[coordinator_partition(key, len(partitions))].leader

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["partitions"]
        for node, node_data in zip(self.nodes, data["nodes"], strict=True):
            node_data["state"] = node.state
        data["partition_count"] = len(self.partitions)
        data["under_replicated"] = [p.name for p in self.under_replicated]
        data["offline"] = [p.name for p in self.offline]
        data["all_up"] = self.all_up
        data["healthy"] = self.healthy
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def partitions_of(metadata: ClusterMetadata) -> tuple[PartitionState, ...]:
    return tuple(
        PartitionState(
            topic=name,
            partition=partition.id,
            leader=partition.leader,
            replicas=tuple(partition.replicas),
            isr=tuple(partition.isrs),
        )
        # By name, the key: TopicMetadata.topic is typed Optional.
        for name, topic in sorted(metadata.topics.items(), key=lambda item: item[0])
        for partition in sorted(topic.partitions.values(), key=lambda p: p.id)
    )


def controller_from_quorum_states(
    states: Mapping[int, str],
) -> tuple[int | None, int | None]:
    """(leader, epoch) of the KRaft quorum from the quorum-state files of running nodes.

    Every voter records the leader it follows; the highest epoch is the newest news. An epoch
    without a leader means an election is under way. Unreadable files are skipped.
    """
    best: tuple[int, int] | None = None  # (epoch, leader)
    for text in states.values():
        try:
            record = json.loads(text)
            epoch, leader = int(record["leaderEpoch"]), int(record["leaderId"])
        except (ValueError, KeyError, TypeError):
            continue
        if best is None or epoch > best[0]:
            best = (epoch, leader)
    if best is None:
        return None, None
    epoch, leader = best
    return (leader if leader >= 0 else None), epoch


def _names(partitions: list[PartitionState]) -> str:
    listed = ", ".join(p.name for p in partitions[:_LISTED])
    more = len(partitions) - _LISTED
    return f"{listed} and {more} more" if more > 0 else listed


def _node_detail(node: NodeStatus) -> str:
    if node.state == "up":
        return ""
    if node.state == "down":
        return "no process" + (", yet its port is open" if node.port_open else "")
    waiting = [
        what
        for what, done in (("port", node.port_open), ("registration", node.registered))
        if not done
    ]
    return "process alive, waiting for " + " and ".join(waiting)


def format_status(status: ClusterStatus) -> str:
    """The status for a terminal."""
    version = f"Kafka {status.kafka_version}" if status.kafka_version else "Kafka"
    lines = [
        f"{version} cluster {status.cluster_id or '(not created)'} in {status.runtime_dir}",
        f"bootstrap servers: {status.bootstrap_servers}",
        f"security: {status.security.upper()}"
        + (
            f" (CA, certificates, credentials in {status.secrets_dir})"
            if status.secrets_dir
            else ""
        ),
        "",
        f"{'node':<6}{'state':<10}{'pid':<9}{'broker':<8}controller",
    ]
    for node in status.nodes:
        pid = str(node.pid) if node.pid else "-"
        lines.append(
            f"{node.node_id:<6}{node.state:<10}{pid:<9}{node.broker_port:<8}"
            f"{node.controller_port:<12}{_node_detail(node)}".rstrip()
        )
    lines.append("")
    if status.controller is not None:
        lines.append(
            f"active controller: node {status.controller} (epoch {status.controller_epoch})"
        )
    else:
        lines.append("active controller: none (no running node knows of an elected leader)")
    if status.metadata_error:
        lines.append(f"metadata: unavailable ({status.metadata_error})")
        return "\n".join(lines)
    under, offline = status.under_replicated, status.offline
    lines.append(f"partitions: {len(status.partitions)}")
    lines.append(f"under-replicated: {len(under)}" + (f" ({_names(under)})" if under else ""))
    lines.append(f"offline: {len(offline)}" + (f" ({_names(offline)})" if offline else ""))
    return "\n".join(lines)
