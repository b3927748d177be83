"""Prometheus metrics shared by every service: one `taxi_` prefix, base units, `_total` on
counters, no trip ids in labels. Prometheus adds `job` and `instance` when it scrapes; the
`service` label says which of the pipeline's services a series is from wherever it is read."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from taxi_kafka import DELIBERATE_ABORT, METRICS_ADDRESS, Observer, PartitionKey

log = logging.getLogger(__name__)

# No `_created` twin of every counter and histogram: Prometheus 2 stores each as one more gauge
# series, and nothing here reads them.
disable_created_metrics()

RECORDS_CONSUMED = Counter(
    "taxi_records_consumed_total", "Records consumed, by topic.", ["service", "topic"]
)
RECORDS_PRODUCED = Counter(
    "taxi_records_produced_total",
    "Records produced and committed, by topic.",
    ["service", "topic"],
)
BATCH_SIZE = Histogram(
    "taxi_batch_size_records",
    "Records per committed batch: consumed records for the processors, trip events for the "
    "producers.",
    ["service"],
    buckets=(1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 20_000),
)
CONSUMER_LAG = Gauge(
    "taxi_consumer_lag_records",
    "Records not yet handed to the service, per consumer group, topic and partition.",
    ["service", "group", "topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "taxi_consumer_lag_seconds",
    "How far behind a partition is in time: 0 when caught up, else the age of the last record "
    "handed over (the oldest waiting record is at most that old).",
    ["service", "group", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "taxi_dead_letters_total",
    "Records sent to dead_letters, by source topic and reason.",
    ["service", "topic", "reason"],
)
TRANSACTIONS = Counter(
    "taxi_transactions_total", "Kafka transactions, by outcome.", ["service", "outcome"]
)
PRODUCERS_RECREATED = Counter(
    "taxi_producers_recreated_total",
    "Transactional producers replaced after a fatal error or a timeout (the error is logged).",
    ["service"],
)
DELIVERY_ERRORS = Counter(
    "taxi_producer_delivery_errors_total",
    "Records the producer could not deliver, by topic (their transaction aborts; its error "
    "is logged).",
    ["service", "topic"],
)


class BatchHistogram(Collector):
    """A labelled Prometheus histogram fed a whole batch of observations at once.

    prometheus_client's Histogram.observe takes about 1.5 us a value, a tenth of the predictor's
    time per record; here a batch costs one numpy bincount. Scrapes read the same series a
    Histogram writes.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._bucket_names = [*map(floatToGoString, self._bounds), "+Inf"]
        # Per label set: observations per bucket (the last is +Inf only), and their sum.
        self._series: dict[tuple[str, ...], tuple[np.ndarray, float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def declare(self, *labels: str) -> None:
        """Start a series at 0, so that rate() over it reads 0 rather than nothing."""
        self.observe_many(labels, np.empty(0))

    def observe_many(self, labels: Sequence[str], values: np.ndarray) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        # Like Histogram.observe: a value goes to the first bucket whose bound it is <= to.
        counts = np.bincount(
            np.searchsorted(self._bounds, values, side="left"), minlength=len(self._bounds) + 1
        )
        key = tuple(labels)
        with self._lock:
            before, total = self._series.get(key, (np.zeros(len(counts), np.int64), 0.0))
            self._series[key] = (before + counts, total + float(np.sum(values)))

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = dict(self._series)
        for labels, (counts, total) in series.items():
            buckets = zip(self._bucket_names, np.cumsum(counts).tolist(), strict=True)
            family.add_metric(list(labels), list(buckets), total)
        yield family


# From an event's creation upstream (its produced_at) to the commit of this service's output.
LATENCY = BatchHistogram(
    "taxi_processing_latency_seconds",
    "Event time to committed output, by input topic.",
    ["service", "topic"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
BROKER_UP = Gauge(
    "taxi_kafka_broker_up",
    "1 while the client is connected to the broker (librdkafka state UP), else 0.",
    ["service", "client", "broker"],
)

# Deliberate aborts (fault injection, DELIBERATE_ABORT) apart from those errors forced.
DELIBERATELY_ABORTED = "deliberately_aborted"
OUTCOMES = ("committed", "aborted", DELIBERATELY_ABORTED)
BROKER_CONNECTED = "UP"


class PrometheusObserver(Observer):
    """Feeds the shared metrics from the Kafka library's reports.

    The label sets a service knows in advance (its topics, its dead-letter reasons, both
    transaction outcomes) start at 0, so that rate() over them reads 0 rather than nothing.
    """

    def __init__(
        self,
        service: str,
        *,
        group: str = "",
        inputs: Sequence[str] = (),
        outputs: Sequence[str] = (),
        dead_letter_reasons: Sequence[str] = (),
        timed_inputs: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.group = group
        for topic in timed_inputs:
            LATENCY.declare(service, topic)
        for topic in inputs:
            RECORDS_CONSUMED.labels(service, topic)
            for reason in dead_letter_reasons:
                DEAD_LETTERS.labels(service, topic, reason)
        for topic in outputs:
            RECORDS_PRODUCED.labels(service, topic)
            DELIVERY_ERRORS.labels(service, topic)
        for outcome in OUTCOMES:
            TRANSACTIONS.labels(service, outcome)
        PRODUCERS_RECREATED.labels(service)
        BATCH_SIZE.labels(service)

    def consumed(self, topic: str, count: int) -> None:
        RECORDS_CONSUMED.labels(self.service, topic).inc(count)

    def produced(self, topic: str, count: int) -> None:
        RECORDS_PRODUCED.labels(self.service, topic).inc(count)

    def batch_processed(self, size: int) -> None:
        BATCH_SIZE.labels(self.service).observe(size)

    def lag(self, lags: Mapping[PartitionKey, int]) -> None:
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.service, self.group, topic, str(partition)).set(lag)

    def lag_seconds(self, seconds: Mapping[PartitionKey, float]) -> None:
        for (topic, partition), age in seconds.items():
            CONSUMER_LAG_SECONDS.labels(self.service, self.group, topic, str(partition)).set(age)

    def broker_states(self, client: str, states: Mapping[int, str]) -> None:
        for broker, state in states.items():
            BROKER_UP.labels(self.service, client, str(broker)).set(state == BROKER_CONNECTED)

    def dead_lettered(self, source_topic: str, kind: str) -> None:
        DEAD_LETTERS.labels(self.service, source_topic, kind).inc()

    def events_committed(
        self, event_times: Mapping[str, Sequence[datetime]], committed_at: float
    ) -> None:
        """Event time to committed output: the latency a read_committed reader downstream
        sees. An aborted batch reports nothing; it is processed again, and counts then."""
        for topic, times in event_times.items():
            stamps = np.fromiter((t.timestamp() for t in times), np.float64, len(times))
            LATENCY.observe_many((self.service, topic), np.maximum(0.0, committed_at - stamps))

    def transaction_committed(self, records: int) -> None:
        TRANSACTIONS.labels(self.service, "committed").inc()

    def transaction_aborted(self, reason: str) -> None:
        outcome = DELIBERATELY_ABORTED if reason == DELIBERATE_ABORT else "aborted"
        TRANSACTIONS.labels(self.service, outcome).inc()

    def producer_recreated(self, reason: str) -> None:
        PRODUCERS_RECREATED.labels(self.service).inc()

    def delivery_failed(self, topic: str, error: str) -> None:
        DELIVERY_ERRORS.labels(self.service, topic).inc()

    def rebalanced(self, event: str, partitions: Sequence[PartitionKey]) -> None:
        if event != "assign":  # a partition this instance no longer owns has no lag here
            for topic, partition in partitions:
                for gauge in (CONSUMER_LAG, CONSUMER_LAG_SECONDS):
                    with contextlib.suppress(KeyError):  # no lag was reported for it yet
                        gauge.remove(self.service, self.group, topic, str(partition))


def serve_metrics(port: int, address: str = METRICS_ADDRESS) -> None:
    """Expose /metrics on address:port (port 0: don't)."""
    if port:
        start_http_server(port, addr=address)
        log.info("metrics on http://%s:%d/metrics", address, port)
