"""What flows through a consume-transform-produce batch, as plain data (pure: no I/O).

A `Transform` takes a batch of consumed messages and returns the records to produce plus the
messages it could not handle (`Failure`s, which become dead letters). It sees the whole batch,
so a predictor can make one vectorised model call per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, runtime_checkable

from confluent_kafka import Message, TopicPartition

from taxi_events import DeadLetter

# As confluent_kafka takes and gives them: (name, value) pairs, or a dict.
Headers = list[tuple[str, bytes | str | None]] | dict[str, bytes | str | None]
# (topic, partition): the key of every per-partition fact (offsets, lag).
PartitionKey = tuple[str, int]


class OutputRecord(NamedTuple):
    """One record to produce. A NamedTuple: immutable, and made once per output record on the
    hot path, where a frozen dataclass takes three times as long to build."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Headers | None = None


class RecordColumns(NamedTuple):
    """Many records to one topic, as parallel lists: row i is (values[i], keys[i]). A predictor's
    batch of thousands is produced from its columns, without building an object per record."""

    topic: str
    values: Sequence[bytes]
    keys: Sequence[bytes]


# What a transform returns and a transaction produces: single records and column batches.
Outputs = Sequence[OutputRecord | RecordColumns]


@dataclass(frozen=True, slots=True)
class Failure:
    """A consumed message the transform could not handle. `reason` goes into the dead letter;
    `kind` is a short, fixed label for metrics (reasons are too varied to count by)."""

    message: Message
    reason: str
    kind: str = "invalid"


@dataclass(frozen=True, slots=True)
class TransformResult:
    records: Outputs = ()
    failures: Sequence[Failure] = field(default_factory=tuple)
    # When the inputs' events happened, per input topic: reported once the batch commits
    # (Observer.events_committed), the moment read_committed readers downstream can see it.
    event_times: Mapping[str, Sequence[datetime]] = field(default_factory=dict)
    # Fault injection: set (to the reason, for the log), the batch's records are written in a
    # transaction that is then aborted, and the batch is consumed again. Tests use it to check
    # that read_committed readers never see an aborted record.
    abort: str | None = None


Transform = Callable[[Sequence[Message]], TransformResult]


@runtime_checkable
class StatefulTransform(Protocol):
    """A transform that keeps state across batches (a join, windows), with the hooks the
    transactional processor calls so that its state always matches the committed offsets."""

    def __call__(self, messages: Sequence[Message]) -> TransformResult: ...

    def tick(self) -> TransformResult:
        """A poll brought nothing: emit what time alone makes due (say, a closing window)."""
        ...

    def committed(self) -> None:
        """The last result committed."""
        ...

    def rolled_back(self) -> None:
        """Uncommitted state is void (a failed transaction, partitions assigned or revoked):
        return to the committed state. Also called before the first batch."""
        ...


def position(message: Message) -> tuple[str, int, int]:
    """A record's topic, partition and offset. confluent_kafka types each Optional, as an error
    event has none of them; a record (a message without an error) has all three."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"not a record: {message.error()}")
    return topic, partition, offset


def identity(messages: Sequence[Message], output_topic: str) -> TransformResult:
    """Copy each message to `output_topic`, same key, value and headers."""
    return TransformResult(
        [OutputRecord(output_topic, m.value(), m.key(), m.headers()) for m in messages]
    )


def dead_letter(
    failure: Failure, service: str, topic: str, failed_at: datetime | None = None
) -> OutputRecord:
    """The dead-letter record of a failure: the original key and bytes, and DeadLetter headers
    saying where the message came from and why it failed."""
    message = failure.message
    source_topic, partition, offset = position(message)
    details = DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        service=service,
        # DeadLetter rejects an empty reason; an exception without a message still has a type.
        reason=failure.reason or failure.kind,
        failed_at=failed_at if failed_at is not None else datetime.now(UTC),
    )
    headers: Headers = list(details.to_headers())
    return OutputRecord(topic, message.value(), message.key(), headers)


def next_offsets(messages: Iterable[Message]) -> dict[PartitionKey, int]:
    """The offsets to commit after processing `messages`: one past the last, per partition."""
    offsets: dict[PartitionKey, int] = {}
    for message in messages:
        topic, partition, offset = position(message)
        key = (topic, partition)
        offsets[key] = max(offsets.get(key, 0), offset + 1)
    return offsets


@dataclass(frozen=True, slots=True)
class Consumed:
    """What one consume() handed over, sorted out in one pass: a predictor's batch holds
    thousands, and each call on a Message costs as much as the work it saves."""

    # The records, in the order given; and the error events among them, left out of those.
    messages: list[Message]
    errors: list[Message]
    # Per partition: its first record and its last (what a rewind and a commit need).
    first: dict[PartitionKey, Message]
    last: dict[PartitionKey, Message]
    counts: dict[PartitionKey, int]

    def first_offsets(self) -> dict[PartitionKey, int]:
        """Where reprocessing each partition's records starts."""
        return {key: message.offset() or 0 for key, message in self.first.items()}

    def next_offsets(self) -> dict[PartitionKey, int]:
        """One past each partition's last record: the offsets to commit after them."""
        return {key: (message.offset() or 0) + 1 for key, message in self.last.items()}

    def counts_by_topic(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (topic, _), count in self.counts.items():
            counts[topic] = counts.get(topic, 0) + count
        return counts


def sort_out(batch: Iterable[Message]) -> Consumed:
    """Records apart from error events, and each partition's first and last record. Relies on
    what consume() guarantees: each partition's records come in offset order."""
    consumed = Consumed([], [], {}, {}, {})
    records, errors = consumed.messages.append, consumed.errors.append
    first, last, counts = consumed.first, consumed.last, consumed.counts
    for message in batch:
        if message.error() is not None:
            errors(message)
            continue
        key = (message.topic() or "", message.partition() or 0)
        if key not in last:
            first[key] = message
        last[key] = message
        counts[key] = counts.get(key, 0) + 1
        records(message)
    return consumed


def rewind_targets(
    committed: Mapping[PartitionKey, int], uncommitted_from: Mapping[PartitionKey, int]
) -> dict[PartitionKey, int]:
    """Where to seek after a failed transaction: the committed offset (the truth, whichever way
    an uncertain commit went), else where the uncommitted messages of a partition began (it had
    no commit yet). Partitions with neither have consumed nothing to take back."""
    targets = dict(uncommitted_from)
    targets.update({key: offset for key, offset in committed.items() if offset >= 0})
    return targets


def topic_partitions(offsets: Mapping[PartitionKey, int]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()
    ]


def partition_offsets(partitions: Iterable[TopicPartition]) -> dict[PartitionKey, int]:
    return {(tp.topic, tp.partition): tp.offset for tp in partitions}


def each_record(records: Outputs) -> Iterator[OutputRecord]:
    """Every record, column batches taken apart, in order."""
    for item in records:
        if isinstance(item, RecordColumns):
            for value, key in zip(item.values, item.keys, strict=True):
                yield OutputRecord(item.topic, value, key)
        else:
            yield item


def count_records(records: Outputs) -> int:
    return sum(count_by_topic(records).values())


def count_by_topic(records: Outputs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in records:
        rows = len(item.values) if isinstance(item, RecordColumns) else 1
        if rows:
            counts[item.topic] = counts.get(item.topic, 0) + rows
    return counts


def output_records(
    result: TransformResult, service: str, dead_letter_topic: str
) -> list[OutputRecord | RecordColumns]:
    """Everything a batch produces: the transform's records, then one dead letter per failure."""
    letters = [dead_letter(failure, service, dead_letter_topic) for failure in result.failures]
    return [*result.records, *letters]
