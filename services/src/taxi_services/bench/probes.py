"""What the bench watches while a part runs, from outside the processes it measures: a
consumer group's members and committed offsets (admin requests, nothing on the data path),
records as read_committed readers see them, and CPU time from /proc."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from taxi_kafka import QUIET_CLIENT_CONFIG, KafkaConfig, read_to_end
from taxi_services.bench.cluster import Backlog
from taxi_services.bench.figures import MachineTicks, Progress, caught_up, cpu_ticks

ADMIN_TIMEOUT = 10.0


class GroupWatch:
    """One consumer group reading one topic."""

    def __init__(self, admin: AdminClient, group: str, topic: str, partitions: int) -> None:
        self._admin = admin
        self.group = group
        self.topic = topic
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def ready(self, members: int) -> bool:
        """Stable, with `members` members that hold every partition between them."""
        future = self._admin.describe_consumer_groups([self.group], request_timeout=ADMIN_TIMEOUT)
        described = future[self.group].result()
        assigned = sum(len(m.assignment.topic_partitions) for m in described.members)
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


class Watcher:
    """A read_committed reader of a whole topic from its start, noting when each record
    became visible. It keeps the raw values: decoding waits until the run is over, so that
    the reader's own work never delays what it sees next."""

    def __init__(self, config: KafkaConfig, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                **config.client_settings(
                    # A short fetch wait: the broker answers as soon as records are visible,
                    # and an empty answer costs one round trip, not latency.
                    {"fetch.wait.max.ms": 10},
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


def records_of(config: KafkaConfig, topic: str) -> tuple[int, int]:
    """How many committed records a topic holds, and how many distinct keys."""
    messages = read_to_end(config, topic)
    return len(messages), len({m.key() for m in messages})


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


def machine_ticks() -> MachineTicks:
    return MachineTicks.parse(Path("/proc/stat").read_text())


def cpu_reading(pids: Sequence[int]) -> tuple[float, MachineTicks]:
    return process_cpu_s(pids), machine_ticks()
