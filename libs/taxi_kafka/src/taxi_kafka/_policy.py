"""Batching and commit policies, and the bookkeeping of processed offsets (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from taxi_kafka._records import PartitionKey


@dataclass(frozen=True)
class BatchPolicy:
    """A batch is what one consume() call returns: up to `max_messages` records, collected for
    at most `max_wait` seconds. `max_wait` is the latency added when traffic is light; in the
    transactional processor a batch is also one transaction, so bigger batches mean fewer
    commits (each costs a few round trips and a marker per partition: about 70 ms on the local
    cluster, so 20,000 records per batch keep the transactional processor within a few percent
    of an at-least-once loop, and 5,000 cost it 40 %; see benchmarks/bench_processor.py)."""

    max_messages: int = 20_000
    max_wait: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.max_messages <= 1_000_000:
            raise ValueError(f"max_messages must be within 1..1000000, got {self.max_messages}")
        if self.max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {self.max_wait}")


@dataclass(frozen=True)
class CommitPolicy:
    """At-least-once commits: after every `every_batches` processed batches, the offsets of what
    was processed (never of what was merely fetched).

    Synchronous commits (the default) wait for the broker's answer, so after a crash at most the
    batches since the last commit are processed again. Asynchronous ones save that round trip
    per commit; a commit that fails or is lost only widens what is reprocessed. Either way, a
    revocation and the shutdown commit synchronously before letting go of the partitions.
    """

    every_batches: int = 1
    asynchronous: bool = False

    def __post_init__(self) -> None:
        if self.every_batches < 1:
            raise ValueError(f"every_batches must be >= 1, got {self.every_batches}")

    def due(self, batches_since_commit: int) -> bool:
        return batches_since_commit >= self.every_batches


@dataclass
class PendingOffsets:
    """Processed but not yet committed offsets (the next offset to read, per partition)."""

    offsets: dict[PartitionKey, int] = field(default_factory=dict)
    batches: int = 0

    def add(self, processed: Mapping[PartitionKey, int]) -> None:
        for key, offset in processed.items():
            self.offsets[key] = max(self.offsets.get(key, offset), offset)
        self.batches += 1

    def take(self, partitions: Iterable[PartitionKey] | None = None) -> dict[PartitionKey, int]:
        """Remove and return the pending offsets of `partitions` (default: all of them)."""
        if partitions is None:
            taken, self.offsets = self.offsets, {}
            self.batches = 0
            return taken
        return {key: self.offsets.pop(key) for key in partitions if key in self.offsets}

    def keep_only(self, partitions: Iterable[PartitionKey]) -> None:
        """Forget partitions this member no longer owns: committing them would move another
        member's position."""
        owned = set(partitions)
        self.offsets = {key: offset for key, offset in self.offsets.items() if key in owned}
