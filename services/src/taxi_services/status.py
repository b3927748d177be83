"""What `taxi status` reports, as plain data built from what was probed; pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taxi_kafka.cluster import ClusterStatus
from taxi_kafka.records import PartitionKey
from taxi_services.scrape import Samples, total


@dataclass(frozen=True)
class ServiceState:
    name: str
    url: str
    running: bool
    detail: str = ""


@dataclass(frozen=True)
class PipelineStatus:
    cluster: ClusterStatus
    services: list[ServiceState]
    # group -> {(topic, partition): lag}; empty when the cluster could not be asked.
    group_lag: Mapping[str, Mapping[PartitionKey, int]] = field(default_factory=dict)
    model: str = ""
    # What `taxi up` recorded when it started, if it still runs.
    up: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster.to_dict(),
            "services": [vars(s) for s in self.services],
            "group_lag": {g: sum(lags.values()) for g, lags in self.group_lag.items()},
            "model": self.model,
            "up": self.up,
        }


def service_detail(name: str, samples: Samples) -> str:
    """The one figure per service an operator looks for first."""
    if name.startswith("producer"):
        started = total(samples, "taxi_records_produced_total", topic="new_trips")
        ended = total(samples, "taxi_records_produced_total", topic="finished_trips")
        return f"started {started:,.0f} trips, ended {ended:,.0f}"
    if name == "predictor":
        predicted = total(samples, "taxi_records_produced_total", topic="ml_predictions")
        lag = total(samples, "taxi_consumer_lag_records")
        return f"predicted {predicted:,.0f}, lag {lag:,.0f}"
    if name == "aggregator":
        scored = total(samples, "taxi_matched_trips")
        unmatched = total(samples, "taxi_unmatched_trips")
        rmsle = total(samples, "taxi_model_rmsle", source="train", scope="cumulative")
        return f"scored {scored:,.0f}, unmatched {unmatched:,.0f}, RMSLE train {rmsle:.3f}"
    if name == "dashboard":
        read = total(samples, "taxi_records_consumed_total")
        return f"read {read:,.0f} records"
    return ""


def cluster_line(cluster: ClusterStatus) -> str:
    up = sum(n.state == "up" for n in cluster.nodes)
    line = f"Kafka: {up} of {len(cluster.nodes)} brokers up ({cluster.bootstrap_servers})"
    if cluster.metadata_error:
        return f"{line}; metadata unavailable: {cluster.metadata_error}"
    return (
        f"{line}; {len(cluster.partitions)} partitions, "
        f"{len(cluster.under_replicated)} under-replicated, {len(cluster.offline)} offline"
    )


def format_report(status: PipelineStatus) -> str:
    lines = [cluster_line(status.cluster)]
    if status.model:
        lines.append(f"model: {status.model}")
    if status.up is not None:
        lines.append(
            f"taxi up: running (pid {status.up['pid']}) since {status.up['started_at']}, "
            f"logs in {status.up['logs']}"
        )
    lines += ["", f"{'service':<16}{'state':<13}{'url':<32}detail"]
    for service in status.services:
        state = "running" if service.running else "not running"
        lines.append(f"{service.name:<16}{state:<13}{service.url:<32}{service.detail}".rstrip())
    if status.group_lag:
        lines.append("")
        lines.append(
            "consumer lag: "
            + ", ".join(f"{g} {sum(lags.values()):,}" for g, lags in status.group_lag.items())
        )
    return "\n".join(lines)
