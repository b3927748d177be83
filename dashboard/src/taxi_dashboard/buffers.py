"""Bounded containers: whatever the dashboard keeps has a fixed maximum size (pure: no I/O).

The reader runs for days; memory stays flat because every buffer evicts its oldest entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A map of at most `capacity` entries, in order of last write; the oldest write is evicted.

    `evicted` counts the entries pushed out, so a caller can tell "never seen" from "forgotten".
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.evicted = 0
        self._entries: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        """Insert or replace `key`; either way it becomes the newest entry."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[V]:
        """Oldest first."""
        return list(self._entries.values())

    def newest(self, count: int) -> list[V]:
        """The `count` newest values, newest first."""
        found: list[V] = []
        for value in reversed(self._entries.values()):
            if len(found) >= count:
                break
            found.append(value)
        return found

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)


class RateMeter:
    """Events counted per whole second of their own timestamp, for the last `horizon_s` seconds.

    Counting by event time (the Kafka record timestamp) rather than arrival time keeps the rate
    true when records arrive in a burst: after the start-up look-back, or after a failover.
    """

    def __init__(self, horizon_s: int = 300) -> None:
        if horizon_s < 1:
            raise ValueError(f"horizon_s must be at least 1, got {horizon_s}")
        self.horizon_s = horizon_s
        self._counts: dict[int, int] = {}
        self._newest = 0

    def add(self, timestamp_s: float, count: int = 1) -> None:
        second = int(timestamp_s)
        self._newest = max(self._newest, second)
        oldest_kept = self._newest - self.horizon_s + 1
        if second < oldest_kept:
            return
        self._counts[second] = self._counts.get(second, 0) + count
        if len(self._counts) > self.horizon_s:
            for old in [s for s in self._counts if s < oldest_kept]:
                del self._counts[old]

    def __len__(self) -> int:
        return len(self._counts)

    def rate(self, now_s: float, window_s: int = 10, settle_s: int = 1) -> float:
        """Events per second over the `window_s` whole seconds that ended `settle_s` seconds
        before `now_s` (the current second is still filling up)."""
        last = int(now_s) - settle_s
        return sum(self._counts.get(s, 0) for s in range(last - window_s, last)) / window_s

    def series(self, now_s: float, length_s: int, settle_s: int = 1) -> list[tuple[int, int]]:
        """(second, count) for each of the `length_s` whole seconds ending `settle_s` before
        `now_s`, oldest first, zeros included."""
        last = int(now_s) - settle_s
        return [(s, self._counts.get(s, 0)) for s in range(last - length_s, last)]
