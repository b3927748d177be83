"""The pipeline's health from plain facts about the cluster (pure: the probe gathers the facts).

- Brokers: those in the metadata are up. The expected count is the bootstrap list's length (or
  a flag); a broker seen before and missing now is named.
- Replication: a partition whose in-sync replicas are fewer than its replicas is
  under-replicated; one without a leader is offline.
- Consumer lag of a group: per partition, the end offset (read_committed) minus the group's
  committed offset; a partition the group never committed counts from offset 0, where a new
  group starts (auto.offset.reset=earliest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from taxi_kafka import PartitionKey, lag_of


@dataclass(frozen=True, slots=True)
class PartitionReplicas:
    topic: str
    partition: int
    leader: int  # -1: none
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    lag: int | None  # None: the offsets could not be read
    partitions: int = 0
    committed: int = 0  # partitions with a committed offset
    error: str | None = None

    @property
    def started(self) -> bool:
        return self.committed > 0


@dataclass(frozen=True)
class ClusterHealth:
    checked_at: datetime
    expected_brokers: int
    reachable: bool = False
    error: str | None = None
    brokers_up: tuple[int, ...] = ()
    brokers_missing: tuple[int, ...] = ()
    under_replicated: int = 0
    offline: int = 0
    groups: tuple[GroupLag, ...] = field(default_factory=tuple)

    @property
    def brokers_down(self) -> int:
        if not self.reachable:
            return self.expected_brokers
        return max(self.expected_brokers - len(self.brokers_up), len(self.brokers_missing))

    @property
    def degraded(self) -> bool:
        return bool(self.brokers_down or self.under_replicated or self.offline)


def group_lag(
    group: str, committed: Mapping[PartitionKey, int], ends: Mapping[PartitionKey, int]
) -> GroupLag:
    """The group's total lag over the partitions in `ends` (negative committed: none yet)."""
    commits = {key for key, offset in committed.items() if offset >= 0}
    return GroupLag(
        group,
        sum(lag_of(committed, ends).values()),
        partitions=len(ends),
        committed=len(commits & ends.keys()),
    )


def replication_problems(partitions: Iterable[PartitionReplicas]) -> tuple[int, int]:
    """(under-replicated, offline) partition counts."""
    under = offline = 0
    for partition in partitions:
        if partition.leader < 0:
            offline += 1
        if len(partition.isr) < len(partition.replicas):
            under += 1
    return under, offline


class BrokerMemory:
    """Remembers every broker id seen up, to name the ones missing now."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def missing(self, up: Iterable[int]) -> tuple[int, ...]:
        current = set(up)
        self._seen |= current
        return tuple(sorted(self._seen - current))


def warnings(health: ClusterHealth | None, now: datetime, stale_after_s: float = 15.0) -> list[str]:
    """What the page should warn about, most serious first."""
    if health is None:
        return ["Checking the Kafka cluster..."]
    found = []
    if not health.reachable:
        found.append(
            f"Kafka is unreachable ({health.error or 'no broker answers'}). "
            "Start the cluster with `uv run taxi cluster up` (or `uv run taxi up`)."
        )
    elif health.brokers_down:
        names = ", ".join(str(b) for b in health.brokers_missing)
        which = f" (broker {names})" if names else ""
        found.append(
            f"{health.brokers_down} of {health.expected_brokers} brokers down{which}: "
            "the pipeline keeps going on the others."
        )
    if health.offline:
        found.append(f"{health.offline} partitions have no leader: their writes are paused.")
    if health.under_replicated:
        found.append(f"{health.under_replicated} partitions are under-replicated.")
    age = (now - health.checked_at).total_seconds()
    if age > stale_after_s:
        found.append(f"The cluster health check is {age:.0f} s old.")
    return found
