"""`taxi-dashboard`: the live Streamlit dashboard, served headless.

The command starts the process's one Kafka reader (and the metrics endpoint) at once, so the
page has data and Prometheus a target before anyone opens it, then runs the Streamlit server in
this process, as `streamlit run` does. Streamlit handles SIGTERM and Ctrl+C: it stops the
server and the command exits 0. The options also go to the app as environment variables.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from streamlit.web import bootstrap

from taxi_dashboard.reader import shared_live_data
from taxi_dashboard.settings import (
    BROKERS_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_HEALTH_INTERVAL_S,
    DEFAULT_LOOKBACK_S,
    DEFAULT_METRICS_PORT,
    DEFAULT_PORT,
    DEFAULT_REFRESH_S,
    HEALTH_INTERVAL_ENV,
    LOG_LEVEL_ENV,
    LOOKBACK_ENV,
    METRICS_ADDRESS_ENV,
    METRICS_PORT_ENV,
    PORT_ENV,
    REFRESH_ENV,
    DashboardSettings,
)
from taxi_kafka.config import BOOTSTRAP_ENV, ConfigError, KafkaConfig

APP = Path(__file__).with_name("app.py")
ADDRESS_ENV = "TAXI_DASHBOARD_ADDRESS"


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


def configure_logging(level: str) -> None:
    # Streamlit sets up its own loggers; the project's get a handler of their own.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    for name in ("taxi", "taxi_kafka"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)
        logger.propagate = False


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    envvar=PORT_ENV,
    show_envvar=True,
    show_default=True,
    help="Port of the web page.",
)
@click.option(
    "--address",
    default=DEFAULT_ADDRESS,
    envvar=ADDRESS_ENV,
    show_envvar=True,
    show_default=True,
    help="Interface the page listens on (0.0.0.0: every one, as a container publishing the "
    "port needs).",
)
@click.option(
    "--bootstrap-servers",
    envvar=BOOTSTRAP_ENV,
    show_envvar=True,
    help="Every broker, comma-separated [default: the three local brokers].",
)
@click.option(
    "-X",
    "kafka_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any librdkafka setting (repeatable), e.g. -X security.protocol=SSL. "
    "TAXI_KAFKA_<NAME> variables do the same: TAXI_KAFKA_SASL_MECHANISM=PLAIN.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_METRICS_PORT,
    envvar=METRICS_PORT_ENV,
    show_envvar=True,
    show_default=True,
    help="Port of the Prometheus /metrics endpoint (0: none).",
)
@click.option(
    "--metrics-address",
    default=DEFAULT_ADDRESS,
    envvar=METRICS_ADDRESS_ENV,
    show_envvar=True,
    show_default=True,
    help="Interface of the /metrics endpoint (0.0.0.0: every one, as a container publishing "
    "the port needs).",
)
@click.option(
    "--brokers",
    type=click.IntRange(1),
    default=None,
    envvar=BROKERS_ENV,
    show_envvar=True,
    help="Brokers the cluster should have [default: as many as the bootstrap list names].",
)
@click.option(
    "--refresh",
    type=click.FloatRange(0.5, 10),
    default=DEFAULT_REFRESH_S,
    envvar=REFRESH_ENV,
    show_envvar=True,
    show_default=True,
    help="Seconds between page updates (model quality: twice that).",
)
@click.option(
    "--lookback",
    type=click.FloatRange(0),
    default=DEFAULT_LOOKBACK_S,
    envvar=LOOKBACK_ENV,
    show_envvar=True,
    show_default=True,
    help="Seconds of trips read back from before the start, so the page is not empty "
    "(model quality and dead letters: two hours).",
)
@click.option(
    "--health-interval",
    type=click.FloatRange(0.5, 60),
    default=DEFAULT_HEALTH_INTERVAL_S,
    envvar=HEALTH_INTERVAL_ENV,
    show_envvar=True,
    show_default=True,
    help="Seconds between cluster health checks (brokers, replicas, consumer lag).",
)
@click.option(
    "--log-level",
    envvar=LOG_LEVEL_ENV,
    default="INFO",
    show_default=True,
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(
    *,
    port: int,
    address: str,
    bootstrap_servers: str | None,
    kafka_settings: tuple[str, ...],
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
    try:
        kafka = KafkaConfig.from_env(bootstrap_servers=bootstrap_servers, overrides=kafka_settings)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="-X") from exc
    settings = DashboardSettings(
        kafka=kafka,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        expected_brokers=brokers,
        refresh_s=refresh,
        lookback_s=lookback,
        health_interval_s=health_interval,
        log_level=log_level.upper(),
    )
    configure_logging(settings.log_level)
    os.environ.update(settings.to_env())
    shared_live_data(settings)
    click.echo(f"dashboard: http://{address}:{port}  (Kafka {kafka.bootstrap_servers})")
    options = streamlit_options(port=port, address=address, log_level=log_level)
    bootstrap.load_config_options(flag_options=options)
    bootstrap.run(str(APP), False, [], options)
