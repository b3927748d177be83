"""The default ports of DESIGN.md, in one place: `taxi up` serves on them, `taxi status`
probes them."""

from __future__ import annotations

# Each service's Prometheus /metrics endpoint.
METRICS_PORTS = {
    "producer-train": 9101,
    "producer-test": 9102,
    "predictor": 9103,
    "aggregator": 9104,
    "dashboard": 9105,
}
DASHBOARD_PORT = 8501
PROMETHEUS_PORT = 9090
# The interface the metrics endpoints listen on unless told otherwise: loopback only. A
# container publishing its port passes 0.0.0.0 (docker-compose.yml).
METRICS_ADDRESS = "127.0.0.1"
