"""What happened to the models, from the events on `model_events` (pure: no I/O).

Drift detected on a model's trips, retrained candidates published or turned down, and the
automatic policy's promotions and rollbacks, each with its evidence. The topic has one
partition, so the order read is the order they happened in.

Drift is also kept apart from the history, per model, kind and source: the banner must know
whether the serving champion has drifted however many other events came since.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from taxi_dashboard.buffers import BoundedMap
from taxi_events import ModelEvent, ModelEventKind, Source

DRIFT_KINDS: frozenset[ModelEventKind] = frozenset({"concept-drift", "data-drift"})
# Events are rare (a detector firing, a retraining, a policy decision): this is a long history.
DEFAULT_EVENTS = 500
# Versions times two kinds times two sources: hundreds of models.
DEFAULT_DRIFT_SERIES = 1_024


@dataclass(frozen=True, slots=True)
class DriftFinding:
    """The latest drift of one kind on one source's trips of a model, and how many were read."""

    latest: ModelEvent
    detections: int


DriftKey = tuple[str, ModelEventKind, Source | None]


class ModelEventLog:
    """The latest `capacity` events in the order read, and the drift found on each model."""

    def __init__(
        self, capacity: int = DEFAULT_EVENTS, drift_series: int = DEFAULT_DRIFT_SERIES
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._events: collections.deque[ModelEvent] = collections.deque(maxlen=capacity)
        self._drift: BoundedMap[DriftKey, DriftFinding] = BoundedMap(drift_series)

    def add(self, event: ModelEvent) -> None:
        self._events.append(event)
        if event.kind in DRIFT_KINDS:
            key = (event.model_version, event.kind, event.source)
            found = self._drift.get(key)
            self._drift.put(key, DriftFinding(event, 1 if found is None else found.detections + 1))

    def history(self) -> list[ModelEvent]:
        """Newest first."""
        return list(reversed(self._events))

    def drift_on(self, version: str | None) -> list[DriftFinding]:
        """The drift found on `version`, the latest detection of each kind and source, newest
        first; none for no version."""
        found = [f for f in self._drift.values() if f.latest.model_version == version]
        return found[::-1]

    def __len__(self) -> int:
        return len(self._events)
