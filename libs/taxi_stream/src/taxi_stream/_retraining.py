"""The retraining service's core, no I/O: a rolling window of labelled trips, when to retrain,
and a candidate trained on the window and compared with the champion (issue 20).

- Labels: trip starts (`new_trips`) and their real ends (`finished_trips`) arrive in any order
  and are joined by trip. Only train-source trips with a possible real duration become training
  rows; every other event is counted by reason (`LabelRejection`) and dropped. The window keeps
  the last `max_trips` labelled trips. A start or end waits for its partner at most `ttl_ms` (on
  the record timestamps the caller passes, so a replay expires the same ones) and at most
  `max_waiting` of each side wait, so memory stays flat whatever arrives.
- Schedule: a candidate is due every `every_trips` trips labelled since the last one, or after a
  drift event as soon as `min_trips` trips were labelled since (the window forgets the trips
  before the drift), but never while the window holds fewer than `min_trips`.
- Candidate: `Retraining.take_window` hands out the window's trips and starts the schedule over;
  `train_candidate` trains on their earliest 80% by pickup time and scores the candidate and the
  champion on the newest 20%, the same trips for both.
- State: `to_bytes` / `from_bytes` (zlib-compressed JSON, columns of plain values) restore the
  window, the waiting sides, the counters and the schedule exactly, for the service to commit in
  the same transaction as a candidate and the input offsets it was trained to.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, get_args

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd

from taxi_events import TripFinished, TripStarted
from taxi_model import TRAIN_COLUMNS, TripDurationModel, evaluate, train_model

# Why a trip start or end never became a training row. Counted per event, except the label
# checks made once both sides are here (estimate, impossible-duration, dropoff-before-pickup):
# those count the trip once.
LabelRejection = Literal[
    "test-source",  # test trips' ends are estimates, never labels
    "estimate",  # a train trip's end flagged is_estimate
    "impossible-duration",  # zero, or longer than MAX_LABEL_DURATION_S
    "dropoff-before-pickup",
    "duplicate",  # that side of the trip is waiting already, or the trip is in the window
    "expired",  # waited more than the TTL for its partner
    "waiting-full",  # pushed out by newer arrivals while max_waiting of its side waited
]
LABEL_REJECTIONS: tuple[LabelRejection, ...] = get_args(LabelRejection)
RetrainTrigger = Literal["drift", "schedule"]
MAX_LABEL_DURATION_S = 24 * 3600
STATE_FORMAT = 1
# What from_bytes inflates at most: far above a real state's JSON (17 MiB at max_trips 50,000
# with both waiting sides full), far below what a corrupt record could make it allocate.
_MAX_STATE_BYTES = 1 << 30
_DATETIME_FIELDS = frozenset({"pickup_datetime", "dropoff_datetime"})
# The training frame's columns (train.csv's, TRAIN_COLUMNS) and dtypes: those of a frame of trip
# events (taxi_model.events_to_frame).
_FRAME_DTYPES: dict[str, npt.DTypeLike] = {
    "id": object,
    "vendor_id": np.int64,
    "pickup_datetime": "datetime64[ns]",
    "dropoff_datetime": "datetime64[ns]",
    "passenger_count": np.int64,
    "pickup_longitude": np.float64,
    "pickup_latitude": np.float64,
    "dropoff_longitude": np.float64,
    "dropoff_latitude": np.float64,
    "store_and_fwd_flag": np.bool_,
    "trip_duration": np.float64,
}


class _Start(NamedTuple):
    """What a trip start gives a training row, and when it arrived."""

    trip_id: str
    arrived_at_ms: int
    vendor_id: int
    pickup_datetime: datetime
    passenger_count: int
    pickup_longitude: float
    pickup_latitude: float
    dropoff_longitude: float
    dropoff_latitude: float
    store_and_fwd_flag: bool


class _End(NamedTuple):
    """What a trip end gives a training row, and when it arrived."""

    trip_id: str
    arrived_at_ms: int
    dropoff_datetime: datetime
    trip_duration: float
    is_estimate: bool


class _Waiting(Protocol):
    """A start or an end waiting for its partner."""

    @property
    def trip_id(self) -> str: ...

    @property
    def arrived_at_ms(self) -> int: ...


W = TypeVar("W", bound=_Waiting)
R = TypeVar("R", _Start, _End)


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _at_most_max_trips(
    instance: RetrainingSettings, attribute: attrs.Attribute[int], value: int
) -> None:
    _positive(instance, attribute, value)
    if value > instance.max_trips:
        # Else the window could never hold enough trips, and no candidate would ever be due.
        raise ValueError(f"min_trips {value} is above max_trips {instance.max_trips}")


@attrs.frozen(kw_only=True)
class RetrainingSettings:
    """How much the window holds and when a candidate is due.

    A trip's end follows its start by seconds in the replay (END_DELAY_RANGE_S): the TTL leaves
    room for a consumer far behind on one of the two topics, and max_waiting bounds the waiting
    sides should one topic stop altogether.
    """

    max_trips: int = attrs.field(default=50_000, validator=_positive)
    min_trips: int = attrs.field(default=1_000, validator=_at_most_max_trips)
    every_trips: int = attrs.field(default=10_000, validator=_positive)
    ttl_ms: int = attrs.field(default=600_000, validator=attrs.validators.ge(0))
    max_waiting: int = attrs.field(default=50_000, validator=_positive)


@attrs.define
class LabelledWindow:
    """Trip starts joined with their real ends: the last `max_trips` labelled train trips."""

    max_trips: int
    ttl_ms: int
    max_waiting: int
    labelled: int = 0  # trips that ever entered the window
    rejected: dict[LabelRejection, int] = attrs.field(
        factory=lambda: dict.fromkeys(LABEL_REJECTIONS, 0)
    )
    # Insertion order is arrival order: the first entry is the oldest, evicted first.
    _trips: dict[str, tuple[_Start, _End]] = attrs.field(factory=dict)
    _starts: dict[str, _Start] = attrs.field(factory=dict)
    _ends: dict[str, _End] = attrs.field(factory=dict)

    def add(self, event: TripStarted | TripFinished, timestamp_ms: int) -> bool:
        """Offer a trip's start or end, arrived at `timestamp_ms`. True when it completed a
        labelled trip, now the newest in the window."""
        if event.source != "train":
            return self._reject("test-source")
        trip_id = event.trip_id
        if trip_id in self._trips:
            return self._reject("duplicate")
        if isinstance(event, TripStarted):
            if trip_id in self._starts:
                return self._reject("duplicate")
            start = _start(event, timestamp_ms)
            waiting_end = self._ends.pop(trip_id, None)
            if waiting_end is None:
                self._wait(self._starts, start)
                return False
            return self._label(start, waiting_end)
        if trip_id in self._ends:
            return self._reject("duplicate")
        end = _End(
            trip_id, timestamp_ms, event.dropoff_datetime, event.trip_duration, event.is_estimate
        )
        waiting_start = self._starts.pop(trip_id, None)
        if waiting_start is None:
            self._wait(self._ends, end)
            return False
        return self._label(waiting_start, end)

    def expire(self, now_ms: int) -> int:
        """Drop the starts and ends that have waited longer than the TTL at `now_ms`; returns
        how many."""
        starts = _expire(self._starts, now_ms, self.ttl_ms)
        expired = starts + _expire(self._ends, now_ms, self.ttl_ms)
        self.rejected["expired"] += expired
        return expired

    def frame(self) -> pd.DataFrame:
        """The window as train.csv's columns (TRAIN_COLUMNS), oldest labelled first."""
        pairs = self._trips.values()
        fields = {
            **_fields((start for start, _ in pairs), _Start),
            **_fields((end for _, end in pairs), _End),
        }
        fields["id"] = fields["trip_id"]
        frame = pd.DataFrame(
            {name: np.array(fields[name], dtype=dtype) for name, dtype in _FRAME_DTYPES.items()}
        )
        return frame[list(TRAIN_COLUMNS)]

    def training_window(self, offsets: Mapping[str, int] | None) -> TrainingWindow:
        """What the window holds now, read to `offsets`."""
        trip_ids = list(self._trips)
        pickups = [start.pickup_datetime for start, _ in self._trips.values()]
        return TrainingWindow(
            trips=len(trip_ids),
            first_trip_id=trip_ids[0],
            last_trip_id=trip_ids[-1],
            first_pickup=min(pickups),
            last_pickup=max(pickups),
            offsets=None if offsets is None else dict(offsets),
        )

    @property
    def waiting_starts(self) -> int:
        return len(self._starts)

    @property
    def waiting_ends(self) -> int:
        return len(self._ends)

    def __len__(self) -> int:
        return len(self._trips)

    def forget_labelled(self) -> None:
        """Empty the window; the starts and ends waiting for their partners stay."""
        self._trips.clear()

    def apply_limits(self, settings: RetrainingSettings) -> None:
        """Take the limits of `settings`; what is over them goes at once, the oldest first."""
        self.max_trips = settings.max_trips
        self.ttl_ms = settings.ttl_ms
        self.max_waiting = settings.max_waiting
        _trim(self._trips, self.max_trips)
        pushed_out = _trim(self._starts, self.max_waiting) + _trim(self._ends, self.max_waiting)
        self.rejected["waiting-full"] += pushed_out

    def to_json(self) -> dict[str, Any]:
        """Its contents; its limits are the settings'."""
        return {
            "labelled": self.labelled,
            "rejected": self.rejected,
            "trips": {
                "starts": _columns((start for start, _ in self._trips.values()), _Start),
                "ends": _columns((end for _, end in self._trips.values()), _End),
            },
            "starts": _columns(self._starts.values(), _Start),
            "ends": _columns(self._ends.values(), _End),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], settings: RetrainingSettings) -> LabelledWindow:
        rejected, trips = data["rejected"], data["trips"]
        pairs = zip(_rows(trips["starts"], _Start), _rows(trips["ends"], _End), strict=True)
        return cls(
            settings.max_trips,
            settings.ttl_ms,
            settings.max_waiting,
            labelled=int(data["labelled"]),
            rejected={reason: int(rejected[reason]) for reason in LABEL_REJECTIONS},
            trips={start.trip_id: (start, end) for start, end in pairs},
            starts={start.trip_id: start for start in _rows(data["starts"], _Start)},
            ends={end.trip_id: end for end in _rows(data["ends"], _End)},
        )

    def _reject(self, reason: LabelRejection) -> bool:
        self.rejected[reason] += 1
        return False

    def _wait(self, waiting: dict[str, W], side: W) -> None:
        waiting[side.trip_id] = side
        self.rejected["waiting-full"] += _trim(waiting, self.max_waiting)

    def _label(self, start: _Start, end: _End) -> bool:
        problem = _label_problem(start, end)
        if problem is not None:
            return self._reject(problem)
        self._trips[start.trip_id] = (start, end)
        _trim(self._trips, self.max_trips)
        self.labelled += 1
        return True


def _start(event: TripStarted, timestamp_ms: int) -> _Start:
    return _Start(
        event.trip_id,
        timestamp_ms,
        event.vendor_id,
        event.pickup_datetime,
        event.passenger_count,
        event.pickup_longitude,
        event.pickup_latitude,
        event.dropoff_longitude,
        event.dropoff_latitude,
        event.store_and_fwd_flag,
    )


def _label_problem(start: _Start, end: _End) -> LabelRejection | None:
    if end.is_estimate:
        return "estimate"
    if not 0 < end.trip_duration <= MAX_LABEL_DURATION_S:
        return "impossible-duration"
    if end.dropoff_datetime < start.pickup_datetime:
        return "dropoff-before-pickup"
    return None


def _trim(entries: dict[str, Any], limit: int) -> int:
    """Remove the oldest entries over `limit`; returns how many."""
    over = max(len(entries) - limit, 0)
    for key in list(itertools.islice(entries, over)):
        del entries[key]
    return over


def _expire(waiting: dict[str, W], now_ms: int, ttl_ms: int) -> int:
    # Every entry is checked: record times from several partitions are not in order.
    late = [key for key, side in waiting.items() if now_ms - side.arrived_at_ms > ttl_ms]
    for key in late:
        del waiting[key]
    return len(late)


@attrs.frozen
class TrainingWindow:
    """The labelled trips a candidate learns from and is tested on."""

    trips: int
    first_trip_id: str  # the oldest labelled trip in the window, by arrival
    last_trip_id: str  # the newest
    first_pickup: datetime  # New York local time, as the trips carry it
    last_pickup: datetime
    # The caller's input positions when the window was taken (say "new_trips/3" -> next
    # offset), if it gave them.
    offsets: dict[str, int] | None = None

    def description(self) -> str:
        """What the model card says the model was trained on."""
        text = (
            f"live window: {self.trips} train trips picked up from "
            f"{self.first_pickup.isoformat()} to {self.last_pickup.isoformat()}"
        )
        if self.offsets:
            text += ", input offsets " + " ".join(
                f"{k}={v}" for k, v in sorted(self.offsets.items())
            )
        return text

    def to_json(self) -> dict[str, Any]:
        body = attrs.asdict(self)
        body["first_pickup"] = self.first_pickup.isoformat()
        body["last_pickup"] = self.last_pickup.isoformat()
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingWindow:
        return cls(
            trips=int(data["trips"]),
            first_trip_id=str(data["first_trip_id"]),
            last_trip_id=str(data["last_trip_id"]),
            first_pickup=datetime.fromisoformat(data["first_pickup"]),
            last_pickup=datetime.fromisoformat(data["last_pickup"]),
            offsets=None if data["offsets"] is None else dict(data["offsets"]),
        )


@attrs.frozen(eq=False)
class TrainingJob:
    """A window taken for training: its trips (train.csv's columns) and why it was taken."""

    trips: pd.DataFrame
    window: TrainingWindow
    trigger: RetrainTrigger


@attrs.define
class Retraining:
    """The labelled window and the schedule of candidates: what the trainer keeps across
    restarts."""

    settings: RetrainingSettings
    window: LabelledWindow
    labelled_since_candidate: int = 0
    drift_pending: bool = False
    # Retrains called for (every_trips reached, or a drift) while the window held fewer than
    # min_trips: they wait until it holds enough.
    deferred_too_small: int = 0
    windows_taken: int = 0
    last_window: TrainingWindow | None = None

    @classmethod
    def create(cls, settings: RetrainingSettings) -> Retraining:
        window = LabelledWindow(settings.max_trips, settings.ttl_ms, settings.max_waiting)
        return cls(settings, window)

    def add(self, event: TripStarted | TripFinished, timestamp_ms: int) -> bool:
        """Offer a trip's start or end; True when it completed a labelled trip."""
        if not self.window.add(event, timestamp_ms):
            return False
        self.labelled_since_candidate += 1
        if self.labelled_since_candidate == self.settings.every_trips:
            self._defer_if_too_small()
        return True

    def expire(self, now_ms: int) -> int:
        """Drop the starts and ends that waited past the TTL at `now_ms`; returns how many."""
        return self.window.expire(now_ms)

    def reconfigure(self, settings: RetrainingSettings) -> None:
        """Go on under other settings, say an operator's after a restart from the state: the
        window and the waiting sides shrink to the new limits at once (the oldest go first),
        and the schedule follows the new ones from now."""
        self.settings = settings
        self.window.apply_limits(settings)

    def drift_detected(self) -> None:
        """A drift event arrived. The trips labelled before it show a concept that no longer
        holds: the window starts over from the trips labelled after it, and a candidate is due
        as soon as it holds `min_trips` of them."""
        self.drift_pending = True
        self.window.forget_labelled()

    def due(self) -> RetrainTrigger | None:
        """Why a candidate is due now, or None."""
        if len(self.window) < self.settings.min_trips:
            return None
        if self.drift_pending:
            return "drift"
        if self.labelled_since_candidate >= self.settings.every_trips:
            return "schedule"
        return None

    def take_window(self, offsets: Mapping[str, int] | None = None) -> TrainingJob | None:
        """If a candidate is due: the window's trips to train it on, and the schedule starts
        over. `offsets`, the input positions the window was read to, are kept with it."""
        trigger = self.due()
        if trigger is None:
            return None
        window = self.window.training_window(offsets)
        self.labelled_since_candidate = 0
        self.drift_pending = False
        self.windows_taken += 1
        self.last_window = window
        # In pickup order, whatever order the trips arrived in: the same trips train the same
        # model, so a trainer restarted mid-training publishes what it would have.
        trips = self.window.frame().sort_values(["pickup_datetime", "id"], kind="stable")
        return TrainingJob(trips.reset_index(drop=True), window, trigger)

    def to_bytes(self) -> bytes:
        """The whole state, as zlib-compressed JSON: at max_trips 50,000 with 50,000 starts and
        as many ends waiting, 3.9 MiB (17 MiB of JSON), made in about 2 s."""
        body = {
            "format": STATE_FORMAT,
            "settings": attrs.asdict(self.settings),
            "window": self.window.to_json(),
            "labelled_since_candidate": self.labelled_since_candidate,
            "drift_pending": self.drift_pending,
            "deferred_too_small": self.deferred_too_small,
            "windows_taken": self.windows_taken,
            "last_window": None if self.last_window is None else self.last_window.to_json(),
        }
        return zlib.compress(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())

    @classmethod
    def from_bytes(cls, data: bytes) -> Retraining:
        """The state `to_bytes` wrote; ValueError if `data` is not one."""
        try:
            inflater = zlib.decompressobj()
            text = inflater.decompress(data, _MAX_STATE_BYTES)
            if inflater.unconsumed_tail or not inflater.eof:
                raise ValueError("truncated, or inflating past the size limit")
            body = json.loads(text)
            if body.get("format") != STATE_FORMAT:
                raise ValueError(
                    f"format {body.get('format')!r}; this trainer reads {STATE_FORMAT}"
                )
            last_window = body["last_window"]
            settings = RetrainingSettings(**body["settings"])
            return cls(
                settings=settings,
                window=LabelledWindow.from_json(body["window"], settings),
                labelled_since_candidate=int(body["labelled_since_candidate"]),
                drift_pending=bool(body["drift_pending"]),
                deferred_too_small=int(body["deferred_too_small"]),
                windows_taken=int(body["windows_taken"]),
                last_window=None if last_window is None else TrainingWindow.from_json(last_window),
            )
        except (zlib.error, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"unreadable retraining state: {exc}") from exc

    def _defer_if_too_small(self) -> None:
        if len(self.window) < self.settings.min_trips:
            self.deferred_too_small += 1


def _fields(rows: Iterable[R], row_type: type[R]) -> dict[str, tuple[Any, ...]]:
    """Rows as one tuple of values per field."""
    columns = list(zip(*rows, strict=True)) or [()] * len(row_type._fields)
    return dict(zip(row_type._fields, columns, strict=True))


def _columns(rows: Iterable[R], row_type: type[R]) -> dict[str, list[Any]]:
    """Rows as one JSON list per field (columns compress better than rows)."""
    return {
        name: [value.isoformat() for value in values] if name in _DATETIME_FIELDS else list(values)
        for name, values in _fields(rows, row_type).items()
    }


def _rows(columns: Mapping[str, list[Any]], row_type: type[R]) -> list[R]:
    values = [
        [datetime.fromisoformat(v) for v in columns[name]]
        if name in _DATETIME_FIELDS
        else columns[name]
        for name in row_type._fields
    ]
    return [row_type._make(row) for row in zip(*values, strict=True)]


# -- candidates ---------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Candidate:
    """A model trained on a window, and it and the champion scored on the same held-out trips:
    the window's newest fifth by pickup time."""

    model: TripDurationModel  # pipeline and card; the version is set when the model is saved
    holdout: pd.DataFrame  # the held-out trips, with the candidate's `predicted_duration`
    window: TrainingWindow
    trigger: RetrainTrigger
    candidate_rmsle: float
    champion_version: str | None  # None: there was no champion to beat
    champion_rmsle: float | None
    min_improvement: float
    better: bool  # its RMSLE is below the champion's, by at least min_improvement


@attrs.frozen
class NoCandidate:
    """A window training refused (too few trips, or too few before the time-split cutoff)."""

    window: TrainingWindow
    trigger: RetrainTrigger
    reason: str


def train_candidate(
    job: TrainingJob, champion: TripDurationModel | None, *, min_improvement: float = 0.0
) -> Candidate | NoCandidate:
    """Train a candidate on the job's window, split by time, and compare it with `champion` on
    the held-out newest trips."""
    try:
        result = train_model(job.trips, job.window.description(), split="time")
    except ValueError as exc:
        return NoCandidate(job.window, job.trigger, str(exc))
    candidate_rmsle = result.card.holdout.rmsle
    # train_model holds out a fifth of at least 100 trips: never none.
    assert candidate_rmsle is not None
    champion_rmsle = None if champion is None else evaluate(champion, result.holdout).rmsle
    better = champion_rmsle is None or (
        candidate_rmsle < champion_rmsle and champion_rmsle - candidate_rmsle >= min_improvement
    )
    return Candidate(
        model=TripDurationModel(result.pipeline, result.card),
        holdout=result.holdout,
        window=job.window,
        trigger=job.trigger,
        candidate_rmsle=candidate_rmsle,
        champion_version=None if champion is None else champion.version,
        champion_rmsle=champion_rmsle,
        min_improvement=min_improvement,
        better=better,
    )
