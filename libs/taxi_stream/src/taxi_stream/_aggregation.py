"""The aggregator's state machine: join predictions with trip ends, then window the quality.

No I/O. The caller feeds events with their record timestamps, advances time, and takes two
things after each batch: the ModelMetrics to publish, and the state changes to write to the
changelog in the same transaction (key -> JSON bytes, None to delete). Replaying a changelog
with `apply_change` rebuilds exactly the state whose changes were committed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast, get_args

import attrs

from taxi_events import (
    ModelMetrics,
    Prediction,
    Scope,
    Source,
    TripFinished,
    TripKey,
    decode,
    encode,
    trip_key,
)
from taxi_stream._join import Pending, TripJoin
from taxi_stream._windows import ClosedWindow, Tally, WindowedQuality

JOIN_PREFIX = "join/"  # then "<source>/<trip_id>"
WINDOWS_KEY = "windows"
UNKNOWN_MODEL = "unknown"


@attrs.define
class Aggregation:
    join: TripJoin
    windows: WindowedQuality
    _changes: dict[str, bytes | None] = attrs.field(factory=dict, init=False)
    # The windows are serialised once per batch, in take_changes(): each add() doing it cost
    # more the fuller their histograms grew, ~0.7 ms an event.
    _windows_changed: bool = attrs.field(default=False, init=False)

    @classmethod
    def create(cls, ttl_ms: int, window_ms: int, grace_ms: int) -> Aggregation:
        return cls(TripJoin(ttl_ms), WindowedQuality(window_ms=window_ms, grace_ms=grace_ms))

    def add(self, event: Prediction | TripFinished, timestamp_ms: int) -> None:
        match = self.join.add(event, timestamp_ms)
        key = trip_key(event)
        if match is None:  # this side now waits (or a repeat changed nothing)
            self._changes[_join_key(key)] = _encode_pending(self.join[key])
        else:
            self._changes[_join_key(key)] = None
            self.windows.add_match(match)
            self._windows_changed = True

    def advance(self, now_ms: int) -> list[ModelMetrics]:
        """Expire sides that waited past the TTL and close the windows due at `now_ms`."""
        for expired in self.join.expire(now_ms):
            self._changes[_join_key(trip_key(expired.event))] = None
            self.windows.add_unmatched(expired.event.source, now_ms)
        closed = self.windows.advance(now_ms)
        self._windows_changed = True
        return [m for window in closed for m in _metrics(window)]

    def take_changes(self) -> dict[str, bytes | None]:
        """The state changes since the last call, to commit with the batch."""
        if self._windows_changed:
            self._changes[WINDOWS_KEY] = json.dumps(
                self.windows.to_json(), separators=(",", ":")
            ).encode()
            self._windows_changed = False
        changes, self._changes = self._changes, {}
        return changes

    def apply_change(self, key: str, value: bytes | None) -> None:
        """Replay one changelog record (the last one per key wins)."""
        if key == WINDOWS_KEY:
            if value is not None:
                self.windows = WindowedQuality.from_json(json.loads(value))
        elif (trip := _trip_of(key)) is not None:
            self.join.discard(trip)
            if value is not None:
                pending = _decode_pending(value)
                self.join.add(pending.event, pending.arrived_at_ms)
        else:
            raise ValueError(
                f"unknown changelog key {key!r}: written by another version of the aggregator?"
                " Delete its changelog topic to start the aggregator's state afresh."
            )
        self._changes.clear()
        self._windows_changed = False


def _join_key(key: TripKey) -> str:
    source, trip_id = key
    return f"{JOIN_PREFIX}{source}/{trip_id}"


def _trip_of(key: str) -> TripKey | None:
    """The trip a changelog key names; None if it names none."""
    if not key.startswith(JOIN_PREFIX):
        return None
    source, _, trip_id = key[len(JOIN_PREFIX) :].partition("/")
    if trip_id and source in get_args(Source):
        return (cast(Source, source), trip_id)
    return None


def _encode_pending(pending: Pending) -> bytes:
    body: dict[str, Any] = {
        "side": pending.side,
        "arrived_at_ms": pending.arrived_at_ms,
        "event": json.loads(encode(pending.event)),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _decode_pending(value: bytes) -> Pending:
    body = json.loads(value)
    event_type: type[Prediction | TripFinished] = (
        Prediction if body["side"] == "prediction" else TripFinished
    )
    event = decode(json.dumps(body["event"]).encode(), event_type)
    return Pending(event, int(body["arrived_at_ms"]))


def _metrics(window: ClosedWindow) -> list[ModelMetrics]:
    start = datetime.fromtimestamp(window.start_ms / 1000, UTC)
    end = datetime.fromtimestamp(window.end_ms / 1000, UTC)
    return [
        _model_metrics(window.source, "window", window.window, start, end),
        _model_metrics(window.source, "cumulative", window.cumulative, None, None),
    ]


def _model_metrics(
    source: Source,
    scope: Scope,
    tally: Tally,
    start: datetime | None,
    end: datetime | None,
) -> ModelMetrics:
    quality = tally.quality.metrics()
    return ModelMetrics(
        source=source,
        scope=scope,
        window_start=start,
        window_end=end,
        count=quality.count,
        rmsle=quality.rmsle,
        mae=quality.mae,
        median_ape=quality.median_ape,
        within_30=quality.within_30,
        unmatched=tally.unmatched,
        model_version=tally.model_version or UNKNOWN_MODEL,
    )
