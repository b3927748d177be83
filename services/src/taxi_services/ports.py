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
