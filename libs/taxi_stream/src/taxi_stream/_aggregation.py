"""The aggregator's state machine: join predictions with trip ends, then window the quality.

No I/O. The caller feeds events with their record timestamps, advances time, and takes two
things after each batch: the ModelMetrics to publish (per source, role, model version and
challenger), and the state changes to write to the changelog in the same transaction (key ->
JSON bytes, None to delete). Replaying a changelog with `apply_change` rebuilds exactly the
state whose changes were committed.

Drift detection rides along: the champion's predictions feed its data-drift checks (their
inputs against the model's training profile), its matches with real labels its concept-drift
detector, and the alarms raised are taken after each batch (`take_alarms`) to be published with
it. The detectors' state is in the changelog too, so a restart neither repeats nor misses one.

The changelog's keys: `join/<source>/<trip_id>`, the sides of a trip still waiting (format 2:
{"format": 2, "champion"|"challenger"|"finish": {"arrived_at_ms", "event"}}), `windows`,
the open windows and cumulative figures (see WindowedQuality.to_json), and `drift`, the drift
detectors (see DriftMonitors.to_json). Changelogs written
before challengers existed (format 1: one side per trip, {"side", "arrived_at_ms", "event"};
windows per source only) are read and migrated: they held the champion's figures.
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
from taxi_model import TrainingProfile
from taxi_stream._drift import DriftAlarm, DriftMonitors, DriftSettings
from taxi_stream._join import SLOTS, MatchedTrip, MetricsKey, Pending, Side, TripJoin
from taxi_stream._windows import ClosedWindow, Tally, WindowedQuality

JOIN_PREFIX = "join/"  # then "<source>/<trip_id>"
WINDOWS_KEY = "windows"
DRIFT_KEY = "drift"
JOIN_FORMAT = 2


@attrs.define
class Aggregation:
    join: TripJoin
    windows: WindowedQuality
    drift: DriftMonitors
    # What changed since take_changes(), serialised only then: a trip whose sides all arrive
    # within one batch is never written, and the windows (whose histograms grow) once a batch:
    # each add() doing it cost ~0.7 ms an event once they had filled.
    _changed_trips: set[TripKey] = attrs.field(factory=set, init=False)
    _windows_changed: bool = attrs.field(default=False, init=False)
    _drift_changed: bool = attrs.field(default=False, init=False)
    _alarms: list[DriftAlarm] = attrs.field(factory=list, init=False)

    @classmethod
    def create(
        cls, ttl_ms: int, window_ms: int, grace_ms: int, drift: DriftSettings | None = None
    ) -> Aggregation:
        return cls(
            TripJoin(ttl_ms),
            WindowedQuality(window_ms=window_ms, grace_ms=grace_ms),
            DriftMonitors(drift or DriftSettings()),
        )

    def add(
        self,
        event: Prediction | TripFinished,
        timestamp_ms: int,
        profile: TrainingProfile | None = None,
    ) -> list[MatchedTrip]:
        """One side of a trip; a prediction's role (champion or challenger) says which, and
        `profile` is its model's training profile, for the data-drift checks. Returns the
        matches it completed."""
        matches = self.join.add(event, timestamp_ms)
        self._changed_trips.add(trip_key(event))
        if isinstance(event, Prediction) and event.role == "champion":
            self._alarms += self.drift.add_prediction(event, profile)
            self._drift_changed = True
        for match in matches:
            self.windows.add_match(match)
            self._windows_changed = True
            self._alarms += self.drift.add_match(match)
            self._drift_changed = True
        return matches

    def take_alarms(self) -> list[DriftAlarm]:
        """The drift alarms raised since the last call, to publish with the batch."""
        alarms, self._alarms = self._alarms, []
        return alarms

    def advance(self, now_ms: int) -> list[ModelMetrics]:
        """Expire trips that waited past the TTL and close the windows due at `now_ms`."""
        for expired in self.join.expire(now_ms):
            self._changed_trips.add(expired.key)
            for key in expired.unmatched():
                self.windows.add_unmatched(key, now_ms)
        closed = self.windows.advance(now_ms)
        self._windows_changed = True
        return [m for window in closed for m in _metrics(window)]

    def take_changes(self) -> dict[str, bytes | None]:
        """The state changes since the last call, to commit with the batch."""
        changes: dict[str, bytes | None] = {}
        for trip in self._changed_trips:
            pending = self.join.get(trip)
            changes[_join_key(trip)] = None if pending is None else _encode_pending(pending)
        if self._windows_changed:
            changes[WINDOWS_KEY] = _compact_json(self.windows.to_json())
        if self._drift_changed:
            changes[DRIFT_KEY] = _compact_json(self.drift.to_json())
        self._changed_trips = set()
        self._windows_changed = self._drift_changed = False
        return changes

    def apply_change(self, key: str, value: bytes | None) -> None:
        """Replay one changelog record (the last one per key wins), of either format."""
        if key == WINDOWS_KEY:
            if value is not None:
                self.windows = WindowedQuality.from_json(json.loads(value))
        elif key == DRIFT_KEY:
            if value is not None:
                self.drift = DriftMonitors.from_json(self.drift.settings, json.loads(value))
        elif (trip := _trip_of(key)) is not None:
            self.join.discard(trip)
            if value is not None:
                self.join.restore(_decode_pending(value))
        else:
            raise ValueError(
                f"unknown changelog key {key!r}: written by another version of the aggregator?"
                " Delete its changelog topic to start the aggregator's state afresh."
            )
        self._changed_trips = set()
        self._windows_changed = self._drift_changed = False
        self._alarms = []


def _compact_json(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


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
    body: dict[str, Any] = {"format": JOIN_FORMAT}
    for slot in SLOTS:
        side: Side | None = getattr(pending, slot)
        if side is not None:
            body[slot] = {
                "arrived_at_ms": side.arrived_at_ms,
                "event": json.loads(encode(side.event)),
            }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _decode_pending(value: bytes) -> Pending:
    body = json.loads(value)
    written = body.get("format", 1)
    if written == 1:
        # One side per trip: a champion's prediction (there were no others) or a trip end.
        slot = "champion" if body["side"] == "prediction" else "finish"
        return Pending(**{slot: _decode_side(slot, body)})
    if written != JOIN_FORMAT:
        raise ValueError(f"a trip in format {written!r}: this aggregator reads {JOIN_FORMAT}")
    return Pending(**{slot: _decode_side(slot, body[slot]) for slot in SLOTS if slot in body})


def _decode_side(slot: str, body: dict[str, Any]) -> Side:
    event_type: type[Prediction | TripFinished] = TripFinished if slot == "finish" else Prediction
    event = decode(json.dumps(body["event"]).encode(), event_type)
    return Side(event, int(body["arrived_at_ms"]))


def _metrics(window: ClosedWindow) -> list[ModelMetrics]:
    start = datetime.fromtimestamp(window.start_ms / 1000, UTC)
    end = datetime.fromtimestamp(window.end_ms / 1000, UTC)
    return [
        _model_metrics(window.key, "window", window.window, start, end),
        _model_metrics(window.key, "cumulative", window.cumulative, None, None),
    ]


def _model_metrics(
    key: MetricsKey,
    scope: Scope,
    tally: Tally,
    start: datetime | None,
    end: datetime | None,
) -> ModelMetrics:
    quality = tally.quality.metrics()
    return ModelMetrics(
        source=key.source,
        scope=scope,
        window_start=start,
        window_end=end,
        count=quality.count,
        rmsle=quality.rmsle,
        mae=quality.mae,
        median_ape=quality.median_ape,
        within_30=quality.within_30,
        unmatched=tally.unmatched,
        model_version=key.model_version,
        role=key.role,
        challenger_version=key.challenger_version,
    )
