"""The dashboard's Prometheus metrics, named like the services' (taxi_services/metrics.py):
a `taxi_` prefix, base units, `_total` counters, a `service` label, no trip ids in labels.

They live in a registry of their own, with the process collector's
process_resident_memory_bytes (which shows that a long-running dashboard's memory stays flat):
the services' shared metrics have the same names, and both may be imported in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, start_http_server

log = logging.getLogger("taxi.dashboard")

SERVICE = "dashboard"

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

RECORDS_CONSUMED = Counter(
    "taxi_records_consumed_total",
    "Records consumed, by topic.",
    ["service", "topic"],
    registry=REGISTRY,
)
MALFORMED_RECORDS = Counter(
    "taxi_malformed_records_total",
    "Records that did not decode and were skipped, by topic.",
    ["service", "topic"],
    registry=REGISTRY,
)
BUFFER_ITEMS = Gauge(
    "taxi_dashboard_buffer_items",
    "Items held in each bounded buffer.",
    ["buffer"],
    registry=REGISTRY,
)
BROKERS_UP = Gauge(
    "taxi_dashboard_brokers_up", "Brokers in the cluster metadata.", registry=REGISTRY
)
UNDER_REPLICATED = Gauge(
    "taxi_dashboard_under_replicated_partitions",
    "Partitions with fewer in-sync replicas.",
    registry=REGISTRY,
)


def record_batch(consumed: Mapping[str, int], malformed: Mapping[str, int]) -> None:
    for topic, count in consumed.items():
        RECORDS_CONSUMED.labels(SERVICE, topic).inc(count)
    for topic, count in malformed.items():
        MALFORMED_RECORDS.labels(SERVICE, topic).inc(count)


def record_buffers(sizes: Mapping[str, int]) -> None:
    for name, size in sizes.items():
        BUFFER_ITEMS.labels(name).set(size)


def serve_metrics(port: int, address: str) -> None:
    """Expose /metrics on address:port (port 0: don't). A port in use is logged, not fatal:
    the page matters more than its metrics."""
    if not port:
        return
    try:
        start_http_server(port, addr=address, registry=REGISTRY)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", address, port, exc)
        return
    log.info("metrics on http://%s:%d/metrics", address, port)
