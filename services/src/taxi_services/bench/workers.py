"""The two designs `taxi bench` compares the predictor with, each run as its own process
(`python -m taxi_services.bench.workers passthrough|naive ...`) until SIGTERM:

- passthrough: the plain confluent-kafka at-least-once loop, no model: consume a batch,
  produce each record unchanged, wait for the acks, commit the offsets.
- naive: the original design: one message at a time, one DataFrame and one model call per
  message, and a flush after every produce; offsets auto-committed (every 100 ms here, so the
  bench can follow its progress, off the message path).

Both produce as durably as the pipeline (idempotent, acks=all), so only the designs differ.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from taxi_kafka import KafkaConfig, each_record, stop_on_signals
from taxi_kafka.cli import configure_logging, kafka_options
from taxi_kafka.producer import PRODUCER_DEFAULTS, PRODUCER_ENFORCED
from taxi_services.metrics import serve_metrics

log = logging.getLogger("taxi.bench.workers")

F = TypeVar("F", bound=Callable[..., Any])

DELIVERY_TIMEOUT = 60.0
POLL_S = 0.5


class Deliveries:
    """Notes a failed delivery; the worker then stops with it (a bench must not go on)."""

    def __init__(self) -> None:
        self.error: KafkaError | None = None

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise KafkaException(self.error)


def _producer(config: KafkaConfig, deliveries: Deliveries, what: str) -> Producer:
    # The services' producer settings, so that only the design differs.
    settings = config.client_settings(PRODUCER_DEFAULTS, PRODUCER_ENFORCED, what=what)
    return Producer({**settings, "on_delivery": deliveries})


def _consumer(config: KafkaConfig, group: str, topic: str, *, auto_commit: bool) -> Consumer:
    # read_committed (librdkafka's default, made explicit): the bench's backlogs stay hidden
    # in an open transaction until the measurement starts.
    enforced: dict[str, Any] = {
        "group.id": group,
        "enable.auto.commit": auto_commit,
        "isolation.level": "read_committed",
    }
    if auto_commit:
        enforced["auto.commit.interval.ms"] = 100
    consumer = Consumer(
        config.client_settings({"auto.offset.reset": "earliest"}, enforced, what=f"{group}")
    )
    consumer.subscribe([topic])
    return consumer


def _produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.1)


def _good(messages: list[Message]) -> list[Message]:
    for message in messages:
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(error)
    return [m for m in messages if m.error() is None]


def _commit_now(consumer: Consumer) -> None:
    """Commit synchronously what was consumed, unless the async commits got it all."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise


def passthrough(
    config: KafkaConfig,
    stop: threading.Event,
    *,
    source: str,
    sink: str,
    group: str,
    batch_size: int,
    batch_wait: float,
) -> None:
    deliveries = Deliveries()
    consumer = _consumer(config, group, source, auto_commit=False)
    producer = _producer(config, deliveries, "passthrough producer")
    consumed = False
    try:
        while not stop.is_set():
            messages = _good(consumer.consume(batch_size, batch_wait))
            if not messages:
                continue
            for message in messages:
                _produce(producer, sink, message.value(), message.key())
            if producer.flush(DELIVERY_TIMEOUT):
                raise RuntimeError(f"a batch undelivered after {DELIVERY_TIMEOUT:.0f} s")
            deliveries.check()
            consumer.commit(asynchronous=True)
            consumed = True
        if consumed:
            _commit_now(consumer)
    finally:
        consumer.close()
        producer.flush(DELIVERY_TIMEOUT)


def naive(
    config: KafkaConfig, stop: threading.Event, *, source: str, sink: str, group: str, model: Path
) -> None:
    # Imported here: the passthrough does not pay for loading scikit-learn and pandas.
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from taxi_model import load_model  # noqa: PLC0415
    from taxi_services.deployment import Deployment  # noqa: PLC0415
    from taxi_services.predictor import MODEL_THREADS, PredictTransform  # noqa: PLC0415

    deployment = Deployment(load_model(model))
    predict = PredictTransform(lambda: deployment, output_topic=sink)
    threadpool_limits(MODEL_THREADS)  # as the predictor does
    deliveries = Deliveries()
    consumer = _consumer(config, group, source, auto_commit=True)
    producer = _producer(config, deliveries, "naive producer")
    try:
        while not stop.is_set():
            message = consumer.poll(POLL_S)
            if message is None or not _good([message]):
                continue
            # One DataFrame and one model call for this one trip.
            for record in each_record(predict([message]).records):
                _produce(producer, record.topic, record.value, record.key)
                producer.flush(DELIVERY_TIMEOUT)
                deliveries.check()
    finally:
        consumer.close()  # the final auto-commit
        producer.flush(DELIVERY_TIMEOUT)


def _serve(metrics_port: int) -> threading.Event:
    configure_logging("INFO")
    serve_metrics(metrics_port)
    return threading.Event()


def _common(command: F) -> F:
    """The options both workers take (Kafka's as every service's: --kafka-config included)."""
    command = kafka_options(command)
    for option in (
        click.option("--metrics-port", type=int, default=0, help="Prometheus port (0: none)."),
        click.option("--group", required=True, help="Consumer group."),
        click.option("--sink", required=True, help="Topic to write."),
        click.option("--source", required=True, help="Topic to read."),
    ):
        command = option(command)
    return command


@click.group()
def workers() -> None:
    """The designs `taxi bench` measures the predictor against."""


@workers.command("passthrough")
@_common
@click.option("--batch-size", type=click.IntRange(1), required=True)
@click.option("--batch-wait", type=click.FloatRange(0), required=True)
def passthrough_command(
    *,
    kafka: KafkaConfig,
    source: str,
    sink: str,
    group: str,
    metrics_port: int,
    batch_size: int,
    batch_wait: float,
) -> None:
    """passthrough: copy records unchanged, at least once, batch by batch."""
    stop = _serve(metrics_port)
    with stop_on_signals(stop):
        passthrough(
            kafka,
            stop,
            source=source,
            sink=sink,
            group=group,
            batch_size=batch_size,
            batch_wait=batch_wait,
        )


@workers.command("naive")
@_common
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), required=True)
def naive_command(
    *, kafka: KafkaConfig, source: str, sink: str, group: str, metrics_port: int, model: Path
) -> None:
    """naive: predict message by message, flushing after each."""
    stop = _serve(metrics_port)
    with stop_on_signals(stop):
        naive(kafka, stop, source=source, sink=sink, group=group, model=model)


if __name__ == "__main__":
    workers()
