"""`taxi lifecycle`: the drift-and-retrain proof, from start to report.

A fresh cluster, synthetic trips, and the whole system as real processes: both producers, the
predictor, the aggregator and the trainer. From a set trip on, the train producer makes every
trip last 1.5 times as long (`--drift slowdown:1.5`). The loop must notice (a concept-drift
event), train a candidate on the trips after the drift, prove it on live trips in the shadow
and promote it, all by itself. The report holds the figures the issue names, worked out from
what the topics hold (read_committed), and the chaos checker's verdict on every trip. With a
dashboard port, the dashboard watches the run on 127.0.0.1 from the cluster's start to the report.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taxi_events import DeploymentDecision, ModelEvent, ModelMetrics, Source, decode
from taxi_kafka import (
    MODEL_DEPLOYMENTS,
    MODEL_EVENTS,
    MODEL_METRICS,
    NEW_TRIPS,
    KafkaConfig,
    read_to_end,
)
from taxi_kafka.cluster import LocalCluster
from taxi_model import read_trips
from taxi_services.chaos.checker import Bounds, Timeline, check
from taxi_services.chaos.pipeline import Pipeline
from taxi_services.chaos.runner import observe, run_cluster, wait_for, write_trips
from taxi_services.chaos.scenarios import now_ms
from taxi_services.supervisor import Child, stop_all

log = logging.getLogger("taxi.lifecycle")

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
SLOWDOWN = 1.5
# The targets.
MAX_DETECTION_TRIPS = 2_000
MAX_AFTER_OVER_BEFORE = 1.10
MIN_STALE_OVER_BEFORE = 1.30


def train_trips(trips: int) -> int:
    """The train producer's share of `trips` (write_trips gives the test producer half)."""
    return trips - trips // 2


@dataclass(frozen=True)
class LifecycleOptions:
    trips: int  # both producers together
    rate: float  # trips/s, both producers together
    drift_from: int  # the train trip the slowdown starts at
    model_path: Path
    post_drift_trips: int  # labelled trips a candidate after a drift trains on
    live_trips: int  # live trips the promotion policy needs
    delta: float
    keep: bool = False
    dashboard_port: int | None = None  # serve the dashboard on 127.0.0.1 during the run


def dashboard_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def run_lifecycle(options: LifecycleOptions) -> dict[str, Any]:
    """One run on a cluster of its own; its JSON-ready report ("passed" says if every target
    was met)."""
    began = time.monotonic()
    problems: list[str] = []
    body: dict[str, Any] = {}
    with run_cluster("taxi-lifecycle-", keep=options.keep) as cluster:
        body, problems = _run(cluster, options)
        if problems:
            body["logs"] = str(cluster.runtime_dir / "logs")
    return {
        "passed": not problems,
        "problems": problems,
        **body,
        "seconds": round(time.monotonic() - began, 1),
    }


def _run(cluster: LocalCluster, options: LifecycleOptions) -> tuple[dict[str, Any], list[str]]:
    folder = cluster.runtime_dir
    trips, replays = write_trips(folder / "trips", options.trips, options.rate)
    pipeline = Pipeline(
        instance=folder.name,
        cluster=cluster,
        model_path=options.model_path,
        replays=replays,
        logs=folder / "logs",
        producer_args={
            "train": ["--drift", f"slowdown:{SLOWDOWN:g}", "--drift-from", str(options.drift_from)]
        },
        run_by="taxi lifecycle",
        trainer_args=[
            "--min-trips",
            str(options.post_drift_trips),
            # Only the drift calls for a candidate here: a scheduled one would muddle the figures.
            "--every",
            str(options.trips * 10),
            "--min-live-trips",
            str(options.live_trips),
            "--delta",
            f"{options.delta:g}",
        ],
    )
    dashboard = None
    if options.dashboard_port is not None:
        dashboard = Child(
            "dashboard",
            [
                *("taxi-dashboard", "--port", str(options.dashboard_port)),
                *("--address", "127.0.0.1", "--refresh", "1"),
            ],
            0,  # no metrics endpoint
            folder / "logs" / "dashboard.log",
        )
        dashboard.start(pipeline.env(dashboard.principal))
        log.info("dashboard: %s", dashboard_url(options.dashboard_port))
    try:
        body, problems = _loop(cluster, options, pipeline, trips)
    finally:
        if dashboard is not None:  # up until the report is made: the page shows the end too
            stop_all([dashboard], STOP_TIMEOUT_S)
    if dashboard is not None:
        body["exit_codes"]["dashboard"] = dashboard.exit_code
        if dashboard.exit_code != 0:
            problems.append(f"dashboard exited with {dashboard.exit_code}")
    return body, problems


def _loop(
    cluster: LocalCluster, options: LifecycleOptions, pipeline: Pipeline, trips: dict[str, Source]
) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    origin_ms = now_ms()
    try:
        pipeline.start_all(START_TIMEOUT_S)
        log.info("every service is up; the slowdown starts at train trip %d", options.drift_from)
        problems += wait_for(pipeline, "the producers to finish", pipeline.producers_done)
        problems += wait_for(pipeline, "every trip scored", pipeline.drained)
    finally:
        codes = pipeline.stop(STOP_TIMEOUT_S)
    problems += [f"{name} exited with {code}" for name, code in codes.items() if code != 0]
    config = cluster.kafka_config()
    train_ids = list(read_trips(pipeline.replays["train"].csv, "train").frame["id"])
    drift_trip = train_ids[options.drift_from]
    started_ms = {
        (m.key() or b"").decode(): m.timestamp()[1] for m in read_to_end(config, NEW_TRIPS)
    }
    loop = Loop.read(config)
    figures = loop.figures(
        drift_started_ms=started_ms.get(drift_trip, origin_ms),
        train_order={trip_id: n for n, trip_id in enumerate(train_ids)},
        drift_from=options.drift_from,
    )
    problems += targets_missed(figures)
    promoted_ms = figures.get("promotion", {}).get("at_ms") or now_ms()
    timeline = Timeline(origin_ms, started_ms.get(drift_trip, origin_ms), promoted_ms)
    checked = check(observe(cluster, trips), timeline, Bounds())
    problems += checked.problems
    body = {
        "trips": {"total": options.trips, "rate_per_s": options.rate},
        "drift": {"kind": f"slowdown:{SLOWDOWN:g}", "from_train_trip": options.drift_from},
        "settings": {
            "post_drift_trips": options.post_drift_trips,
            "live_trips": options.live_trips,
            "delta": options.delta,
        },
        **figures,
        "targets": {
            "max_detection_trips": MAX_DETECTION_TRIPS,
            "max_after_over_before": MAX_AFTER_OVER_BEFORE,
            "min_stale_over_before": MIN_STALE_OVER_BEFORE,
        },
        "exactly_once": checked.figures,
        "exit_codes": codes,
    }
    return body, problems


@dataclass(frozen=True)
class Loop:
    """What the topics say the loop did: its events, its decisions and the figures."""

    events: list[ModelEvent]
    decisions: list[DeploymentDecision]
    metrics: list[ModelMetrics]

    @classmethod
    def read(cls, config: KafkaConfig) -> Loop:
        return cls(
            [decode(m.value(), ModelEvent) for m in read_to_end(config, MODEL_EVENTS)],
            [decode(m.value(), DeploymentDecision) for m in read_to_end(config, MODEL_DEPLOYMENTS)],
            [decode(m.value(), ModelMetrics) for m in read_to_end(config, MODEL_METRICS)],
        )

    def figures(
        self, *, drift_started_ms: int, train_order: dict[str, int], drift_from: int
    ) -> dict[str, Any]:
        """The report's figures; a step the loop never reached is left out."""
        if not self.decisions or self.decisions[0].champion is None:
            return {}
        stale = self.decisions[0].champion
        drift_at = _datetime(drift_started_ms)
        before = _rmsle(
            m
            for m in self._windows(stale, None)
            if m.window_end is not None and m.window_end <= drift_at
        )
        found: dict[str, Any] = {"champion": stale, "rmsle_before_drift": before}
        detection = next(
            (
                e
                for e in self.events
                if e.kind == "concept-drift" and e.model_version == stale and e.source == "train"
            ),
            None,
        )
        if detection is None or detection.last_trip_id is None:
            return found
        found["detection"] = {
            "trips_after_drift": train_order.get(detection.last_trip_id, -1) - drift_from + 1,
            "seconds_after_drift": _seconds(drift_at, detection.occurred_at),
            "statistic": detection.value,
            "threshold": detection.threshold,
        }
        candidate = next(
            (
                e
                for e in self.events
                if e.kind == "candidate" and e.occurred_at >= detection.occurred_at
            ),
            None,
        )
        if candidate is None:
            return found
        found["candidate"] = {
            "version": candidate.model_version,
            "seconds_after_detection": _seconds(detection.occurred_at, candidate.occurred_at),
            "held_out": candidate.evidence,
        }
        promotion = next(
            (
                d
                for d in self.decisions
                if d.action == "promote" and d.version == candidate.model_version
            ),
            None,
        )
        if promotion is None:
            return found
        # On probation the stale champion shadows the new one: both on the same live trips.
        after = _rmsle(self._windows(promotion.version, stale))
        stale_after = _rmsle(
            m
            for m in self.metrics
            if m.source == "train"
            and m.scope == "window"
            and m.role == "challenger"
            and m.model_version == stale
            and m.challenger_version == stale
            and m.window_start is not None
            and m.window_start >= promotion.decided_at
        )
        found["promotion"] = {
            "seconds_after_detection": _seconds(detection.occurred_at, promotion.decided_at),
            "at_ms": int(promotion.decided_at.timestamp() * 1000),
            "evidence": promotion.evidence,
            "actor": promotion.actor,
        }
        found["after_promotion"] = {
            "rmsle_promoted": after,
            "rmsle_stale_on_the_same_trips": stale_after,
            "promoted_over_before": _ratio(after, before),
            "stale_over_before": _ratio(stale_after, before),
        }
        ended = [d.action for d in self.decisions if d.decided_at > promotion.decided_at]
        found["probation"] = ended[0] if ended else "not over"
        return found

    def _windows(self, version: str, challenger: str | None) -> Iterable[ModelMetrics]:
        """The champion `version`'s train windows: on every trip (`challenger` None) or head to
        head with `challenger`."""
        return (
            m
            for m in self.metrics
            if m.source == "train"
            and m.scope == "window"
            and m.role == "champion"
            and m.model_version == version
            and m.challenger_version == challenger
        )


def targets_missed(figures: dict[str, Any]) -> list[str]:
    """The issue's targets the figures miss, in words."""
    detection = figures.get("detection")
    if detection is None:
        return ["the drift was never detected"]
    missed = []
    if detection["trips_after_drift"] > MAX_DETECTION_TRIPS:
        missed.append(
            f"detected {detection['trips_after_drift']} trips after the drift "
            f"(target: within {MAX_DETECTION_TRIPS})"
        )
    after = figures.get("after_promotion")
    if after is None:
        return [*missed, "no candidate was promoted"]
    if after["promoted_over_before"] is None or after["stale_over_before"] is None:
        return [
            *missed,
            "no RMSLE to compare: no window of the champion before the drift, or none on probation",
        ]
    if not after["promoted_over_before"] <= MAX_AFTER_OVER_BEFORE:
        missed.append(
            f"after promotion RMSLE is {after['promoted_over_before']} of the pre-drift level"
        )
    if not after["stale_over_before"] >= MIN_STALE_OVER_BEFORE:
        missed.append(
            f"the stale model is only {after['stale_over_before']} of the pre-drift level"
        )
    return missed


def _rmsle(windows: Iterable[ModelMetrics]) -> float | None:
    """The RMSLE of windows together (their squared errors add up); None on no trips."""
    trips = squared = 0.0
    for m in windows:
        trips += m.count
        squared += m.count * (m.rmsle or 0.0) ** 2
    return round(math.sqrt(squared / trips), 4) if trips else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 1)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
