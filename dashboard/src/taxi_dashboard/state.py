"""Everything the dashboard knows, built from the records it reads (pure: no I/O).

The Kafka reader hands each record over as a `RawRecord`; `DashboardState.ingest` decodes it
and files it in a bounded buffer. A record that does not decode is counted and skipped: the
dashboard only reads, so it never writes dead letters. The page works from an immutable
`Snapshot`, taken under the reader's lock and read without it.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from taxi_dashboard.buffers import RateMeter
from taxi_dashboard.deployments import DEFAULT_DECISIONS, DeploymentLog, Roles
from taxi_dashboard.model_events import DEFAULT_EVENTS, DriftFinding, ModelEventLog
from taxi_dashboard.quality import DEFAULT_WINDOWS, QualityHistory, QualityKey, champion_version
from taxi_dashboard.trips import DEFAULT_TRIPS, LiveTrip, TripBoard
from taxi_events import (
    DeadLetter,
    DeploymentDecision,
    EventDecodeError,
    ModelEvent,
    ModelMetrics,
    Prediction,
    TripFinished,
    TripStarted,
    decode,
)
from taxi_kafka import (
    DEAD_LETTERS,
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    MODEL_DEPLOYMENTS,
    MODEL_EVENTS,
    MODEL_METRICS,
    NEW_TRIPS,
)

# The topics the dashboard reads.
TOPICS = (
    NEW_TRIPS,
    ML_PREDICTIONS,
    FINISHED_TRIPS,
    MODEL_METRICS,
    MODEL_DEPLOYMENTS,
    MODEL_EVENTS,
    DEAD_LETTERS,
)
# Topics whose throughput is shown: trips in, predictions out, trip ends.
RATE_TOPICS = (NEW_TRIPS, ML_PREDICTIONS, FINISHED_TRIPS)
RATE_WINDOW_S = 10
RATE_SERIES_S = 120
DEFAULT_DEAD_LETTERS = 50
DEFAULT_PROBLEMS = 20

# As confluent_kafka gives them: a list of pairs, or a dict.
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed record, as plain data."""

    topic: str
    value: bytes | None
    timestamp_ms: int  # the record's Kafka timestamp; 0 or less: unknown
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record that was skipped, and why."""

    topic: str
    reason: str
    seen_at: datetime


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    trips: tuple[LiveTrip, ...]  # least recently changed first
    windows: tuple[ModelMetrics, ...]  # by window start, every series
    cumulative: Mapping[QualityKey, ModelMetrics]  # the newest figures of each series
    model_version: str | None  # the current champion
    dead_letters: tuple[DeadLetter, ...]  # newest first
    dead_letter_count: int
    rates: Mapping[str, float]  # records per second, by topic
    rate_series: Mapping[str, tuple[tuple[int, int], ...]]  # (second, records), by topic
    consumed: Mapping[str, int]
    malformed: Mapping[str, int]
    problems: tuple[Malformed, ...]  # newest first
    last_record_at: datetime | None
    waiting_ends: int = 0
    buffer_sizes: Mapping[str, int] = field(default_factory=dict)
    # The roles the last deployment decision left (None before the first), and the decisions,
    # newest first.
    roles: Roles | None = None
    decisions: tuple[DeploymentDecision, ...] = ()
    # What happened to the models, newest first, and the drift found on the current champion.
    model_events: tuple[ModelEvent, ...] = ()
    champion_drift: tuple[DriftFinding, ...] = ()

    @property
    def has_data(self) -> bool:
        return bool(self.trips or self.windows or self.cumulative)

    @property
    def records_read(self) -> int:
        return sum(self.consumed.values())

    @property
    def malformed_count(self) -> int:
        return sum(self.malformed.values())


class DashboardState:
    def __init__(
        self,
        *,
        trips: int = DEFAULT_TRIPS,
        windows: int = DEFAULT_WINDOWS,
        dead_letters: int = DEFAULT_DEAD_LETTERS,
        decisions: int = DEFAULT_DECISIONS,
        model_events: int = DEFAULT_EVENTS,
        rate_horizon_s: int = RATE_SERIES_S + RATE_WINDOW_S + 5,
    ) -> None:
        self.board = TripBoard(trips)
        self.quality = QualityHistory(windows)
        self.deployments = DeploymentLog(decisions)
        self.model_events = ModelEventLog(model_events)
        self._dead_letters: collections.deque[DeadLetter] = collections.deque(maxlen=dead_letters)
        self._dead_letter_count = 0
        self._rates = {topic: RateMeter(rate_horizon_s) for topic in RATE_TOPICS}
        self._consumed: collections.Counter[str] = collections.Counter()
        self._malformed: collections.Counter[str] = collections.Counter()
        self._problems: collections.deque[Malformed] = collections.deque(maxlen=DEFAULT_PROBLEMS)
        self._last_record_at: datetime | None = None

    def ingest(self, record: RawRecord, now: datetime) -> bool:
        """File one record; False if it was malformed (counted and skipped)."""
        self._consumed[record.topic] += 1
        self._last_record_at = now
        try:
            self._file(record)
        except EventDecodeError as exc:
            self._malformed[record.topic] += 1
            self._problems.appendleft(Malformed(record.topic, str(exc), now))
            return False
        meter = self._rates.get(record.topic)
        if meter is not None:
            seconds = record.timestamp_ms / 1000 if record.timestamp_ms > 0 else now.timestamp()
            meter.add(seconds)
        return True

    def _file(self, record: RawRecord) -> None:
        topic, value = record.topic, record.value
        if topic == ML_PREDICTIONS:
            self.board.predicted(decode(value, Prediction))
        elif topic == FINISHED_TRIPS:
            self.board.finished(decode(value, TripFinished))
        elif topic == NEW_TRIPS:
            decode(value, TripStarted)  # only counted, but only if it is a trip
        elif topic == MODEL_METRICS:
            self.quality.add(decode(value, ModelMetrics))
        elif topic == MODEL_DEPLOYMENTS:
            self.deployments.add(decode(value, DeploymentDecision))
        elif topic == MODEL_EVENTS:
            self.model_events.add(decode(value, ModelEvent))
        elif topic == DEAD_LETTERS:
            # The value is the failed record's original bytes; the headers say why it failed.
            self._dead_letters.appendleft(DeadLetter.from_headers(record.headers))
            self._dead_letter_count += 1
        else:
            raise EventDecodeError(None, f"the dashboard does not read topic {topic!r}")

    def buffer_sizes(self) -> dict[str, int]:
        return {
            "trips": len(self.board),
            "waiting_ends": self.board.waiting_ends,
            "quality": len(self.quality),
            "decisions": len(self.deployments),
            "model_events": len(self.model_events),
            "dead_letters": len(self._dead_letters),
            "malformed": len(self._problems),
            "rate_seconds": sum(len(meter) for meter in self._rates.values()),
        }

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        taken_at = now or datetime.now(UTC)
        now_s = taken_at.timestamp()
        cumulative = self.quality.cumulative()
        roles = self.deployments.roles()
        champion = champion_version(cumulative, roles)
        return Snapshot(
            taken_at=taken_at,
            trips=tuple(self.board.trips()),
            windows=tuple(self.quality.windows()),
            cumulative=cumulative,
            model_version=champion,
            dead_letters=tuple(self._dead_letters),
            dead_letter_count=self._dead_letter_count,
            rates={t: m.rate(now_s, RATE_WINDOW_S) for t, m in self._rates.items()},
            rate_series={t: tuple(m.series(now_s, RATE_SERIES_S)) for t, m in self._rates.items()},
            consumed=dict(self._consumed),
            malformed=dict(self._malformed),
            problems=tuple(self._problems),
            last_record_at=self._last_record_at,
            waiting_ends=self.board.waiting_ends,
            buffer_sizes=self.buffer_sizes(),
            roles=roles,
            decisions=tuple(self.deployments.history()),
            model_events=tuple(self.model_events.history()),
            champion_drift=tuple(self.model_events.drift_on(champion)),
        )
