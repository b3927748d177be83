"""`taxi-dashboard`: the live Streamlit dashboard, served headless.

The command starts the process's one Kafka reader (and the metrics endpoint) at once, so the
page has data and Prometheus a target before anyone opens it, then runs the Streamlit server in
this process, as `streamlit run` does. Streamlit handles SIGTERM and Ctrl+C: it stops the
server and the command exits 0. The options also go to the app as environment variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from streamlit.web import bootstrap

from taxi_dashboard.reader import shared_live_data
from taxi_dashboard.settings import (
    COMMAND,
    DEFAULT_ADDRESS,
    DEFAULT_HEALTH_INTERVAL_S,
    DEFAULT_LOOKBACK_S,
    DEFAULT_METRICS_PORT,
    DEFAULT_PORT,
    DEFAULT_REFRESH_S,
    DashboardSettings,
)
from taxi_kafka import KafkaConfig
from taxi_kafka.cli import (
    configure_logging,
    env_option,
    kafka_options,
    log_level_option,
    metrics_options,
)

APP = Path(__file__).with_name("app.py")
option = env_option(COMMAND)


def streamlit_options(*, port: int, address: str, log_level: str) -> dict[str, Any]:
    """Streamlit's config options (as `streamlit run` flags name them) for a headless server."""
    return {
        "server.port": port,
        "server.address": address,
        "server.headless": True,
        # A server, not a development session: no reruns on file changes, no telemetry.
        "server.fileWatcherType": "none",
        "browser.gatherUsageStats": False,
        "client.toolbarMode": "viewer",
        "logger.level": log_level.lower(),
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    help="Port of the web page.",
)
@option(
    "--address",
    default=DEFAULT_ADDRESS,
    help="Interface the page listens on (0.0.0.0: every one, as a container publishing the "
    "port needs).",
)
@kafka_options
@metrics_options(COMMAND, DEFAULT_METRICS_PORT, DEFAULT_ADDRESS)
@option(
    "--brokers",
    type=click.IntRange(1),
    default=None,
    show_default=False,
    help="Brokers the cluster should have [default: as many as the bootstrap list names].",
)
@option(
    "--refresh",
    type=click.FloatRange(0.5, 10),
    default=DEFAULT_REFRESH_S,
    help="Seconds between page updates (model quality: twice that).",
)
@option(
    "--lookback",
    type=click.FloatRange(0),
    default=DEFAULT_LOOKBACK_S,
    help="Seconds of trips read back from before the start, so the page is not empty "
    "(model quality and dead letters: two hours).",
)
@option(
    "--health-interval",
    type=click.FloatRange(0.5, 60),
    default=DEFAULT_HEALTH_INTERVAL_S,
    help="Seconds between cluster health checks (brokers, replicas, consumer lag).",
)
@log_level_option
def main(
    *,
    port: int,
    address: str,
    kafka: KafkaConfig,
    metrics_port: int,
    metrics_address: str,
    brokers: int | None,
    refresh: float,
    lookback: float,
    health_interval: float,
    log_level: str,
) -> None:
    """Serve the live dashboard: the map of trips in progress and finished, the latest
    predictions against real durations, model quality over time and the pipeline's health.

    It reads new_trips, ml_predictions, finished_trips, model_metrics and dead_letters
    (read_committed, from a short look-back before their ends) in one background reader
    shared by every browser tab. Stop it with Ctrl+C or SIGTERM.
    """
    settings = DashboardSettings(
        kafka=kafka,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        expected_brokers=brokers,
        refresh_s=refresh,
        lookback_s=lookback,
        health_interval_s=health_interval,
        log_level=log_level,
    )
    # Streamlit sets up the root logger itself; the project's loggers get a handler of their own.
    configure_logging(settings.log_level, loggers=("taxi", "taxi_kafka"))
    os.environ.update(settings.to_env())
    shared_live_data(settings)
    click.echo(f"dashboard: http://{address}:{port}  (Kafka {kafka.bootstrap_servers})")
    options = streamlit_options(port=port, address=address, log_level=log_level)
    bootstrap.load_config_options(flag_options=options)
    bootstrap.run(str(APP), False, [], options)
