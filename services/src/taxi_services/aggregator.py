"""The aggregator: joins predictions with trip ends and publishes model quality.

Consumes `ml_predictions` (the champion's), `shadow_predictions` (a challenger's, of the same
trips) and `finished_trips` (read_committed), matches them by trip (source and trip_id), and
publishes ModelMetrics to `model_metrics` for every tumbling window and cumulatively, per source,
role, model version and challenger: the champion on all its trips (challenger None), and each
challenger head to head with the champion on exactly the trips both predicted.
It also watches the champion for drift: its errors on trips with real labels (concept drift,
river's Page-Hinkley) and its inputs against the training profile on its card (data drift, PSI),
publishing each alarm as a ModelEvent to `model_events` in the same transaction.
Its state (waiting sides, open windows, cumulative figures, drift detectors) changes only through
`aggregator_changelog`, written in the same transaction as the outputs and input offsets, so a
restart rebuilds exactly the state that goes with the committed offsets.

Run one instance: the metrics are global. A second instance with another --instance would take
half the partitions and publish half-figures.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import get_args

import attrs
import click
from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Info

from taxi_events import (
    EventDecodeError,
    ModelEvent,
    ModelMetrics,
    Prediction,
    Role,
    Source,
    TripFinished,
    decode,
    encode,
)
from taxi_kafka import (
    AGGREGATOR_CHANGELOG,
    AGGREGATOR_GROUP,
    DEAD_LETTERS,
    FINISHED_TRIPS,
    METRICS_PORTS,
    ML_PREDICTIONS,
    MODEL_EVENTS,
    MODEL_METRICS,
    SHADOW_PREDICTIONS,
    BatchPolicy,
    Failure,
    KafkaConfig,
    OutputRecord,
    TransactionalProcessor,
    TransformResult,
    read_table,
    stop_on_signals,
)
from taxi_kafka.cli import env_option
from taxi_model import QualityMetrics, TrainingProfile
from taxi_services.metrics import PrometheusObserver, serve_metrics
from taxi_services.options import prefixed, service_options, topic_prefix_option
from taxi_services.registry import ModelRegistry, RegistryTopics, TrainingProfiles
from taxi_stream import Aggregation, DriftAlarm, DriftSettings, MetricsKey

log = logging.getLogger("taxi.aggregator")

SERVICE = "aggregator"
option = env_option(SERVICE)

EVENT_TYPES: dict[str, type[Prediction] | type[TripFinished]] = {
    ML_PREDICTIONS: Prediction,
    SHADOW_PREDICTIONS: Prediction,
    FINISHED_TRIPS: TripFinished,
}
# A prediction's role is its topic's, whatever the record says.
ROLES: dict[str, Role] = {ML_PREDICTIONS: "champion", SHADOW_PREDICTIONS: "challenger"}

# Dead-letter reasons (Failure.kind): a record that is no event of its topic's type, and a
# record from a topic the aggregator does not read.
DECODE = "decode"
TOPIC = "topic"

# Model quality per source, scope "cumulative" (since the start) or "window" (the last closed
# window; NaN when it matched no trip), role ("champion" or "challenger"), model version, and
# challenger: "" for the champion over all its trips, else the challenger's version for the
# head-to-head figures of either role, on the trips both predicted.
_KEY_LABELS = ["source", "role", "model_version", "challenger"]
_QUALITY_LABELS = ["source", "scope", "role", "model_version", "challenger"]
RMSLE = Gauge("taxi_model_rmsle", "Root mean squared log error.", _QUALITY_LABELS)
MAE = Gauge("taxi_model_mae_seconds", "Mean absolute error.", _QUALITY_LABELS)
MEDIAN_APE = Gauge(
    "taxi_model_median_ape_ratio", "Median absolute percentage error (0.18: 18%).", _QUALITY_LABELS
)
WITHIN_30 = Gauge(
    "taxi_model_within_30_ratio", "Share of trips predicted within ±30%.", _QUALITY_LABELS
)
QUALITY_GAUGES = (
    (RMSLE, "rmsle"),
    (MAE, "mae"),
    (MEDIAN_APE, "median_ape"),
    (WITHIN_30, "within_30"),
)
MATCHED = Gauge(
    "taxi_matched_trips", "Trips matched with their prediction, cumulative.", _KEY_LABELS
)
UNMATCHED = Gauge(
    "taxi_unmatched_trips",
    "Trips that expired without their prediction or trip end, cumulative.",
    _KEY_LABELS,
)
WAITING = Gauge(
    "taxi_join_waiting_records", "Trips whose predictions or trip end wait for the rest."
)
MODEL_INFO = Info("taxi_model", "The champion whose predictions are being scored.", ["source"])
DRIFT_KINDS = ("concept-drift", "data-drift")
DRIFT_DETECTED = Counter(
    "taxi_drift_detected",
    "Drift alarms on the champion's trips, published to model_events.",
    ["kind", "source"],
)
DRIFT_STATISTIC = Gauge(
    "taxi_drift_statistic",
    "The drift detectors' current statistics: Page-Hinkley's test value on the log errors"
    " (concept-drift), each input's PSI against the training profile (data-drift).",
    ["kind", "source", "model_version", "statistic"],
)

AggregationFactory = Callable[[], Aggregation]
ProfileLookup = Callable[[str], TrainingProfile | None]


class AggregateTransform:
    """The aggregator's stateful transform for TransactionalProcessor.

    Without new records, windows still close: `tick` moves record time on by the wall-clock
    time since the last record, so the last window of a replay is published too. The result
    carries each event's time, observed as latency once the batch commits. Topic names carry
    `topic_prefix`. `profiles` gives each model version's training profile, for the data-drift
    checks (none: its inputs go unchecked).
    """

    def __init__(
        self,
        new_state: AggregationFactory,
        restore: Callable[[Aggregation], None],
        clock: Callable[[], float] = time.monotonic,
        topic_prefix: str = "",
        profiles: ProfileLookup = lambda _version: None,
    ) -> None:
        self._event_types = {topic_prefix + topic: kind for topic, kind in EVENT_TYPES.items()}
        self._roles = {topic_prefix + topic: role for topic, role in ROLES.items()}
        self._metrics_topic = topic_prefix + MODEL_METRICS
        self._events_topic = topic_prefix + MODEL_EVENTS
        self._profiles = profiles
        self._changelog_topic = topic_prefix + AGGREGATOR_CHANGELOG
        self._new_state = new_state
        self._restore = restore
        self._clock = clock
        # What the last result published: its window figures become gauges once committed,
        # its alarms are counted.
        self._published: list[ModelMetrics] = []
        self._alarms: list[DriftAlarm] = []
        # The champion version of each source's latest match over all trips, in the batches
        # since the last commit and as committed (for the model info gauge).
        self._champions: dict[str, str] = {}
        self._scored: dict[str, str] = {}
        # Restored when the processor says the committed state is the truth (after its
        # producer fenced any predecessor, on assignment, after a failed transaction).
        self.state = new_state()
        self._last_record: tuple[int, float] | None = None  # (record ms, clock when read)

    def __call__(self, messages: Sequence[Message]) -> TransformResult:
        failures = []
        event_times: dict[str, list[datetime]] = {}
        for message in messages:
            event_type = self._event_types.get(message.topic() or "")
            if event_type is None:
                failures.append(Failure(message, f"unexpected topic {message.topic()}", TOPIC))
                continue
            try:
                event = decode(message.value(), event_type)
            except EventDecodeError as exc:
                failures.append(
                    Failure(message, f"undecodable {event_type.__name__}: {exc}", DECODE)
                )
                continue
            timestamp_ms = message.timestamp()[1]
            profile = None
            if isinstance(event, Prediction):
                role = self._roles[message.topic() or ""]
                if event.role != role:
                    event = attrs.evolve(event, role=role)
                if role == "champion":
                    profile = self._profiles(event.model_version)
            for match in self.state.add(event, timestamp_ms, profile):
                if match.role == "champion" and match.challenger_version is None:
                    self._champions[match.source] = match.model_version
            event_times.setdefault(message.topic() or "", []).append(event.produced_at)
            self._last_record = max(self._last_record or (0, 0.0), (timestamp_ms, self._clock()))
        if self._last_record is None:
            return TransformResult((), failures)
        return self._publish(self.state.advance(self._last_record[0]), failures, event_times)

    def tick(self) -> TransformResult:
        """Called when a poll brought nothing: let record time run on with the wall clock."""
        if self._last_record is None:
            return TransformResult()
        record_ms, seen_at = self._last_record
        now_ms = record_ms + int((self._clock() - seen_at) * 1000)
        metrics = self.state.advance(now_ms)
        if not metrics:
            # Nothing to publish: the moved watermark (and any expiry) rides with the next
            # transaction rather than one of its own every idle poll. Lost in a crash, it is
            # worked out again from the records.
            return TransformResult()
        return self._publish(metrics, [])

    def committed(self) -> None:
        """The last result's transaction committed: its figures are now public."""
        WAITING.set(len(self.state.join))
        for key, tally in self.state.windows.cumulative.items():
            quality = tally.quality.metrics()
            MATCHED.labels(**_labels(key)).set(quality.count)
            UNMATCHED.labels(**_labels(key)).set(tally.unmatched)
            if quality.count:
                _set_quality(key, "cumulative", quality)
        self._scored.update(self._champions)
        self._champions = {}
        for source, version in self._scored.items():
            MODEL_INFO.labels(source).info({"version": version})
        for alarm in self._alarms:
            DRIFT_DETECTED.labels(alarm.kind, alarm.source).inc()
        self._alarms = []
        for statistic in self.state.drift.statistics():
            DRIFT_STATISTIC.labels(
                statistic.kind, statistic.source, statistic.model_version, statistic.statistic
            ).set(statistic.value)
        # The last closed window per key; earlier ones of the same batch are superseded.
        for m in self._published:
            if m.scope == "window":
                window = QualityMetrics(m.count, m.rmsle, m.mae, m.median_ape, m.within_30)
                key = MetricsKey(m.source, m.role, m.model_version, m.challenger_version)
                _set_quality(key, "window", window)

    def rolled_back(self) -> None:
        """The last result did not commit (or partitions moved): back to the committed state."""
        self.state = self._new_state()
        self._restore(self.state)
        self._last_record = None
        self._published = []
        self._alarms = []
        self._champions = {}

    def _publish(
        self,
        metrics: list[ModelMetrics],
        failures: list[Failure],
        event_times: Mapping[str, Sequence[datetime]] | None = None,
    ) -> TransformResult:
        self._published = metrics
        self._alarms = self.state.take_alarms()
        records = [OutputRecord(self._metrics_topic, encode(m), m.source.encode()) for m in metrics]
        for alarm in self._alarms:
            log.warning("drift: %s", drift_detail(alarm))
            event = model_event(alarm)
            records.append(
                OutputRecord(self._events_topic, encode(event), alarm.model_version.encode())
            )
        records += [
            OutputRecord(self._changelog_topic, value, key.encode())
            for key, value in self.state.take_changes().items()
        ]
        for m in metrics:
            if m.scope == "window":
                log.info(
                    "%s %s %s%s window %s: %d matched, RMSLE %s, unmatched %d",
                    m.source,
                    m.role,
                    m.model_version,
                    f" vs {m.challenger_version}" if m.challenger_version else "",
                    m.window_start,
                    m.count,
                    f"{m.rmsle:.4f}" if m.rmsle is not None else "-",
                    m.unmatched,
                )
        return TransformResult(records, failures, event_times or {})


def model_event(alarm: DriftAlarm) -> ModelEvent:
    """A drift alarm as the event published to model_events."""
    return ModelEvent(
        kind=alarm.kind,
        model_version=alarm.model_version,
        detail=drift_detail(alarm),
        source=alarm.source,
        detector=alarm.detector,
        statistic=alarm.statistic,
        value=alarm.value,
        threshold=alarm.threshold,
        trips=alarm.trips,
        first_trip_id=alarm.first_trip_id,
        last_trip_id=alarm.last_trip_id,
        evidence=alarm.evidence,
    )


def drift_detail(alarm: DriftAlarm) -> str:
    """One sentence on a drift alarm, for the log, the event and the dashboard."""
    trips = f"{alarm.source} trips"
    measured = f"{alarm.detector} {alarm.value:.3g} > {alarm.threshold:.3g}"
    if alarm.kind == "concept-drift":
        before = alarm.evidence.get("mean_log_error_before")
        after = alarm.evidence.get("mean_log_error_after")
        moved = (
            f" from {before:+.3f} to {after:+.3f}"
            if before is not None and after is not None
            else ""
        )
        return (
            f"model {alarm.model_version}'s mean log error on {trips} moved{moved} "
            f"over its last {alarm.trips:,} scored trips ({measured})"
        )
    feature = alarm.statistic.removeprefix("psi:")
    return (
        f"the {feature} of model {alarm.model_version}'s last {alarm.trips:,} {trips} is not "
        f"spread as in its training data ({measured})"
    )


def _labels(key: MetricsKey) -> dict[str, str]:
    return {
        "source": key.source,
        "role": key.role,
        "model_version": key.model_version,
        "challenger": key.challenger_version or "",
    }


def _set_quality(key: MetricsKey, scope: str, quality: QualityMetrics) -> None:
    """One scope's figures; a figure that is undefined (no trip matched) reads NaN."""
    for gauge, field in QUALITY_GAUGES:
        value = getattr(quality, field)
        gauge.labels(scope=scope, **_labels(key)).set(math.nan if value is None else value)


def changelog_restorer(
    kafka: KafkaConfig, topic: str = AGGREGATOR_CHANGELOG
) -> Callable[[Aggregation], None]:
    def restore(state: Aggregation) -> None:
        table = read_table(kafka, topic)
        for key, value in table.items():
            state.apply_change(key.decode(), value)
        log.info("state restored: %d trip(s) waiting", len(state.join))

    return restore


def _psi_features(_: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    known = DriftSettings().psi_features
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise click.BadParameter(
            f"unknown: {', '.join(unknown)} (choose from {', '.join(known)})", param=param
        )
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@service_options(SERVICE, metrics_port=METRICS_PORTS["aggregator"])
@option(
    "--window",
    type=click.FloatRange(0.1),
    default=10.0,
    help="Seconds per tumbling window.",
)
@option(
    "--grace",
    type=click.FloatRange(0),
    default=2.0,
    help="Seconds a window stays open past its end for late records.",
)
@option(
    "--ttl",
    type=click.FloatRange(1),
    default=120.0,
    help="Seconds a trip's predictions and end wait for each other, from the first to arrive,"
    " before the trip counts as unmatched.",
)
@option(
    "--page-hinkley-threshold",
    type=click.FloatRange(0, min_open=True),
    default=DriftSettings().page_hinkley_threshold,
    help="Concept drift: how far Page-Hinkley's sum of log-error deviations may move before it"
    " alarms (see docs/drift.md for how the default was measured).",
)
@option(
    "--page-hinkley-delta",
    type=click.FloatRange(0),
    default=DriftSettings().page_hinkley_delta,
    help="Concept drift: the change of the log error per trip Page-Hinkley tolerates.",
)
@option(
    "--psi-threshold",
    type=click.FloatRange(0, min_open=True),
    default=DriftSettings().psi_threshold,
    help="Data drift: the PSI of an input against its training profile that alarms.",
)
@option(
    "--psi-features",
    callback=_psi_features,
    default=",".join(DriftSettings().psi_features),
    show_default=True,
    help="Data drift: the inputs watched, comma-separated, from: "
    + ", ".join(DriftSettings().psi_features)
    + ". A replay in pickup order should leave out week_hour: a window of consecutive pickups"
    " spans a few days, never the week of the profile.",
)
@topic_prefix_option()
def main(
    *,
    kafka: KafkaConfig,
    metrics_port: int,
    metrics_address: str,
    instance: str,
    window: float,
    grace: float,
    ttl: float,
    page_hinkley_threshold: float,
    page_hinkley_delta: float,
    psi_threshold: float,
    psi_features: tuple[str, ...],
    topic_prefix: str,
) -> None:
    """Join predictions with trip ends and publish model quality to model_metrics.

    Per source (train, test), role, model version and challenger, for every tumbling window and
    cumulatively: matched count, RMSLE, MAE, median absolute percentage error, share within ±30%
    and unmatched count. The champion (ml_predictions) is scored on all its trips; a challenger
    (shadow_predictions) head to head with it, on exactly the trips both predicted. Drift in
    the champion's errors (trips with real labels) or in its inputs (against the training
    profile on its card in the registry) is published to model_events. Exactly once, with its
    state kept in aggregator_changelog. Run a single instance.
    """
    serve_metrics(metrics_port, metrics_address)

    drift = DriftSettings(
        page_hinkley_threshold=page_hinkley_threshold,
        page_hinkley_delta=page_hinkley_delta,
        psi_threshold=psi_threshold,
        psi_features=psi_features,
    )

    def new_state() -> Aggregation:
        return Aggregation.create(int(ttl * 1000), int(window * 1000), int(grace * 1000), drift)

    group, predictions, shadow, trip_ends, metrics, events, changelog, dead_letters = prefixed(
        topic_prefix,
        AGGREGATOR_GROUP,
        ML_PREDICTIONS,
        SHADOW_PREDICTIONS,
        FINISHED_TRIPS,
        MODEL_METRICS,
        MODEL_EVENTS,
        AGGREGATOR_CHANGELOG,
        DEAD_LETTERS,
    )
    inputs = [predictions, shadow, trip_ends]
    # Every series exists from the start, so an alert on its increase sees the first alarm.
    for kind in DRIFT_KINDS:
        for source in get_args(Source):
            DRIFT_DETECTED.labels(kind, source)
    transform = AggregateTransform(
        new_state,
        changelog_restorer(kafka, changelog),
        topic_prefix=topic_prefix,
        profiles=TrainingProfiles(ModelRegistry(kafka, RegistryTopics.prefixed(topic_prefix))),
    )
    processor = TransactionalProcessor(
        kafka,
        service=SERVICE,
        instance=instance,
        group_id=group,
        input_topics=inputs,
        transform=transform,
        dead_letter_topic=dead_letters,
        batch=BatchPolicy(max_messages=10_000, max_wait=0.2),
        observer=PrometheusObserver(
            SERVICE,
            group=group,
            inputs=inputs,
            outputs=[metrics, events, changelog, dead_letters],
            dead_letter_reasons=[DECODE, TOPIC],
            timed_inputs=inputs,
        ),
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        processor.run(stop)
    log.info("stopped")
