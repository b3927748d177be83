"""Replaying trip rows as live events: each trip starts on schedule and ends a little later.

Pure and clock-free: the caller passes the time. The whole position of a replay fits in a small
`ReplayCheckpoint`, which the producer commits in the same Kafka transaction as the events it
covers, so a restarted producer neither starts a trip twice nor forgets a trip's end. An
`InjectedDrift` changes every trip from a given one on; the checkpoint says whether it has begun.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd

from taxi_events import Source, TripFinished, TripStarted
from taxi_model import estimate_durations
from taxi_stream._injected_drift import InjectedDrift

log = logging.getLogger(__name__)

# The original design sent a trip's end 2-5 s after its start.
END_DELAY_RANGE_S = (2.0, 5.0)


def end_delays_s(
    trip_ids: npt.ArrayLike, durations_s: npt.ArrayLike, time_scale: float | None
) -> npt.NDArray[np.float64]:
    """Seconds between a trip's start event and its end event.

    With a time scale, the trip's (real or estimated) duration divided by it. Without, uniform
    in 2-5 s, drawn from a hash of the trip id so that a restarted replay keeps every delay.
    """
    if time_scale is not None:
        if time_scale <= 0:
            raise ValueError(f"time scale must be positive, got {time_scale}")
        return np.asarray(durations_s, dtype=np.float64) / time_scale
    low, high = END_DELAY_RANGE_S
    fractions = [_unit_hash(str(t)) for t in np.asarray(trip_ids)]
    return low + (high - low) * np.asarray(fractions, dtype=np.float64)


def _unit_hash(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@attrs.frozen
class ReplayCheckpoint:
    """Where a replay stands: how far into the data it is, and the ends still owed.

    Positions count rows over every generation: position p is row p % rows of generation
    p // rows + 1, so one number says both where in the file and which pass over it.
    """

    # Which rows, in which order, with which drift: a restart against others is refused.
    fingerprint: str
    position: int  # rows begun so far; the next trip to start is at this position
    started: int  # trips started so far (rows that made no valid event are not trips)
    pending_ends: tuple[tuple[int, int], ...]  # (due time in epoch ms, position), ascending
    drift: str | None = None  # the injected drift, described, to say how a restart differs
    # The position of the first drifted trip once it has started: every trip from it on is.
    drift_position: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "position": self.position,
            "started": self.started,
            "pending_ends": [list(p) for p in self.pending_ends],
            "drift": self.drift,
            "drift_position": self.drift_position,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayCheckpoint:
        # Checkpoints written before generations had one pass, counted in rows: "next_row".
        position = int(data["position"] if "position" in data else data["next_row"])
        drift_position = data.get("drift_position")
        return cls(
            fingerprint=str(data["fingerprint"]),
            position=position,
            started=int(data.get("started", position)),
            pending_ends=tuple((int(due), int(at)) for due, at in data["pending_ends"]),
            drift=data.get("drift"),
            drift_position=None if drift_position is None else int(drift_position),
        )


@attrs.frozen
class ReplayStep:
    started: list[TripStarted]
    finished: list[TripFinished]
    bad_rows: dict[str, int]  # reason -> rows skipped because they make no valid event


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for other data than this replay's."""


class DriftMismatchError(CheckpointMismatchError):
    """A checkpoint was written by a replay with another injected drift (or none)."""


def generation_trip_id(row_id: str, generation: int) -> str:
    """A trip's id in a generation: the file's own id first, then the id with -g<n> after it."""
    return row_id if generation == 1 else f"{row_id}-g{generation}"


class Replay:
    """Rows of a Kaggle-schema frame as TripStarted and TripFinished events over time.

    `rate` is trips per second (None: as fast as the caller asks). Train rows end with their
    real duration; test rows, which have none, with `estimate_durations`, flagged is_estimate.

    Without `loop` the replay is done once every row has started and ended. With it, the last
    row is followed by the first again, in a new generation whose trip ids are new
    (`generation_trip_id`), so no trip is started twice. `stop_after(n)` ends it sooner.

    A `drift` changes every trip from its `from_trip` on, counted over the trips the replay
    starts; its checkpoints carry it, so a restart goes on drifting from the same trip.
    """

    def __init__(
        self,
        trips: pd.DataFrame,
        source: Source,
        *,
        rate: float | None = None,
        time_scale: float | None = None,
        loop: bool = False,
        drift: InjectedDrift | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.source: Source = source
        self.drift = drift
        self._rate = rate
        self._is_estimate = "trip_duration" not in trips.columns
        durations = (
            estimate_durations(trips)
            if self._is_estimate
            else trips["trip_duration"].to_numpy(np.float64)
        )
        self._durations = np.maximum(durations, 0.0)
        self._columns = _Columns.of(trips, self._durations)
        self._delays_ms = np.rint(
            end_delays_s(trips["id"].to_numpy(), self._durations, time_scale) * 1000
        ).astype(np.int64)
        self.fingerprint = replay_fingerprint(trips, source, drift)
        self.rows = len(trips)
        # Where starting stops: after one pass, or never (an empty file has nothing to loop).
        self._stop_at: int | None = None if loop and self.rows else self.rows
        self._position = 0
        self._started_count = 0
        self._pending: list[tuple[int, int]] = []  # heap of (due ms, position)
        self._anchor: tuple[int, int] | None = None  # (ms, position): when pacing (re)started
        self._drift_position: int | None = None  # see ReplayCheckpoint.drift_position

    @property
    def position(self) -> int:
        return self._position

    @property
    def generation(self) -> int:
        """The pass over the data that the next trip to start belongs to (1 for the first)."""
        return self._position // self.rows + 1 if self.rows else 1

    @property
    def started(self) -> int:
        return self._started_count

    @property
    def pending_ends(self) -> int:
        return len(self._pending)

    @property
    def starting(self) -> bool:
        """Whether trips are still to start."""
        return self._stop_at is None or self._position < self._stop_at

    @property
    def done(self) -> bool:
        return not self.starting and not self._pending

    @property
    def drifting(self) -> bool:
        """Whether the drift has begun: its first trip has started."""
        return self._drift_position is not None

    def stop_after(self, trips: int) -> None:
        """Start at most `trips` more trips from where the replay stands now (a row that makes
        no valid trip counts as one)."""
        limit = self._position + trips
        self._stop_at = limit if self._stop_at is None else min(self._stop_at, limit)

    def checkpoint(self) -> ReplayCheckpoint:
        return ReplayCheckpoint(
            self.fingerprint,
            self._position,
            self._started_count,
            tuple(sorted(self._pending)),
            drift=_described(self.drift),
            drift_position=self._drift_position,
        )

    def restore(self, checkpoint: ReplayCheckpoint) -> None:
        """Continue from `checkpoint` (before `stop_after`, which counts from where it stands)."""
        if checkpoint.fingerprint != self.fingerprint:
            if checkpoint.drift != _described(self.drift):
                raise DriftMismatchError(
                    f"the checkpoint's replay injects {checkpoint.drift or 'no drift'}, this "
                    f"one {_described(self.drift) or 'no drift'}"
                )
            raise CheckpointMismatchError(
                "the checkpoint belongs to other trip data (fingerprint "
                f"{checkpoint.fingerprint}, this data {self.fingerprint})"
            )
        self._position = checkpoint.position
        self._started_count = checkpoint.started
        self._pending = list(checkpoint.pending_ends)
        heapq.heapify(self._pending)
        self._anchor = None
        self._drift_position = checkpoint.drift_position

    def step(self, now_ms: int, max_starts: int) -> ReplayStep:
        """The starts due by `now_ms` (at most `max_starts`) and the ends due by then."""
        if self._anchor is None:
            self._anchor = (now_ms, self._position)
        first = self._position
        last = first + max_starts
        if self._stop_at is not None:
            last = min(last, self._stop_at)
        due = first
        while due < last and self._start_due_ms(due, now_ms) <= now_ms:
            due += 1
        bad_rows: dict[str, int] = {}
        produced_at = datetime.fromtimestamp(now_ms / 1000, UTC)
        started = self._started(first, due, now_ms, produced_at, bad_rows)
        self._position = due
        self._started_count += len(started)
        finished = []
        while self._pending and self._pending[0][0] <= now_ms:
            _, position = heapq.heappop(self._pending)
            finished.append(self._finished(position, produced_at))
        return ReplayStep(started, finished, bad_rows)

    def _start_due_ms(self, position: int, fallback: int) -> int:
        if self._rate is None:
            return fallback
        anchor_ms, anchor_position = self._anchor or (fallback, position)
        return anchor_ms + int((position - anchor_position) * 1000 / self._rate)

    def _started(
        self, first: int, last: int, now_ms: int, produced_at: datetime, bad: dict[str, int]
    ) -> list[TripStarted]:
        c = self._columns
        events: list[TripStarted] = []
        for position in range(first, last):
            row, generation = position % self.rows, position // self.rows + 1
            try:
                event = TripStarted(
                    trip_id=generation_trip_id(str(c.ids[row]), generation),
                    vendor_id=int(c.vendor_id[row]),
                    pickup_datetime=_local_time(c.pickup_s[row]),
                    passenger_count=int(c.passenger_count[row]),
                    pickup_longitude=float(c.pickup_longitude[row]),
                    pickup_latitude=float(c.pickup_latitude[row]),
                    dropoff_longitude=float(c.dropoff_longitude[row]),
                    dropoff_latitude=float(c.dropoff_latitude[row]),
                    store_and_fwd_flag=bool(c.store_and_fwd[row]),
                    source=self.source,
                    produced_at=produced_at,
                )
            except (ValueError, TypeError) as exc:
                reason = f"invalid {getattr(exc, 'field', 'row')}"
                bad[reason] = bad.get(reason, 0) + 1
                log.warning("row %d (%s) makes no valid trip start: %s", row, c.ids[row], exc)
                continue
            delay_ms = int(self._delays_ms[row])
            trip_number = self._started_count + len(events)
            if self.drift is not None and self.drift.applies_to(trip_number):
                if self._drift_position is None:
                    self._drift_position = position
                event = self.drift.kind.start(event)
                delay_ms = self.drift.kind.end_delay_ms(delay_ms)
            events.append(event)
            heapq.heappush(self._pending, (now_ms + delay_ms, position))
        return events

    def _finished(self, position: int, produced_at: datetime) -> TripFinished:
        c = self._columns
        row, generation = position % self.rows, position // self.rows + 1
        event = TripFinished(
            trip_id=generation_trip_id(str(c.ids[row]), generation),
            dropoff_datetime=_local_time(c.dropoff_s[row]),
            trip_duration=float(self._durations[row]),
            is_estimate=self._is_estimate,
            source=self.source,
            produced_at=produced_at,
        )
        # Trip numbers grow with positions: every trip from the first drifted one on is.
        drifted_from = self._drift_position
        if self.drift is not None and drifted_from is not None and position >= drifted_from:
            return self.drift.kind.end(event)
        return event


def _described(drift: InjectedDrift | None) -> str | None:
    return None if drift is None else drift.describe()


_EPOCH = datetime(1970, 1, 1)


def _local_time(epoch_s: np.int64) -> datetime:
    return _EPOCH + timedelta(seconds=int(epoch_s))


@attrs.frozen
class _Columns:
    """The frame as plain arrays: reading one trip from them is far cheaper than `iloc`."""

    ids: npt.NDArray[np.object_]
    vendor_id: npt.NDArray[np.int64]
    pickup_s: npt.NDArray[np.int64]
    dropoff_s: npt.NDArray[np.int64]
    passenger_count: npt.NDArray[np.int64]
    pickup_longitude: npt.NDArray[np.float64]
    pickup_latitude: npt.NDArray[np.float64]
    dropoff_longitude: npt.NDArray[np.float64]
    dropoff_latitude: npt.NDArray[np.float64]
    store_and_fwd: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, trips: pd.DataFrame, durations_s: npt.NDArray[np.float64]) -> _Columns:
        pickup_s = _epoch_seconds(trips["pickup_datetime"])
        dropoff_s = (
            _epoch_seconds(trips["dropoff_datetime"])
            if "dropoff_datetime" in trips.columns
            else pickup_s + np.rint(durations_s).astype(np.int64)
        )
        return cls(
            ids=trips["id"].to_numpy(dtype=object),
            vendor_id=trips["vendor_id"].to_numpy(np.int64),
            pickup_s=pickup_s,
            dropoff_s=dropoff_s,
            passenger_count=trips["passenger_count"].to_numpy(np.int64),
            pickup_longitude=trips["pickup_longitude"].to_numpy(np.float64),
            pickup_latitude=trips["pickup_latitude"].to_numpy(np.float64),
            dropoff_longitude=trips["dropoff_longitude"].to_numpy(np.float64),
            dropoff_latitude=trips["dropoff_latitude"].to_numpy(np.float64),
            store_and_fwd=(trips["store_and_fwd_flag"].astype(str) == "Y").to_numpy(),
        )


def _epoch_seconds(times: pd.Series) -> npt.NDArray[np.int64]:
    return pd.to_datetime(times).to_numpy().astype("datetime64[s]").astype(np.int64)


def replay_fingerprint(
    trips: pd.DataFrame, source: Source, drift: InjectedDrift | None = None
) -> str:
    """Which rows a replay of `trips` goes through, in which order, and the drift it injects:
    its checkpoints' key. Without a drift, the key of checkpoints written before drifts were."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(source.encode())
    digest.update(str(len(trips)).encode())
    digest.update(pd.util.hash_pandas_object(trips["id"], index=False).to_numpy().tobytes())
    if drift is not None:
        digest.update(drift.describe().encode())
    return digest.hexdigest()
