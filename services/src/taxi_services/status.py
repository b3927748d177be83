"""What `taxi status` reports, as plain data built from what was probed; pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taxi_kafka import GroupLag
from taxi_kafka.cluster import ClusterStatus
from taxi_services.scrape import Samples, matching, total

# Where there is no figure yet: a 0 would read as a measurement.
NO_FIGURE = "\N{EN DASH}"
# The aggregator's figures of the champion on all its trips (not head to head with a challenger).
ALL_TRIPS = {"role": "champion", "challenger": ""}


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
    # Empty when the cluster could not be asked; None for a group whose lag is not known.
    group_lag: Mapping[str, GroupLag | None] = field(default_factory=dict)
    model: str = ""
    # What `taxi up` recorded when it started, if it still runs.
    up: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster.to_dict(),
            "services": [vars(s) for s in self.services],
            "group_lag": {group: _lag_dict(lag) for group, lag in self.group_lag.items()},
            "model": self.model,
            "up": self.up,
        }


def _lag_dict(lag: GroupLag | None) -> dict[str, Any] | None:
    if lag is None:
        return None
    return {"records": lag.total_records, "exact": lag.exact, "offsets": lag.total_offsets}


def service_detail(name: str, samples: Samples) -> str:
    """The one figure per service an operator looks for first."""
    if name.startswith("producer"):
        started = total(samples, "taxi_records_produced_total", topic="new_trips")
        ended = total(samples, "taxi_records_produced_total", topic="finished_trips")
        return f"started {started:,.0f} trips, ended {ended:,.0f}"
    if name == "predictor":
        # Its lag is the consumer lag line's: the predictor's own gauge counts markers too.
        predicted = total(samples, "taxi_records_produced_total", topic="ml_predictions")
        return f"predicted {predicted:,.0f}{serving_text(samples)}"
    if name == "aggregator":
        # Each trip once: as its champion scored it, not again head to head.
        scored = total(samples, "taxi_matched_trips", **ALL_TRIPS)
        unmatched = total(samples, "taxi_unmatched_trips", **ALL_TRIPS)
        rmsle = rmsle_text(samples, "train")
        return f"scored {scored:,.0f}, unmatched {unmatched:,.0f}, RMSLE train {rmsle}"
    if name == "dashboard":
        read = total(samples, "taxi_records_consumed_total")
        return f"read {read:,.0f} records"
    if name == "trainer":
        window = total(samples, "taxi_trainer_window_trips")
        turned_down = total(samples, "taxi_trainer_candidates_total", outcome="turned-down")
        return (
            f"window {window:,.0f} trips, {trainer_text(samples)}, turned down {turned_down:,.0f}"
        )
    return ""


def trainer_text(trainer: Samples) -> str:
    """The candidates the trainer published as challenger and its automatic promotions (and
    rollbacks, once there is one)."""
    published = total(trainer, "taxi_trainer_candidates_total", outcome="published")
    promoted = total(trainer, "taxi_trainer_auto_decisions_total", action="promote")
    rolled_back = total(trainer, "taxi_trainer_auto_decisions_total", action="rollback")
    text = f"challengers {published:,.0f}, promoted {promoted:,.0f}"
    return f"{text}, rolled back {rolled_back:,.0f}" if rolled_back else text


def scored_trips(aggregator: Samples) -> float:
    """Trips the aggregator is done with, matched or expired: each once, as its champion
    scored it (not again head to head with a challenger)."""
    return total(aggregator, "taxi_matched_trips", **ALL_TRIPS) + total(
        aggregator, "taxi_unmatched_trips", **ALL_TRIPS
    )


def serving_text(predictor: Samples) -> str:
    """Which models the predictor predicts with, from its info metric; empty until it has a
    champion."""
    for (name, labels), _ in predictor.items():
        if name == "taxi_predictor_model_info":
            roles = dict(labels)
            challenger = roles.get("challenger")
            shadow = f", challenger {challenger} in the shadow" if challenger else ""
            return f" with champion {roles.get('champion', NO_FIGURE)}{shadow}"
    return ""


def rmsle_text(aggregator: Samples, source: str) -> str:
    """The cumulative RMSLE on `source` of the champion the aggregator scores now, to 3 places,
    or NO_FIGURE until it has scored a trip of it: till then the gauge is missing or NaN, and
    `total` would say 0."""
    versions = [
        dict(labels).get("version")
        for (name, labels), _ in aggregator.items()
        if name == "taxi_model_info" and dict(labels).get("source") == source
    ]
    if len(versions) != 1 or versions[0] is None:
        return NO_FIGURE
    series = {"source": source, "model_version": versions[0], **ALL_TRIPS}
    matched = total(aggregator, "taxi_matched_trips", **series)
    rmsle = matching(aggregator, "taxi_model_rmsle", scope="cumulative", **series)
    if not matched or len(rmsle) != 1 or math.isnan(rmsle[0]):
        return NO_FIGURE
    return f"{rmsle[0]:.3f}"


def lag_text(lag: GroupLag | None) -> str:
    """A group's lag in records, or NO_FIGURE when it could not be measured. Where counting
    stopped short it is a range: the records counted up to the offsets, markers included."""
    if lag is None:
        return NO_FIGURE
    if lag.exact:
        return f"{lag.total_records:,} records"
    return f"at least {lag.total_records:,} records (at most {lag.total_offsets:,})"


def cluster_line(cluster: ClusterStatus) -> str:
    up = sum(n.state == "up" for n in cluster.nodes)
    line = (
        f"Kafka: {up} of {len(cluster.nodes)} brokers up ({cluster.bootstrap_servers}, "
        f"{cluster.security.upper()})"
    )
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
            + ", ".join(f"{group} {lag_text(lag)}" for group, lag in status.group_lag.items())
        )
    return "\n".join(lines)
