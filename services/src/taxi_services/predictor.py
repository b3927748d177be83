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
from prometheus_client import Histogram, Info
from threadpoolctl import threadpool_limits

from taxi_events.columns import decode_trip_starts, encode_predictions
from taxi_kafka import (
    DEAD_LETTERS,
    METRICS_PORTS,
    ML_PREDICTIONS,
    NEW_TRIPS,
    PREDICTOR_GROUP,
    BatchPolicy,
    Failure,
    KafkaConfig,
    OutputRecord,
    TransactionalProcessor,
    TransformResult,
    stop_on_signals,
)
from taxi_kafka.cli import env_option
from taxi_model import ModelLoadError, TripDurationModel, load_model
from taxi_services.metrics import PrometheusObserver, serve_metrics
from taxi_services.options import model_option, prefixed, service_options, topic_prefix_option

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
    # Up to seconds: a busy machine slows a big batch's call down that far.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_INFO = Info("taxi_predictor_model", "The model this predictor predicts with.")


def utc_now() -> datetime:
    return datetime.now(UTC)


class PredictTransform:
    """Decode a batch of trip starts, predict them in one call, encode the predictions.

    Records that do not decode become failures (dead letters); the rest of the batch goes on.
    The result carries each trip's start time, observed as latency once the batch commits.
    """

    def __init__(
        self,
        model: TripDurationModel,
        *,
        input_topic: str = NEW_TRIPS,
        output_topic: str = ML_PREDICTIONS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._model = model
        self._input_topic = input_topic
        self._output_topic = output_topic
        self._clock = clock

    def __call__(self, messages: Sequence[Message]) -> TransformResult:
        batch = decode_trip_starts([message.value() for message in messages])
        failures = [
            Failure(messages[position], f"undecodable TripStarted: {error}", DECODE)
            for position, error in batch.errors
        ]
        trips = batch.columns
        started = time.perf_counter()
        durations = self._model.predict(trips)
        INFERENCE_SECONDS.observe(time.perf_counter() - started)
        values = encode_predictions(trips, durations.tolist(), self._model.version, self._clock())
        records = [
            OutputRecord(self._output_topic, value, trip_id.encode())
            for value, trip_id in zip(values, trips.trip_id, strict=True)
        ]
        return TransformResult(records, failures, {self._input_topic: trips.produced_at})


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@service_options(SERVICE, metrics_port=METRICS_PORTS["predictor"])
@model_option(
    "The trained pipeline (`taxi train` writes it).", envvar="TAXI_MODEL", show_envvar=True
)
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
@topic_prefix_option()
def main(
    *,
    kafka: KafkaConfig,
    metrics_port: int,
    metrics_address: str,
    instance: str,
    model_path: Path,
    batch_size: int,
    batch_wait: float,
    topic_prefix: str,
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
    threadpool_limits(MODEL_THREADS)
    MODEL_INFO.info({"version": model.version})
    serve_metrics(metrics_port, metrics_address)
    group, trips, predictions, dead_letters = prefixed(
        topic_prefix, PREDICTOR_GROUP, NEW_TRIPS, ML_PREDICTIONS, DEAD_LETTERS
    )
    processor = TransactionalProcessor(
        kafka,
        service=SERVICE,
        instance=instance,
        group_id=group,
        input_topics=[trips],
        transform=PredictTransform(model, input_topic=trips, output_topic=predictions),
        dead_letter_topic=dead_letters,
        batch=BatchPolicy(max_messages=batch_size, max_wait=batch_wait),
        observer=PrometheusObserver(
            SERVICE,
            group=group,
            inputs=[trips],
            outputs=[predictions, dead_letters],
            dead_letter_reasons=[DECODE],
            timed_inputs=[trips],
        ),
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        processor.run(stop)
    log.info("stopped")
