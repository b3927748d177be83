"""Consumer-group lag as the cluster sees it: committed offsets (through an idle consumer of the
group) against read_committed end offsets (from the admin API), and the committed records
between them, counted by a read_committed consumer. Works for any group, whichever process (or
none) runs it.

Offsets overstate a transactional group's lag: every transaction's commit or abort marker takes
an offset, and so does every aborted record, yet no consumer is handed either. A group caught up
with its transactional input still lags by an offset per partition (the last marker), and by no
record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from taxi_kafka._admin import QUIET_CLIENT_CONFIG
from taxi_kafka._config import throwaway_group
from taxi_kafka._records import PartitionKey, position
from taxi_kafka._table import read_range

# Records counted per group and call at most: an exact lag up to here, "at least" past it.
MAX_COUNTED = 10_000


@dataclass(frozen=True)
class GroupLag:
    """A group's lag per partition: `offsets` from its committed offset to the last stable
    offset, and `records`, the committed records among them. When counting stopped at its cap or
    deadline, `exact` is False and `records` are a lower bound (`offsets` are an upper one)."""

    offsets: Mapping[PartitionKey, int]
    records: Mapping[PartitionKey, int]
    exact: bool = True

    @property
    def total_offsets(self) -> int:
        return sum(self.offsets.values())

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


def lag_ranges(
    committed: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int]
) -> dict[PartitionKey, tuple[int, int]]:
    """The [start, end) offsets of each ended partition that its group has yet to read: from the
    committed offset, or from 0 where the group never committed. Empty (start == end) where the
    group is at the end, or past an end taken before its latest commit."""
    return {key: (min(max(committed.get(key, 0), 0), end), end) for key, end in ends.items()}


def lag_of(
    committed: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int]
) -> dict[PartitionKey, int]:
    """Offsets between each partition's committed offset and its end (see lag_ranges);
    transaction markers and aborted records included."""
    return {key: end - start for key, (start, end) in lag_ranges(committed, ends).items()}


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


class LagProbe:
    """Consumer groups' lag in offsets and in records, through clients kept for reuse between
    calls: an AdminClient for partitions and end offsets, an idle reader per group for its
    committed offsets (group_reader), and a read_committed consumer that counts the records in
    between, skipping markers and aborted records as any read_committed consumer would."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = settings
        self._admin = AdminClient({**settings, **QUIET_CLIENT_CONFIG})
        self._counter = Consumer(
            {
                **settings,
                "group.id": throwaway_group("lag", settings),  # assigned only: never joins
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # A committed offset that retention has deleted: count from the log's start.
                "auto.offset.reset": "earliest",
                **QUIET_CLIENT_CONFIG,
            }
        )
        self._readers: dict[str, Consumer] = {}

    def lag(
        self,
        group: str,
        topics: Iterable[str],
        *,
        limit: int = MAX_COUNTED,
        timeout: float = 5.0,
    ) -> GroupLag:
        """`group`'s lag over every partition of `topics`, with at most `limit` records counted
        and `timeout` seconds for each request and for the counting."""
        metadata = self._admin.list_topics(timeout=timeout)
        partitions = [
            (topic, partition)
            for topic in topics
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        ]
        if group not in self._readers:
            self._readers[group] = group_reader(self._settings, group)
        ranges = lag_ranges(
            committed_offsets(self._readers[group], partitions, timeout),
            end_offsets(self._admin, partitions, timeout),
        )
        records, exact = self._count(ranges, limit, time.monotonic() + timeout)
        return GroupLag({key: end - start for key, (start, end) in ranges.items()}, records, exact)

    def _count(
        self, ranges: Mapping[PartitionKey, tuple[int, int]], limit: int, deadline: float
    ) -> tuple[dict[PartitionKey, int], bool]:
        """The records in `ranges` per partition, and whether that is all of them."""
        counts = dict.fromkeys(ranges, 0)
        with contextlib.closing(read_range(self._counter, ranges, deadline)) as messages:
            try:
                for counted, message in enumerate(messages):
                    if counted == limit:
                        return counts, False
                    topic, partition, _ = position(message)
                    counts[(topic, partition)] += 1
            except TimeoutError:
                return counts, False
        return counts, True

    def close(self) -> None:
        for consumer in (*self._readers.values(), self._counter):
            consumer.close()

    def __enter__(self) -> LagProbe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
