"""The facts the clients report, for metrics: an interface and a counting implementation.

Services subclass `Observer` (every method is a no-op by default) to feed Prometheus, without the
library knowing about it. Observers are called from the thread that drives the client, except
what a processor's transactions report (transaction_committed, transaction_aborted,
producer_recreated, delivery_failed): that comes from the thread they commit on.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from taxi_kafka._records import Outputs, PartitionKey, TransformResult, count_by_topic


class Observer:
    """Override what you need."""

    def consumed(self, topic: str, count: int) -> None:
        """`count` records of `topic` were handed to the transform."""

    def produced(self, topic: str, count: int) -> None:
        """`count` records were produced to `topic` (by a processor: and committed)."""

    def batch_processed(self, size: int) -> None:
        """A batch of `size` consumed records was processed and its offsets committed."""

    def events_committed(
        self, event_times: Mapping[str, Sequence[datetime]], committed_at: float
    ) -> None:
        """The outputs of inputs whose events happened at `event_times` (per input topic)
        became visible downstream at `committed_at` (epoch seconds): delivered, or committed in
        a transaction."""

    def lag(self, lags: Mapping[PartitionKey, int]) -> None:
        """Consumer lag per assigned partition, from the client's statistics."""

    def lag_seconds(self, seconds: Mapping[PartitionKey, float]) -> None:
        """Consumer lag per assigned partition in seconds (see taxi_kafka._lag.lag_seconds)."""

    def broker_states(self, client: str, states: Mapping[int, str]) -> None:
        """Connection state (UP, DOWN, ...) per broker id as `client`, the consumer or the
        producer, sees it, from its statistics."""

    def dead_lettered(self, source_topic: str, kind: str) -> None:
        """A record of `source_topic` went to the dead letters; `kind` is the failure's label."""

    def transaction_committed(self, records: int) -> None:
        """A transaction holding `records` produced records committed."""

    def transaction_aborted(self, reason: str) -> None:
        """A transaction was aborted (or its outcome was left to the producer's successor);
        `reason` is the error's name, or DELIBERATE_ABORT when a transform asked for it."""

    def producer_recreated(self, reason: str) -> None:
        """The transactional producer was replaced after a fatal error or a timeout."""

    def delivery_failed(self, topic: str, error: str) -> None:
        """A produced record could not be delivered."""

    def rebalanced(self, event: str, partitions: Sequence[PartitionKey]) -> None:
        """`event` is assign, revoke or lost."""


@dataclass
class Counters(Observer):
    """Counts everything reported: what tests and benchmarks look at."""

    consumed_by_topic: collections.Counter[str] = field(default_factory=collections.Counter)
    produced_by_topic: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    batch_sizes: list[int] = field(default_factory=list)
    last_lag: dict[PartitionKey, int] = field(default_factory=dict)
    commits: int = 0
    aborts: collections.Counter[str] = field(default_factory=collections.Counter)
    producers_recreated: collections.Counter[str] = field(default_factory=collections.Counter)
    delivery_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    rebalances: list[tuple[str, tuple[PartitionKey, ...]]] = field(default_factory=list)
    event_times: collections.defaultdict[str, list[datetime]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def consumed(self, topic: str, count: int) -> None:
        self.consumed_by_topic[topic] += count

    def produced(self, topic: str, count: int) -> None:
        self.produced_by_topic[topic] += count

    def batch_processed(self, size: int) -> None:
        self.batch_sizes.append(size)

    def events_committed(
        self, event_times: Mapping[str, Sequence[datetime]], committed_at: float
    ) -> None:
        for topic, times in event_times.items():
            self.event_times[topic].extend(times)

    def lag(self, lags: Mapping[PartitionKey, int]) -> None:
        self.last_lag = dict(lags)

    def dead_lettered(self, source_topic: str, kind: str) -> None:
        self.dead_letters_by_kind[kind] += 1

    def transaction_committed(self, records: int) -> None:
        self.commits += 1

    def transaction_aborted(self, reason: str) -> None:
        self.aborts[reason] += 1

    def producer_recreated(self, reason: str) -> None:
        self.producers_recreated[reason] += 1

    def delivery_failed(self, topic: str, error: str) -> None:
        self.delivery_errors[topic] += 1

    def rebalanced(self, event: str, partitions: Sequence[PartitionKey]) -> None:
        self.rebalances.append((event, tuple(partitions)))


def report_outputs(
    observer: Observer,
    records: Outputs,
    result: TransformResult | None = None,
    committed_at: float | None = None,
) -> None:
    """Tell the observer what a committed batch produced (`records`: its outputs and dead
    letters) and, given the transform's `result`, which inputs it dead-lettered and when their
    events happened; `committed_at` (epoch seconds) defaults to now."""
    for topic, count in count_by_topic(records).items():
        observer.produced(topic, count)
    if result is None:
        return
    for failure in result.failures:
        observer.dead_lettered(failure.message.topic() or "", failure.kind)
    if result.event_times:
        observer.events_committed(result.event_times, committed_at or time.time())
