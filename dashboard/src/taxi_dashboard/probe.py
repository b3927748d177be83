"""Cluster facts for the health panel: brokers, replicas and end offsets from the AdminClient,
and the pipeline groups' committed offsets through an idle consumer of each (see
taxi_kafka.group_reader).

Every call has a short timeout, and each part fails on its own: while a partition's leader is
being re-elected the lag may be unknown for a moment, but the brokers are still reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from taxi_dashboard.health import (
    BrokerMemory,
    ClusterHealth,
    GroupLag,
    PartitionReplicas,
    group_lag,
    replication_problems,
)
from taxi_kafka import PIPELINE_GROUPS, committed_offsets, end_offsets

_FAILURES = (KafkaException, FutureTimeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        error = exc.args[0]
        return error.str() if hasattr(error, "str") else str(error)
    return str(exc) or type(exc).__name__


def probe_cluster(
    admin: AdminClient,
    readers: Mapping[str, Consumer],
    memory: BrokerMemory,
    *,
    expected_brokers: int,
    now: datetime,
    timeout: float = 2.0,
) -> ClusterHealth:
    try:
        metadata: ClusterMetadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return ClusterHealth(now, expected_brokers, reachable=False, error=_reason(exc))
    up = tuple(sorted(metadata.brokers))
    partitions = [
        PartitionReplicas(topic, p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
        for topic, described in metadata.topics.items()
        for p in described.partitions.values()
    ]
    under, offline = replication_problems(partitions)
    return ClusterHealth(
        now,
        expected_brokers,
        reachable=True,
        brokers_up=up,
        brokers_missing=memory.missing(up),
        under_replicated=under,
        offline=offline,
        groups=group_lags(admin, readers, metadata, timeout),
    )


def group_lags(
    admin: AdminClient, readers: Mapping[str, Consumer], metadata: ClusterMetadata, timeout: float
) -> tuple[GroupLag, ...]:
    """Each pipeline group's lag: its committed offsets (read by `readers[group]`) against the
    read_committed end offsets of every partition of the topics it reads."""
    wanted = {
        group: [
            (topic, partition)
            for topic in topics
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        ]
        for group, topics in PIPELINE_GROUPS.items()
    }
    try:
        ends = end_offsets(admin, {key for keys in wanted.values() for key in keys}, timeout)
    except _FAILURES as exc:
        return tuple(GroupLag(g, None, error=f"end offsets: {_reason(exc)}") for g in wanted)
    lags = []
    for group, keys in wanted.items():
        try:
            committed = committed_offsets(readers[group], keys, timeout)
        except _FAILURES as exc:
            lags.append(GroupLag(group, None, error=f"committed offsets: {_reason(exc)}"))
            continue
        lags.append(group_lag(group, committed, {key: ends[key] for key in keys}))
    return tuple(lags)
