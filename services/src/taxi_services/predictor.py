"""The predictor: each TripStarted on `new_trips` becomes one Prediction on `ml_predictions`,
exactly once (one Kafka transaction per batch), with one vectorised model call per batch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import click
from confluent_kafka import Message
from prometheus_client import Histogram

from taxi_events import EventDecodeError, Prediction, TripStarted, decode, encode
from taxi_kafka.config import KafkaConfig
from taxi_kafka.policy import BatchPolicy
from taxi_kafka.processor import TransactionalProcessor
from taxi_kafka.records import Failure, OutputRecord, TransformResult
from taxi_kafka.shutdown import stop_on_signals
from taxi_kafka.topics import ML_PREDICTIONS, NEW_TRIPS
from taxi_model.artifact import ModelLoadError, TripDurationModel, load_model
from taxi_services.metrics import LATENCY, PrometheusObserver, serve_metrics
from taxi_services.options import env_option, model_option, service_options

log = logging.getLogger("taxi.predictor")

SERVICE = "predictor"
option = env_option(SERVICE)
GROUP_ID = "taxi-predictor"

INFERENCE_SECONDS = Histogram(
    "taxi_model_inference_seconds",
    "Time of one vectorised model call on a batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class PredictTransform:
    """Decode a batch of trip starts, predict them in one call, encode the predictions.

    Records that do not decode become failures (dead letters); the rest of the batch goes on.
    """

    def __init__(
        self,
        model: TripDurationModel,
        output_topic: str = ML_PREDICTIONS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._model = model
        self._output_topic = output_topic
        self._clock = clock

    def __call__(self, messages: Sequence[Message]) -> TransformResult:
        trips: list[TripStarted] = []
        failures: list[Failure] = []
        for message in messages:
            try:
                trips.append(decode(message.value(), TripStarted))
            except EventDecodeError as exc:
                failures.append(Failure(message, f"undecodable TripStarted: {exc}", "decode"))
        started = time.perf_counter()
        durations = self._model.predict(trips)
        INFERENCE_SECONDS.observe(time.perf_counter() - started)
        now = self._clock()
        records = []
        for trip, duration in zip(trips, durations, strict=True):
            prediction = Prediction(
                trip_id=trip.trip_id,
                source=trip.source,
                predicted_duration=float(duration),
                model_version=self._model.version,
                pickup_datetime=trip.pickup_datetime,
                pickup_longitude=trip.pickup_longitude,
                pickup_latitude=trip.pickup_latitude,
                dropoff_longitude=trip.dropoff_longitude,
                dropoff_latitude=trip.dropoff_latitude,
                trip_started_at=trip.produced_at,
                predicted_at=now,
                produced_at=now,
            )
            LATENCY.labels(SERVICE).observe((now - trip.produced_at).total_seconds())
            records.append(
                OutputRecord(self._output_topic, encode(prediction), trip.trip_id.encode())
            )
        return TransformResult(records, failures)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@service_options(SERVICE, metrics_port=9103)
@model_option(
    "The trained pipeline (`taxi train` writes it).", envvar="TAXI_MODEL", show_envvar=True
)
@option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=5_000,
    help="Most trips per batch, that is per model call and per transaction.",
)
@option(
    "--batch-wait",
    type=click.FloatRange(0.001, 10),
    default=0.1,
    help="Seconds to wait for a batch to fill: latency traded for throughput.",
)
def main(
    *,
    kafka: KafkaConfig,
    metrics_port: int,
    instance: str,
    model_path: Path,
    batch_size: int,
    batch_wait: float,
) -> None:
    """Predict every trip's duration the moment it starts.

    Reads TripStarted from new_trips as consumer group taxi-predictor (run several instances to
    share the partitions) and writes one Prediction per trip to ml_predictions, exactly once.
    Undecodable records go to dead_letters.
    """
    try:
        model = load_model(model_path)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("model %s loaded from %s", model.version, model_path)
    serve_metrics(metrics_port)
    processor = TransactionalProcessor(
        kafka,
        service=SERVICE,
        instance=instance,
        group_id=GROUP_ID,
        input_topics=[NEW_TRIPS],
        transform=PredictTransform(model),
        batch=BatchPolicy(max_messages=batch_size, max_wait=batch_wait),
        observer=PrometheusObserver(SERVICE),
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        processor.run(stop)
    log.info("stopped")
