"""`taxi lifecycle`: drift, detection, retraining and promotion, proven by a report."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from taxi_kafka import DASHBOARD_PORT
from taxi_kafka.cli import env_option
from taxi_model import ModelLoadError, ensure_model
from taxi_services.commands._report import REPORT_OPTION, run_and_report
from taxi_services.lifecycle import (
    MAX_AFTER_OVER_BEFORE,
    MAX_DETECTION_TRIPS,
    MIN_STALE_OVER_BEFORE,
    SLOWDOWN,
    LifecycleOptions,
    run_lifecycle,
    train_trips,
)
from taxi_services.options import model_option
from taxi_stream import DEFAULT_DELTA, DEFAULT_MIN_TRIPS

log = logging.getLogger("taxi.lifecycle")

option = env_option("lifecycle")


@click.command(
    help=f"""Prove the loop closes: drift, detection, retraining, promotion.

On a fresh 3-broker cluster in a temporary folder, both producers replay synthetic trips (half
train, half test) through the predictor, the aggregator and the trainer, all as real processes.
From --drift-from on, every train trip lasts {SLOWDOWN:g} times as long (a citywide slowdown).
Nobody intervenes: the aggregator must detect the drift, the trainer train a candidate on the
trips after it and publish it as challenger, and the promotion policy promote it once it beats
the stale champion on the same live trips.

Prints one JSON object: the champion's RMSLE before the drift; trips and seconds from the drift
to its detection; the seconds to a candidate and to its promotion; the promoted model's RMSLE
after promotion beside the stale model's on the same trips; and every trip counted exactly once
through the switches. Exits 1 unless the drift is detected within {MAX_DETECTION_TRIPS:,} trips,
the promoted model is within {MAX_AFTER_OVER_BEFORE - 1:.0%} of the pre-drift RMSLE, and the
stale model at least {MIN_STALE_OVER_BEFORE - 1:.0%} worse on the same trips.

With --dashboard, the dashboard watches the run at http://127.0.0.1:PORT (--dashboard-port),
from the cluster's start until the report is made: the drift banner, the candidate beside the
champion, the promotion and the probation, as they happen.
"""
)
@option("--trips", type=click.IntRange(1_000), default=80_000, help="Trips, half train.")
@option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=300.0,
    help="Trips started per second, both producers together.",
)
@option(
    "--drift-from",
    type=click.IntRange(0),
    default=8_000,
    help="The train trip the slowdown starts at.",
)
@option(
    "--post-drift-trips",
    type=click.IntRange(100),
    default=3_000,
    help="Labelled trips after the drift a candidate trains on.",
)
@option(
    "--live-trips",
    type=click.IntRange(1),
    default=DEFAULT_MIN_TRIPS,
    help="Live train trips the policy needs to promote (and to end a probation).",
)
@option(
    "--delta",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_DELTA,
    help="RMSLE margin for an automatic promotion or rollback.",
)
@model_option("The first champion; trained here if missing.")
@option("--keep", is_flag=True, help="Keep the run's folder: cluster, trips, service logs.")
@option(
    "--dashboard",
    is_flag=True,
    help="Serve the dashboard on 127.0.0.1 during the run, to watch the loop close.",
)
@option(
    "--dashboard-port",
    type=click.IntRange(1, 65535),
    default=DASHBOARD_PORT,
    help="The dashboard's port, with --dashboard.",
)
@option("--report", **REPORT_OPTION)
def lifecycle(
    *,
    trips: int,
    rate: float,
    drift_from: int,
    post_drift_trips: int,
    live_trips: int,
    delta: float,
    model_path: Path,
    keep: bool,
    dashboard: bool,
    dashboard_port: int,
    report: Path | None,
) -> None:
    if drift_from >= train_trips(trips):
        raise click.BadParameter(
            f"train trip {drift_from} is past the last of the {train_trips(trips):,} train trips"
            " replayed: replay more --trips",
            param_hint="--drift-from",
        )
    try:
        version = ensure_model(model_path, Path("data"), log.info)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("first champion: model %s at %s", version, model_path)
    options = LifecycleOptions(
        trips=trips,
        rate=rate,
        drift_from=drift_from,
        model_path=model_path,
        post_drift_trips=post_drift_trips,
        live_trips=live_trips,
        delta=delta,
        keep=keep,
        dashboard_port=dashboard_port if dashboard else None,
    )
    run_and_report(
        lambda: run_lifecycle(options),
        marker="taxi-lifecycle-",
        command=f"uv run taxi lifecycle --trips {trips} --rate {rate:g} --drift-from {drift_from}",
        report=report,
    )
