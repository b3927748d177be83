"""Consumer-group lag as the cluster sees it: committed offsets against read_committed end
offsets, from the admin API. Works for any group, whichever process (or none) runs it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from taxi_kafka.records import PartitionKey


def lag_of(
    committed: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int]
) -> dict[PartitionKey, int]:
    """Records between each partition's committed offset and its end. A partition the group
    never committed counts whole (from offset 0). Transaction markers take an offset each, so
    a caught-up group may show a lag of 1 on a partition until its next commit."""
    return {key: max(end - max(committed.get(key, 0), 0), 0) for key, end in ends.items()}


def committed_offsets(
    admin: AdminClient, group: str, timeout: float = 5.0
) -> dict[PartitionKey, int]:
    """The group's committed offsets (empty for an unknown group)."""
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result()
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.topic_partitions or ()
        if tp.error is None and tp.offset >= 0
    }


def end_offsets(
    admin: AdminClient, partitions: Iterable[PartitionKey], timeout: float = 5.0
) -> dict[PartitionKey, int]:
    """Last stable offsets: what a read_committed consumer can reach."""
    request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
    if not request:
        return {}
    futures = admin.list_offsets(
        request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
    )
    return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}


def group_lag(
    admin: AdminClient, group: str, topics: Iterable[str], timeout: float = 5.0
) -> dict[PartitionKey, int]:
    """{(topic, partition): lag} of `group` over every partition of `topics`."""
    metadata = admin.list_topics(timeout=timeout)
    partitions = [
        (topic, partition)
        for topic in topics
        if topic in metadata.topics
        for partition in metadata.topics[topic].partitions
    ]
    return lag_of(committed_offsets(admin, group, timeout), end_offsets(admin, partitions, timeout))
