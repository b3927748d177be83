"""What the bench watches while a part runs, from outside the processes it measures: a
consumer group's members and committed offsets, or the records a design that commits no offsets
has written (admin requests, nothing on the data path), records as read_committed readers see
them, and CPU time from /proc."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from taxi_kafka import QUIET_CLIENT_CONFIG, KafkaConfig, end_offsets, read_to_end
from taxi_services.bench.cluster import Backlog
from taxi_services.bench.figures import MachineTicks, Progress, caught_up, cpu_ticks

ADMIN_TIMEOUT = 10.0


class Watch(Protocol):
    """How far a design has got through a backlog written to `topic`."""

    @property
    def topic(self) -> str: ...

    def progress(self, backlog: Backlog) -> Progress: ...

    def close(self) -> None: ...


class GroupWatch:
    """One consumer group reading one topic: its progress is the offsets it has committed."""

    def __init__(self, admin: AdminClient, group: str, topic: str, partitions: int) -> None:
        self._admin = admin
        self.group = group
        self._topic = topic
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    @property
    def topic(self) -> str:
        return self._topic

    def close(self) -> None:
        """Nothing to close: it asks with the bench's admin client."""

    def ready(self, members: int) -> bool:
        """Stable, with `members` members that hold every partition of the topic between them
        (and maybe others: quix-streams' group_by reads its repartition topic too)."""
        future = self._admin.describe_consumer_groups([self.group], request_timeout=ADMIN_TIMEOUT)
        described = future[self.group].result()
        assigned = sum(
            tp.topic == self._topic
            for m in described.members
            for tp in m.assignment.topic_partitions
        )
        return (
            described.state == ConsumerGroupState.STABLE
            and len(described.members) == members
            and assigned == len(self._partitions)
        )

    def progress(self, backlog: Backlog) -> Progress:
        """How many records of `backlog` the group has committed, now."""
        request = ConsumerGroupTopicPartitions(self.group, self._partitions)
        futures = self._admin.list_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT)
        committed = {
            tp.partition: tp.offset for tp in futures[self.group].result().topic_partitions
        }
        return Progress(time.monotonic(), caught_up(committed, backlog.ends, backlog.begins))


class OutputWatch:
    """A design reading `topic` and writing one record to `sink` per record read, whose
    committed offsets do not tell its progress: bytewax commits none (it keeps them in its own
    state, if anywhere), quix-streams' group_by commits its input once re-keyed, before the
    trips are predicted. Its progress is the records on `sink`, written only by that design:
    without transactions (bytewax), the sum of its partitions' end offsets (admin requests);
    with `transactional` outputs, whose commit markers take offsets too, the records a
    read_committed reader sees (the bench then reads every output as it comes)."""

    def __init__(
        self,
        config: KafkaConfig,
        admin: AdminClient,
        topic: str,
        sink: str,
        partitions: int,
        *,
        transactional: bool = False,
    ) -> None:
        self._admin = admin
        self._topic = topic
        self.sink = sink
        self._partitions = [(sink, p) for p in range(partitions)]
        self._reader = Watcher(config, sink, partitions) if transactional else None
        # The backlog being drained, and the records written before it was revealed.
        self._backlog: Backlog | None = None
        self._before = 0

    @property
    def topic(self) -> str:
        return self._topic

    def written(self) -> int:
        """Records written to the sink so far."""
        if self._reader is None:
            return sum(end_offsets(self._admin, self._partitions, ADMIN_TIMEOUT).values())
        while self._reader.poll(0.001):
            pass
        return len(self._reader.seen)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def progress(self, backlog: Backlog) -> Progress:
        """Records written for `backlog`: since the first call about it (made before it is
        revealed), at most one per record of it."""
        written = self.written()
        if self._backlog is not backlog:
            self._backlog, self._before = backlog, written
        return Progress(time.monotonic(), min(written - self._before, backlog.count))


class Watcher:
    """A read_committed reader of a whole topic from its start, noting when each record
    became visible. It keeps the raw values: decoding waits until the run is over, so that
    the reader's own work never delays what it sees next."""

    def __init__(self, config: KafkaConfig, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                **config.client_settings(
                    # The broker answers a read_committed fetch as soon as records become
                    # visible, so a long wait costs no latency; a 10 ms one made two watchers
                    # send the brokers some 600 empty fetches a second at low rates.
                    {"fetch.wait.max.ms": 500},
                    {
                        "group.id": f"taxi-bench-watcher-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                    },
                    what=f"{topic} watcher",
                ),
                "logger": QUIET_CLIENT_CONFIG["logger"],
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.seen: list[tuple[float, bytes | None]] = []

    def poll(self, timeout: float) -> int:
        """Read what is visible (waiting up to `timeout`); returns how many records came."""
        messages = self._consumer.consume(10_000, timeout)
        now = time.time()
        values = [(now, m.value()) for m in messages if m.error() is None]
        self.seen.extend(values)
        return len(values)

    def close(self) -> None:
        self._consumer.close()


def records_of(config: KafkaConfig, topic: str, *, excluding: bytes = b"") -> tuple[int, int]:
    """How many committed records a topic holds, and how many distinct keys; with
    `excluding`, leaving out the records whose key starts with it."""
    keys = [m.key() for m in read_to_end(config, topic)]
    if excluding:
        keys = [k for k in keys if k is None or not k.startswith(excluding)]
    return len(keys), len(set(keys))


def timestamped_values(config: KafkaConfig, topic: str) -> list[tuple[float, bytes]]:
    """Every committed record's producer timestamp (epoch s) and value, in offset order."""
    return [(m.timestamp()[1] / 1000, _value(m)) for m in read_to_end(config, topic)]


def _value(message: Message) -> bytes:
    value = message.value()
    if value is None:
        raise ValueError(f"a record without a value on {message.topic()}")
    return value


def process_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds used so far by the processes `pids` (0 for any that is gone)."""
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A memory figure of process `pid` from /proc (VmRSS: resident now; VmHWM: the most
    resident since it started), in MiB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # A process that has exited but not been reaped has no memory lines left.
    kib = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":")), None
    )
    return None if kib is None else kib / 1024


def machine_ticks() -> MachineTicks:
    return MachineTicks.parse(Path("/proc/stat").read_text())


def cpu_reading(pids: Sequence[int]) -> tuple[float, MachineTicks]:
    return process_cpu_s(pids), machine_ticks()
