"""Drift detection on the champion's trips, per source and model version: pure and clock-free.

Concept drift: the champion's errors change. Each scored trip with a real label (a train-source
end; test-source ends are estimates, never labels) gives its log error, log1p(predicted) -
log1p(actual), to river's Page-Hinkley detector (`river.drift.PageHinkley`, both directions).
It alarms once the cumulative deviation from the running mean, less `delta` a trip, passes
`threshold`. A citywide slowdown (every trip 1.5 times longer) moves the log error by
-log(1.5) = -0.41 a trip, about one spread of the error.

Data drift: the champion's inputs change. Each champion prediction is binned by its model's
TrainingProfile (the card's; `taxi_model.TrainingProfile.bin_indices`, the very code that made
the profile) into blocks of `psi_block_trips` trips. Once a block completes and the last
`psi_window_blocks` blocks are all there (a hopping window), each feature's PSI between the
window's shares and the training shares is checked against `psi_threshold`. A model whose card
has no profile (written before profiles) gets no data-drift check; the monitor logs that once.

Re-arming, so that a lasting drift does not alarm on every trip: Page-Hinkley restarts itself on
the trip after an alarm (river resets the detector: a new running mean, from the new level), so
it alarms again only if the errors move again. PSI compares with the fixed training profile, so
a drifted feature stays high: it alarms when its PSI crosses the threshold and not again until a
check has found it back under the threshold.

The state of every monitor is a few numbers and bin counts, and `to_json`/`from_json` restore it
exactly (a restored monitor continues as the original would have), so the aggregator keeps it in
its changelog. The settings are not part of the state: `from_json` takes them.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs
import numpy as np
from river.drift import PageHinkley

from taxi_events import Prediction, Source
from taxi_model import TrainingProfile
from taxi_stream._join import MatchedTrip

log = logging.getLogger(__name__)

DriftKind = Literal["concept-drift", "data-drift"]  # taxi_events.ModelEventKind values
FORMAT = 1
# A share of zero would make PSI infinite: shares are floored here (a tenth of a trip in 1,000).
PSI_FLOOR = 1e-4


@attrs.frozen
class DriftSettings:
    """The detectors' settings. The defaults are chosen by measurement
    (benchmarks/drift_calibration.py; docs/drift.md gives the rule and the figures)."""

    page_hinkley_delta: float = 0.1  # the change per trip in the log error it tolerates
    page_hinkley_threshold: float = 100.0
    page_hinkley_min_trips: int = 30  # trips before it may alarm, after (re)arming
    page_hinkley_alpha: float = 1 - 0.0001  # forgetting factor of its cumulative sums
    psi_threshold: float = 0.25
    psi_block_trips: int = 250
    psi_window_blocks: int = 4
    psi_features: tuple[str, ...] = ("distance_km", "week_hour", "pickup_area")
    # Monitors kept per source: a newer champion's first trip drops the oldest one's.
    versions_kept: int = 3

    @property
    def psi_window_trips(self) -> int:
        return self.psi_block_trips * self.psi_window_blocks


@attrs.frozen
class DriftAlarm:
    """A drift detected: what a ModelEvent of this kind reports."""

    kind: DriftKind
    source: Source
    model_version: str
    detector: str  # "page-hinkley" | "psi"
    statistic: str  # "log_error" | "psi:<feature>"
    value: float
    threshold: float
    trips: int  # trips in the evidence window
    first_trip_id: str
    last_trip_id: str
    evidence: dict[str, float]


@attrs.frozen
class DriftStatistic:
    """A detector's current value, for a gauge: Page-Hinkley's statistic, or a feature's PSI on
    the last complete window."""

    kind: DriftKind
    source: Source
    model_version: str
    statistic: str
    value: float


def log_error(match: MatchedTrip) -> float:
    return math.log1p(match.predicted_duration) - math.log1p(match.actual_duration)


def psi(observed: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of observed bin counts against expected shares."""
    actual = np.maximum(observed / max(observed.sum(), 1), PSI_FLOOR)
    reference = np.maximum(expected, PSI_FLOOR)
    return float(np.sum((actual - reference) * np.log(actual / reference)))


@attrs.frozen
class _Turn:
    """Where a Page-Hinkley sum last turned (its extreme): trips seen then and their mean log
    error. The trips after it are the change's estimate, and the evidence of an alarm."""

    trips: int = 0
    mean: float = 0.0


@attrs.define
class _ConceptMonitor:
    """Page-Hinkley on the log error of one champion's labelled trips since it (re)armed."""

    detector: PageHinkley
    first_trip_id: str | None = None
    turn_increase: _Turn = _Turn()
    turn_decrease: _Turn = _Turn()

    @classmethod
    def create(cls, settings: DriftSettings) -> _ConceptMonitor:
        return cls(_page_hinkley(settings))

    @property
    def trips(self) -> int:
        return int(self.detector._x_mean.n)

    def statistics(self) -> tuple[float, float]:
        """How far each sum is from its extreme: (increase, decrease); 0 before any trip."""
        if self.trips == 0:
            return 0.0, 0.0
        ph = self.detector
        return ph._sum_increase - ph._min_increase, ph._max_decrease - ph._sum_decrease

    def add(self, error: float, trip_id: str) -> bool:
        """One labelled trip's log error; True when it sets the detector off."""
        if self.detector.drift_detected or self.first_trip_id is None:
            # river resets the detector on the update after an alarm: a new evidence window,
            # whose first trip sets both turns.
            self.first_trip_id = trip_id
        ph = self.detector
        ph.update(error)  # type: ignore[no-untyped-call]  # river leaves update() unannotated
        here = _Turn(self.trips, ph._x_mean.get())
        if ph._sum_increase == ph._min_increase:
            self.turn_increase = here
        if ph._sum_decrease == ph._max_decrease:
            self.turn_decrease = here
        return bool(ph.drift_detected)

    def evidence(self) -> dict[str, float]:
        """The mean log error before and after the turn of the sum that passed the threshold."""
        increase, decrease = self.statistics()
        turn = self.turn_decrease if decrease >= increase else self.turn_increase
        trips, mean = self.trips, self.detector._x_mean.get()
        after = trips - turn.trips
        return {
            "mean_log_error_before": turn.mean,
            "mean_log_error_after": (trips * mean - turn.trips * turn.mean) / after
            if after
            else mean,
            "trips_before": float(turn.trips),
            "trips_after": float(after),
            "statistic_increase": increase,
            "statistic_decrease": decrease,
        }

    def to_json(self) -> dict[str, Any]:
        ph = self.detector
        return {
            "n": ph._x_mean.n,
            "mean": ph._x_mean._mean,
            "sum_increase": ph._sum_increase,
            "sum_decrease": ph._sum_decrease,
            # inf (no trip since armed) is no JSON number
            "min_increase": None if math.isinf(ph._min_increase) else ph._min_increase,
            "max_decrease": ph._max_decrease,
            "drift_detected": ph._drift_detected,
            "first_trip_id": self.first_trip_id,
            "turn_increase": [self.turn_increase.trips, self.turn_increase.mean],
            "turn_decrease": [self.turn_decrease.trips, self.turn_decrease.mean],
        }

    @classmethod
    def from_json(cls, settings: DriftSettings, data: Mapping[str, Any]) -> _ConceptMonitor:
        ph = _page_hinkley(settings)
        ph._x_mean.n = data["n"]
        ph._x_mean._mean = data["mean"]
        ph._sum_increase = data["sum_increase"]
        ph._sum_decrease = data["sum_decrease"]
        ph._min_increase = math.inf if data["min_increase"] is None else data["min_increase"]
        ph._max_decrease = data["max_decrease"]
        ph._drift_detected = data["drift_detected"]
        return cls(
            ph,
            data["first_trip_id"],
            _Turn(*data["turn_increase"]),
            _Turn(*data["turn_decrease"]),
        )


def _page_hinkley(settings: DriftSettings) -> PageHinkley:
    return PageHinkley(
        min_instances=settings.page_hinkley_min_trips,
        delta=settings.page_hinkley_delta,
        threshold=settings.page_hinkley_threshold,
        alpha=settings.page_hinkley_alpha,
        mode="both",
    )


@attrs.define
class _Block:
    """The bin counts of consecutive champion predictions, per watched feature."""

    counts: dict[str, list[int]]
    trips: int = 0
    first_trip_id: str = ""
    last_trip_id: str = ""

    @classmethod
    def empty(cls, profile: TrainingProfile, features: tuple[str, ...]) -> _Block:
        return cls({f.name: [0] * f.bins for f in profile.features if f.name in features})

    def add(self, bins: Mapping[str, np.ndarray], trip_id: str) -> None:
        for name, counts in self.counts.items():
            counts[int(bins[name][0])] += 1
        self.first_trip_id = self.first_trip_id or trip_id
        self.last_trip_id = trip_id
        self.trips += 1

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Block:
        return cls(**data)


@attrs.define
class _DataMonitor:
    """PSI per feature of one champion's predictions over a hopping window of blocks."""

    block: _Block
    window: deque[_Block]
    psi: dict[str, float] = attrs.field(factory=dict)  # on the last complete window
    alarmed: set[str] = attrs.field(factory=set)  # features above the threshold at the last check

    @classmethod
    def create(cls, settings: DriftSettings, profile: TrainingProfile) -> _DataMonitor:
        block = _Block.empty(profile, settings.psi_features)
        return cls(block, deque(maxlen=settings.psi_window_blocks))

    def add(
        self, settings: DriftSettings, profile: TrainingProfile, prediction: Prediction
    ) -> list[tuple[str, float]]:
        """One prediction; the features whose PSI crossed the threshold, with it."""
        self.block.add(profile.bin_indices(_columns(prediction)), prediction.trip_id)
        if self.block.trips < settings.psi_block_trips:
            return []
        self.window.append(self.block)
        self.block = _Block.empty(profile, settings.psi_features)
        if len(self.window) < settings.psi_window_blocks:
            return []
        expected = {f.name: np.asarray(f.expected) for f in profile.features}
        crossed = []
        # A feature watched since a restart counts once every block of the window has it.
        watched = set.intersection(*(set(block.counts) for block in self.window))
        for name in (name for name in self.window[-1].counts if name in watched):
            counts = np.sum([block.counts[name] for block in self.window], axis=0)
            self.psi[name] = value = psi(counts, expected[name])
            if value <= settings.psi_threshold:
                self.alarmed.discard(name)
            elif name not in self.alarmed:
                self.alarmed.add(name)
                crossed.append((name, value))
        return crossed

    def to_json(self) -> dict[str, Any]:
        return {
            "block": self.block.to_json(),
            "window": [block.to_json() for block in self.window],
            "psi": self.psi,
            "alarmed": sorted(self.alarmed),
        }

    @classmethod
    def from_json(cls, settings: DriftSettings, data: Mapping[str, Any]) -> _DataMonitor:
        """Restored under `settings`: features no longer watched are dropped."""
        watched = set(settings.psi_features)

        def block(data: Mapping[str, Any]) -> _Block:
            restored = _Block.from_json(data)
            restored.counts = {k: v for k, v in restored.counts.items() if k in watched}
            return restored

        return cls(
            block(data["block"]),
            deque(map(block, data["window"]), maxlen=settings.psi_window_blocks),
            {k: v for k, v in data["psi"].items() if k in watched},
            set(data["alarmed"]) & watched,
        )


def _columns(prediction: Prediction) -> dict[str, list[Any]]:
    """A prediction's inputs as the one-row columns that TrainingProfile.bin_indices reads."""
    return {
        "pickup_datetime": [prediction.pickup_datetime],
        "pickup_latitude": [prediction.pickup_latitude],
        "pickup_longitude": [prediction.pickup_longitude],
        "dropoff_latitude": [prediction.dropoff_latitude],
        "dropoff_longitude": [prediction.dropoff_longitude],
    }


@attrs.define
class _ModelMonitors:
    """The monitors of one champion version on one source."""

    concept: _ConceptMonitor | None = None
    data: _DataMonitor | None = None


class DriftMonitors:
    """Every (source, model version) monitor of one aggregator: feed it the champion's scored
    trips and predictions, take its alarms, and keep its state with `to_json`."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self._monitors: dict[tuple[Source, str], _ModelMonitors] = {}
        self._unprofiled: set[tuple[Source, str]] = set()  # already logged: no data check

    def add_match(self, match: MatchedTrip) -> list[DriftAlarm]:
        """A scored trip. Only the champion's matches over all its trips count, and only those
        with a real label (an estimated end is no label)."""
        if match.role != "champion" or match.challenger_version is not None or match.is_estimate:
            return []
        monitors = self._monitors_of(match.source, match.model_version)
        if monitors.concept is None:
            monitors.concept = _ConceptMonitor.create(self.settings)
        concept = monitors.concept
        if not concept.add(log_error(match), match.trip_id):
            return []
        assert concept.first_trip_id is not None  # set by add
        return [
            DriftAlarm(
                kind="concept-drift",
                source=match.source,
                model_version=match.model_version,
                detector="page-hinkley",
                statistic="log_error",
                value=max(concept.statistics()),
                threshold=self.settings.page_hinkley_threshold,
                trips=concept.trips,
                first_trip_id=concept.first_trip_id,
                last_trip_id=match.trip_id,
                evidence=concept.evidence(),
            )
        ]

    def add_prediction(
        self, prediction: Prediction, profile: TrainingProfile | None
    ) -> list[DriftAlarm]:
        """A prediction and its model's training profile (the card's). Only the champion's
        predictions count; a model without a profile is not checked."""
        if prediction.role != "champion":
            return []
        key = (prediction.source, prediction.model_version)
        if profile is None:
            if key not in self._unprofiled:
                self._unprofiled.add(key)
                log.warning(
                    "model %s has no training profile in its card (trained before profiles): "
                    "its %s trips get no data-drift check",
                    prediction.model_version,
                    prediction.source,
                )
            return []
        monitors = self._monitors_of(*key)
        if monitors.data is None:
            monitors.data = _DataMonitor.create(self.settings, profile)
        data = monitors.data
        crossed = data.add(self.settings, profile, prediction)
        if not crossed:
            return []
        first, last = data.window[0], data.window[-1]
        evidence = {f"psi:{name}": value for name, value in data.psi.items()}
        return [
            DriftAlarm(
                kind="data-drift",
                source=prediction.source,
                model_version=prediction.model_version,
                detector="psi",
                statistic=f"psi:{name}",
                value=value,
                threshold=self.settings.psi_threshold,
                trips=sum(block.trips for block in data.window),
                first_trip_id=first.first_trip_id,
                last_trip_id=last.last_trip_id,
                evidence=evidence,
            )
            for name, value in crossed
        ]

    def statistics(self) -> list[DriftStatistic]:
        """The current value of every detector, for the gauges."""
        return list(self._statistics())

    def _statistics(self) -> Iterator[DriftStatistic]:
        for (source, version), monitors in self._monitors.items():
            if monitors.concept is not None:
                value = max(monitors.concept.statistics())
                yield DriftStatistic("concept-drift", source, version, "log_error", value)
            if monitors.data is not None:
                for name, value in monitors.data.psi.items():
                    yield DriftStatistic("data-drift", source, version, f"psi:{name}", value)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "monitors": [
                {
                    "source": source,
                    "model_version": version,
                    "concept": None if m.concept is None else m.concept.to_json(),
                    "data": None if m.data is None else m.data.to_json(),
                }
                for (source, version), m in self._monitors.items()
            ],
        }

    @classmethod
    def from_json(cls, settings: DriftSettings, data: Mapping[str, Any]) -> DriftMonitors:
        if data.get("format") != FORMAT:
            raise ValueError(
                f"drift monitors in format {data.get('format')!r}: this reads {FORMAT}"
            )
        monitors = cls(settings)
        for entry in data["monitors"]:
            concept, data_monitor = entry["concept"], entry["data"]
            monitors._monitors[entry["source"], entry["model_version"]] = _ModelMonitors(
                None if concept is None else _ConceptMonitor.from_json(settings, concept),
                None if data_monitor is None else _DataMonitor.from_json(settings, data_monitor),
            )
        return monitors

    def _monitors_of(self, source: Source, version: str) -> _ModelMonitors:
        key = (source, version)
        if key not in self._monitors:
            versions = [k for k in self._monitors if k[0] == source]
            for old in versions[: max(len(versions) + 1 - self.settings.versions_kept, 0)]:
                del self._monitors[old]
            self._monitors[key] = _ModelMonitors()
        return self._monitors[key]
