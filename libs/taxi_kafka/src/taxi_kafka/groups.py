"""Consumer-group lag as the cluster sees it: committed offsets (through an idle consumer of the
group) against read_committed end offsets (from the admin API). Works for any group, whichever
process (or none) runs it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from taxi_kafka.admin import QUIET_CLIENT_CONFIG
from taxi_kafka.records import PartitionKey


def lag_of(
    committed: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int]
) -> dict[PartitionKey, int]:
    """Records between each partition's committed offset and its end. A partition the group
    never committed counts whole (from offset 0). Transaction markers take an offset each, so
    a caught-up group may show a lag of 1 on a partition until its next commit."""
    return {key: max(end - max(committed.get(key, 0), 0), 0) for key, end in ends.items()}


def group_reader(settings: Mapping[str, Any], group: str) -> Consumer:
    """An idle consumer of `group`, for committed_offsets: it never subscribes, so it never joins
    the group, and it reads committed offsets without waiting out pending transactional ones.

    A consumer, not the AdminClient: the AdminClient's group-coordinator requests
    (list_consumer_group_offsets) crash librdkafka 2.16.0 when a broker stops (SIGSEGV on its
    main thread, librdkafka #5315; here in the third of a series of broker stops), while idle
    consumers of the groups came through twelve."""
    return Consumer(
        {
            **settings,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            **QUIET_CLIENT_CONFIG,
        }
    )


def committed_offsets(
    reader: Consumer, partitions: Iterable[PartitionKey], timeout: float = 5.0
) -> dict[PartitionKey, int]:
    """The committed offsets of the reader's group (see group_reader) on `partitions`; a
    partition the group never committed is left out."""
    wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not wanted:
        return {}
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in reader.committed(wanted, timeout=timeout)
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
    admin: AdminClient, reader: Consumer, topics: Iterable[str], timeout: float = 5.0
) -> dict[PartitionKey, int]:
    """{(topic, partition): lag} of the reader's group over every partition of `topics`."""
    metadata = admin.list_topics(timeout=timeout)
    partitions = [
        (topic, partition)
        for topic in topics
        if topic in metadata.topics
        for partition in metadata.topics[topic].partitions
    ]
    return lag_of(
        committed_offsets(reader, partitions, timeout), end_offsets(admin, partitions, timeout)
    )
