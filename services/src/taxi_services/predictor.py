"""The predictor: each TripStarted on `new_trips` becomes one Prediction on `ml_predictions`,
exactly once (one Kafka transaction per batch), with one vectorised model call per batch and
model. Its models come from the registry (taxi_services.deployment)."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import click
import numpy as np
from confluent_kafka import Message
from prometheus_client import Counter, Histogram, Info
from threadpoolctl import threadpool_limits

from taxi_events import POISON_PREFIX
from taxi_events.columns import TripStartColumns, decode_trip_starts, encode_predictions
from taxi_kafka import (
    DEAD_LETTERS,
    METRICS_PORTS,
    ML_PREDICTIONS,
    NEW_TRIPS,
    PREDICTOR_GROUP,
    SHADOW_PREDICTIONS,
    BatchPolicy,
    Failure,
    KafkaConfig,
    RecordColumns,
    TransactionalProcessor,
    TransformResult,
    stop_on_signals,
)
from taxi_kafka.cli import env_option
from taxi_model import REJECT_REASONS, RejectReason, TripDurationModel, with_compiled_trees
from taxi_services.deployment import Deployment, ModelFollower, RejectionHandler
from taxi_services.metrics import PrometheusObserver, serve_metrics
from taxi_services.options import prefixed, service_options, topic_prefix_option
from taxi_services.registry import RegistryTopics

log = logging.getLogger("taxi.predictor")

SERVICE = "predictor"
option = env_option(SERVICE)

# The dead-letter reason (Failure.kind) of a record that is no TripStarted.
DECODE = "decode"
# Threads per model call. The brokers share the cores, and under contention OpenMP's threads
# wait for one another: on 2 busy cores a batch then costs 2-5 times the CPU and a one-row call
# ten times the time (`taxi bench`). More instances, one thread each, scale instead.
MODEL_THREADS = 1

INFERENCE_SECONDS = Histogram(
    "taxi_model_inference_seconds",
    "Time of one vectorised model call on a batch.",
    ["role"],
    # Up to seconds: a busy machine slows a big batch's call down that far.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_INFO = Info("taxi_predictor_model", "The models this predictor predicts with.")
REJECTED = Counter(
    "taxi_model_rejected",
    "Models from the registry that failed a check; the running model stayed.",
    ["reason"],
)
SWITCHES = Counter("taxi_model_switches", "Changes of the models predicted with.")


def utc_now() -> datetime:
    return datetime.now(UTC)


def rejected(version: str, reason: RejectReason) -> None:
    REJECTED.labels(reason).inc()


def switched(deployment: Deployment) -> None:
    SWITCHES.inc()
    challenger = deployment.challenger.version if deployment.challenger else ""
    MODEL_INFO.info({"champion": deployment.champion.version, "challenger": challenger})


class DeliberateAborts:
    """Fault injection: which trips of a batch are markers (their id's CRC32 divisible by
    `every`) that this process has not aborted yet. Each marker is handed out once: its batch is
    aborted once, then processed again normally. CRC32, not hash(): the same trips are markers
    in every process and run."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._aborted: set[str] = set()

    def is_marker(self, trip_id: str) -> bool:
        return zlib.crc32(trip_id.encode()) % self.every == 0

    def take(self, trip_ids: Iterable[str]) -> list[str]:
        """The markers among `trip_ids` not handed out before, in order, each once."""
        fresh = [
            trip_id
            for trip_id in dict.fromkeys(trip_ids)
            if trip_id not in self._aborted and self.is_marker(trip_id)
        ]
        self._aborted.update(fresh)
        return fresh


class PredictTransform:
    """Decode a batch of trip starts, predict them in one call per model, encode the predictions.

    Each batch is predicted with the deployment `models()` gives at its start: the champion's
    predictions go to `output_topic`, a challenger's to `shadow_topic`, in the same result and
    so the same transaction. Records that do not decode become failures (dead letters); the
    rest of the batch goes on. The result carries each trip's start time, observed as latency
    once the batch commits.

    With `aborts`, a batch holding a fresh marker trip is returned to be aborted, with one
    poison record per marker (key POISON_PREFIX + trip id, its prediction as value) beside its
    real predictions; it comes back and is predicted again, then without.
    """

    def __init__(
        self,
        models: Callable[[], Deployment],
        *,
        input_topic: str = NEW_TRIPS,
        output_topic: str = ML_PREDICTIONS,
        shadow_topic: str = SHADOW_PREDICTIONS,
        clock: Callable[[], datetime] = utc_now,
        on_rejected: RejectionHandler = rejected,
        aborts: DeliberateAborts | None = None,
    ) -> None:
        self._models = models
        self._aborts = aborts
        self._input_topic = input_topic
        self._output_topic = output_topic
        self._shadow_topic = shadow_topic
        self._clock = clock
        self._on_rejected = on_rejected
        # Challengers that failed on the stream: shadowing them stops.
        self._failed: set[str] = set()

    def __call__(self, messages: Sequence[Message]) -> TransformResult:
        deployment = self._models()
        batch = decode_trip_starts([message.value() for message in messages])
        failures = [
            Failure(messages[position], f"undecodable TripStarted: {error}", DECODE)
            for position, error in batch.errors
        ]
        trips = batch.columns
        at = self._clock()
        shadow = self._shadow(deployment.challenger, trips, at)
        values = encode_predictions(
            trips,
            _predict(deployment.champion, trips, "champion").tolist(),
            deployment.champion.version,
            at,
            # Named only when its predictions are in this transaction: the aggregator waits.
            challenger_version=deployment.challenger.version
            if shadow and deployment.challenger
            else None,
        )
        keys = [trip_id.encode() for trip_id in trips.trip_id]
        records = [
            RecordColumns(topic, topic_values, keys)
            for topic, topic_values in ((self._output_topic, values), (self._shadow_topic, shadow))
            if topic_values
        ]
        event_times = {self._input_topic: trips.produced_at}
        markers = self._aborts.take(trips.trip_id) if self._aborts is not None else []
        if markers:
            row = {trip_id: i for i, trip_id in enumerate(trips.trip_id)}
            poison = RecordColumns(
                self._output_topic,
                [values[row[trip_id]] for trip_id in markers],
                [f"{POISON_PREFIX}{trip_id}".encode() for trip_id in markers],
            )
            return TransformResult(
                [*records, poison],
                failures,
                event_times,
                abort=f"{len(markers)} marker trip(s), --deliberate-aborts",
            )
        return TransformResult(records, failures, event_times)

    def _shadow(
        self, challenger: TripDurationModel | None, trips: TripStartColumns, at: datetime
    ) -> list[bytes]:
        """The challenger's encoded predictions of the batch; none if it has none or fails on
        it."""
        if challenger is None or challenger.version in self._failed or not len(trips):
            return []
        try:
            return encode_predictions(
                trips,
                _predict(challenger, trips, "challenger").tolist(),
                challenger.version,
                at,
                role="challenger",
            )
        except Exception as exc:  # whatever its pipeline raises: the champion's batch goes on
            log.error(
                "challenger %s failed on a batch (%r); it is no longer shadowed",
                challenger.version,
                exc,
            )
            self._failed.add(challenger.version)
            self._on_rejected(challenger.version, "missing-feature")
            return []


def _predict(model: TripDurationModel, trips: TripStartColumns, role: str) -> np.ndarray:
    started = time.perf_counter()
    durations = model.predict(trips)
    INFERENCE_SECONDS.labels(role).observe(time.perf_counter() - started)
    return durations


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@service_options(SERVICE, metrics_port=METRICS_PORTS["predictor"])
@option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    # A commit costs about the same for 5,000 trips as for 20,000 (~0.15 s on 2 busy cores),
    # so a backlog drains faster in big batches; at steady rates batches stay small anyway.
    default=20_000,
    help="Most trips per batch, that is per model call and per transaction.",
)
@option(
    "--batch-wait",
    type=click.FloatRange(0.001, 10),
    # A backlog fills a batch at once whatever this is; at 2,000 trips/s, 0.1 s about doubled the
    # p99 latency to a read_committed reader against 0.02 s on 2 cores (`taxi bench`).
    default=0.02,
    help="Seconds to wait for a batch to fill: latency traded for throughput.",
)
@option(
    "--compiled-trees",
    is_flag=True,
    help="Predict with the model's trees compiled to C (treelite + tl2cgen, the "
    "taxi-model[compiled] extra, and gcc): about twice as fast, and used only once checked "
    "to give scikit-learn's predictions within 1e-6 in log space, else scikit-learn's trees "
    "stay. A version's first load compiles it (some 20 s on 2 cores; cached after); the "
    "running models predict meanwhile.",
)
@option(
    "--deliberate-aborts",
    type=click.IntRange(1, None),
    default=None,
    metavar="N",
    help="Fault injection, for tests and chaos runs only: a batch holding a marker trip (its "
    "id's CRC32 divisible by N) not aborted before by this process is first written in a "
    "transaction that is then aborted, with one poison record per marker keyed "
    "'aborted:<trip id>' on ml_predictions beside the batch's predictions, then processed "
    "again normally. read_committed readers must never see any of it. Off by default.",
)
@topic_prefix_option()
def main(
    *,
    kafka: KafkaConfig,
    metrics_port: int,
    metrics_address: str,
    instance: str,
    batch_size: int,
    batch_wait: float,
    compiled_trees: bool,
    deliberate_aborts: int | None,
    topic_prefix: str,
) -> None:
    """Predict every trip's duration the moment it starts.

    Reads TripStarted from new_trips as consumer group taxi-predictor (run several instances to
    share the partitions) and writes one Prediction per trip to ml_predictions, exactly once.
    The models come from Kafka: the champion that model_deployments names, loaded from
    model_registry, and followed from then on; a new champion takes over at a batch boundary,
    without a restart. While a challenger is deployed it predicts the same trips, to
    shadow_predictions in the same transactions. Undecodable records go to dead_letters.
    """
    threadpool_limits(MODEL_THREADS)
    for reason in REJECT_REASONS:
        REJECTED.labels(reason)
    serve_metrics(metrics_port, metrics_address)
    group, trips, predictions, shadow, dead_letters = prefixed(
        topic_prefix, PREDICTOR_GROUP, NEW_TRIPS, ML_PREDICTIONS, SHADOW_PREDICTIONS, DEAD_LETTERS
    )
    follower = ModelFollower(
        kafka,
        RegistryTopics.prefixed(topic_prefix),
        on_rejected=rejected,
        on_switch=switched,
        prepare=with_compiled_trees if compiled_trees else None,
    )
    aborts = None if deliberate_aborts is None else DeliberateAborts(deliberate_aborts)
    stop = threading.Event()
    with stop_on_signals(stop):
        follower.start()
        try:
            if follower.wait_ready(stop) is None:
                return
            processor = TransactionalProcessor(
                kafka,
                service=SERVICE,
                instance=instance,
                group_id=group,
                input_topics=[trips],
                transform=PredictTransform(
                    follower.deployment,
                    input_topic=trips,
                    output_topic=predictions,
                    shadow_topic=shadow,
                    aborts=aborts,
                ),
                dead_letter_topic=dead_letters,
                batch=BatchPolicy(max_messages=batch_size, max_wait=batch_wait),
                observer=PrometheusObserver(
                    SERVICE,
                    group=group,
                    inputs=[trips],
                    outputs=[predictions, shadow, dead_letters],
                    dead_letter_reasons=[DECODE],
                    timed_inputs=[trips],
                ),
            )
            processor.run(stop)
        finally:
            follower.close()
    log.info("stopped")
