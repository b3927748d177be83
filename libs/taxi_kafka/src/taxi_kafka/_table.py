"""Reading records up to an end: a range of offsets, every committed record of a topic, the
last ones of each partition, or a compacted topic as a table; and following topics from their
beginning on.

A whole topic is read read_committed up to each partition's high watermark as of the call. A
transaction below it that is still in progress is waited for: committed, it is part of the
result; aborted, it is not. The last stable offset would be no end to aim at: right after
commit_transaction() returns, the commit markers may still be on their way, and the committed
records would be missed. A service restoring its own state reads after init_transactions(),
which settles whatever its predecessor left open.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import TopicMetadata

from taxi_kafka._admin import QUIET_CLIENT_CONFIG, is_transient
from taxi_kafka._config import PARTITION_TOLERANT_DEFAULTS, KafkaConfig, throwaway_group
from taxi_kafka._errors import topic_refused
from taxi_kafka._records import PartitionKey, position
from taxi_kafka._retry import RetryPolicy

log = logging.getLogger(__name__)

METADATA_RETRY = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=2.0, deadline=120.0)
# A topic created a moment ago may not be in the metadata of the broker asked yet: brokers
# learn of it from the controller one by one, within a second here (a CI run read one the
# moment after creating it, from a broker that did not know it yet).
NEW_TOPIC_RETRY = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=1.0, deadline=2.0)


def read_to_end(
    config: KafkaConfig,
    topic: str,
    timeout: float = 120.0,
    *,
    isolation_level: str = "read_committed",
) -> list[Message]:
    """Every committed record of `topic`, by partition and in offset order; with
    isolation_level "read_uncommitted", aborted ones too. TimeoutError when the end is not
    reached in `timeout` seconds."""
    consumer = _reader(config, topic, isolation_level)
    try:
        ends = METADATA_RETRY.call(
            lambda: _high_watermarks(config, topic),
            retryable=is_transient,
            what=f"end offsets of {topic}",
        )
        by_partition: dict[int, list[Message]] = {p: [] for p in sorted(ends)}
        ranges = {(topic, p): (0, end) for p, end in ends.items()}
        for message in read_range(consumer, ranges, time.monotonic() + timeout):
            _, partition, _ = position(message)
            by_partition[partition].append(message)
    finally:
        consumer.close()
    return [m for messages in by_partition.values() for m in messages]


def read_range(
    consumer: Consumer, ranges: Mapping[PartitionKey, tuple[int, int]], deadline: float
) -> Generator[Message, None, None]:
    """The records `consumer` is handed from each partition's [start, end) offsets, batch by
    batch: the committed ones only, if it reads read_committed. Assigns `consumer` to the
    ranges, and unassigns it when done or closed. TimeoutError when the ends are not reached by
    `deadline` (time.monotonic())."""
    ends = {key: end for key, (start, end) in ranges.items() if end > start}
    pending = dict(ends)
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in ends])
    try:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions {sorted(pending)} not read to the end in time")
            for message in consumer.consume(10_000, 0.2):
                if message.error() is None:
                    topic, partition, offset = position(message)
                    # A batch may run past an end, into records written since it was taken.
                    if offset < ends[(topic, partition)]:
                        yield message
            # Positions move past transaction markers too, so compare positions, not offsets.
            for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= pending[(tp.topic, tp.partition)]:
                    del pending[(tp.topic, tp.partition)]
    finally:
        # Else it would go on fetching in the background.
        consumer.unassign()


def read_tail(
    config: KafkaConfig, topic: str, per_partition: int, timeout: float = 10.0
) -> list[Message]:
    """The committed records among the last `per_partition` offsets of each partition of
    `topic` (as of the call), by partition and in offset order: a bounded look at what was
    written last. Transaction markers take offsets too, so it may hold fewer. Where an open
    transaction holds a partition back past `timeout` seconds, it holds what was read by then.
    KeyError when the topic does not exist."""
    watermarks = METADATA_RETRY.call(
        lambda: _watermarks(config, topic), retryable=is_transient, what=f"offsets of {topic}"
    )
    ranges = {
        (topic, p): (max(low, high - per_partition), high) for p, (low, high) in watermarks.items()
    }
    by_partition: dict[int, list[Message]] = {p: [] for p in sorted(watermarks)}
    consumer = _reader(config, topic, "read_committed")
    try:
        for message in read_range(consumer, ranges, time.monotonic() + timeout):
            by_partition[position(message)[1]].append(message)
    except TimeoutError as exc:
        log.warning("read the tail of %s in part: %s", topic, exc)
    finally:
        consumer.close()
    return [m for messages in by_partition.values() for m in messages]


def read_table(config: KafkaConfig, topic: str, timeout: float = 120.0) -> dict[bytes, bytes]:
    """A compacted topic as a table: every key's last value (a tombstone deletes the key)."""
    table: dict[bytes, bytes] = {}
    for message in read_to_end(config, topic, timeout):
        key, value = message.key(), message.value()
        if key is None:
            continue
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    log.info("read %d key(s) from %s", len(table), topic)
    return table


class LogFollower:
    """Reads every partition of `topics` from the beginning, then goes on with what is
    written: read_committed, outside any consumer group. `caught_up()` says whether everything
    committed before it started has been read."""

    def __init__(
        self,
        config: KafkaConfig,
        topics: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        ends: dict[PartitionKey, int] = {}
        for topic in topics:
            # A topic about to be created (`taxi up` creates them as the services start) is
            # waited for, as brokers that are not up yet are.
            watermarks = METADATA_RETRY.call(
                functools.partial(_high_watermarks, config, topic),
                retryable=lambda exc: is_transient(exc) or isinstance(exc, KeyError),
                what=f"end offsets of {topic}",
            )
            ends.update({(topic, p): end for p, end in watermarks.items()})
        self._behind = {key: end for key, end in ends.items() if end > 0}
        self._consumer = _reader(config, ",".join(topics), "read_committed", settings)
        self._consumer.assign([TopicPartition(t, p, 0) for t, p in ends])

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """The next records, in offset order per partition (errors are logged and skipped)."""
        messages = []
        for message in self._consumer.consume(max_messages, timeout):
            if message.error() is None:
                messages.append(message)
            else:
                log.debug("follower: %s", message.error())
        return messages

    def caught_up(self) -> bool:
        if self._behind:
            # Positions move past transaction markers too, so compare positions, not offsets.
            for tp in self._consumer.position([TopicPartition(t, p) for t, p in self._behind]):
                if tp.offset >= self._behind[(tp.topic, tp.partition)]:
                    del self._behind[(tp.topic, tp.partition)]
        return not self._behind

    def close(self) -> None:
        self._consumer.close()


def _reader(
    config: KafkaConfig,
    topic: str,
    isolation_level: str,
    settings: Mapping[str, Any] | None = None,
) -> Consumer:
    settings = config.client_settings(
        # A service rereading its state after a failed transaction may do so mid-partition.
        {**PARTITION_TOLERANT_DEFAULTS, **(settings or {})},
        {
            "group.id": throwaway_group("reader", config.settings),
            "enable.auto.commit": False,
            "isolation.level": isolation_level,
        },
        what=f"{topic} reader",
    )
    return Consumer({**settings, "logger": QUIET_CLIENT_CONFIG["logger"]})


def _high_watermarks(config: KafkaConfig, topic: str) -> dict[int, int]:
    return {p: high for p, (_low, high) in _watermarks(config, topic).items()}


def _watermarks(config: KafkaConfig, topic: str) -> dict[int, tuple[int, int]]:
    """Each partition's (low, high) watermarks: its first offset still kept, and its end."""
    # A read_committed consumer's watermarks are last stable offsets; only a read_uncommitted
    # one is told the high watermark.
    consumer = _reader(config, topic, "read_uncommitted")

    def described() -> TopicMetadata:
        found: TopicMetadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if found.error is not None and found.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise topic_refused(topic, config.settings.get("sasl.username"), "DESCRIBE")
        if found.error is not None or not found.partitions:
            raise KeyError(f"topic {topic} does not exist; run `taxi cluster up` to create it")
        return found

    try:
        partitions = NEW_TOPIC_RETRY.call(
            described, retry_on=(KeyError,), what=f"metadata of {topic}"
        ).partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
    finally:
        consumer.close()
