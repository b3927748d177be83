"""Prometheus metrics shared by every service: one `taxi_` prefix, base units, no trip ids."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from taxi_kafka.observer import Observer
from taxi_kafka.records import PartitionKey

log = logging.getLogger(__name__)

RECORDS_CONSUMED = Counter(
    "taxi_records_consumed_total", "Records consumed, by topic.", ["service", "topic"]
)
RECORDS_PRODUCED = Counter(
    "taxi_records_produced_total", "Records produced, by topic.", ["service", "topic"]
)
BATCH_SIZE = Histogram(
    "taxi_batch_size_records",
    "Records per processed batch.",
    ["service"],
    buckets=(1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 20_000),
)
CONSUMER_LAG = Gauge(
    "taxi_consumer_lag_records",
    "Records not yet processed, per topic and partition.",
    ["service", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "taxi_dead_letters_total", "Records sent to dead_letters, by reason.", ["service", "reason"]
)
TRANSACTIONS = Counter(
    "taxi_transactions_total", "Kafka transactions, by outcome.", ["service", "outcome"]
)
PRODUCERS_RECREATED = Counter(
    "taxi_producers_recreated_total",
    "Transactional producers replaced after a fatal error or a timeout.",
    ["service", "reason"],
)
DELIVERY_ERRORS = Counter(
    "taxi_producer_delivery_errors_total",
    "Records the producer could not deliver, by topic and error.",
    ["service", "topic", "error"],
)
# From an event's creation upstream to this service's output, in seconds.
LATENCY = Histogram(
    "taxi_processing_latency_seconds",
    "Event time to output time.",
    ["service"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class PrometheusObserver(Observer):
    """Feeds the shared metrics from the Kafka library's reports."""

    def __init__(self, service: str) -> None:
        self.service = service

    def consumed(self, topic: str, count: int) -> None:
        RECORDS_CONSUMED.labels(self.service, topic).inc(count)

    def produced(self, topic: str, count: int) -> None:
        RECORDS_PRODUCED.labels(self.service, topic).inc(count)

    def batch_processed(self, size: int) -> None:
        BATCH_SIZE.labels(self.service).observe(size)

    def lag(self, lags: Mapping[PartitionKey, int]) -> None:
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.service, topic, str(partition)).set(lag)

    def dead_lettered(self, source_topic: str, kind: str) -> None:
        DEAD_LETTERS.labels(self.service, kind).inc()

    def transaction_committed(self, records: int) -> None:
        TRANSACTIONS.labels(self.service, "committed").inc()

    def transaction_aborted(self, reason: str) -> None:
        TRANSACTIONS.labels(self.service, "aborted").inc()

    def producer_recreated(self, reason: str) -> None:
        PRODUCERS_RECREATED.labels(self.service, reason).inc()

    def delivery_failed(self, topic: str, error: str) -> None:
        DELIVERY_ERRORS.labels(self.service, topic, error).inc()

    def rebalanced(self, event: str, partitions: Sequence[PartitionKey]) -> None:
        if event != "assign":  # a partition this instance no longer owns has no lag here
            for topic, partition in partitions:
                with contextlib.suppress(KeyError):  # no lag was reported for it yet
                    CONSUMER_LAG.remove(self.service, topic, str(partition))


def serve_metrics(port: int) -> None:
    """Expose /metrics on `port` (0: don't)."""
    if port:
        start_http_server(port)
        log.info("metrics on http://127.0.0.1:%d/metrics", port)
