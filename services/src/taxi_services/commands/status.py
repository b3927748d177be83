"""`taxi status`: what is running on this machine, from the cluster to the dashboard."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path

import click
from confluent_kafka import KafkaException

from taxi_kafka import (
    DASHBOARD_PORT,
    METRICS_PORTS,
    PIPELINE_GROUPS,
    PROMETHEUS_PORT,
    GroupLag,
    LagProbe,
)
from taxi_kafka.cluster import (
    SASL_SSL,
    SECURITY_ENV,
    ClusterError,
    LocalCluster,
    requested_security,
)
from taxi_model import ModelLoadError, read_card
from taxi_services.options import model_option
from taxi_services.scrape import scrape
from taxi_services.status import PipelineStatus, ServiceState, format_report, service_detail
from taxi_services.up_state import read_state, state_path


def probe_services() -> list[ServiceState]:
    services = []
    for name, port in METRICS_PORTS.items():
        url = f"http://127.0.0.1:{port}/metrics"
        samples = scrape(url)
        detail = service_detail(name, samples) if samples is not None else ""
        services.append(ServiceState(name, url, samples is not None, detail))
    dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
    prometheus = f"http://127.0.0.1:{PROMETHEUS_PORT}"
    services.append(
        ServiceState("dashboard UI", dashboard, _answers(f"{dashboard}/_stcore/health"))
    )
    services.append(ServiceState("prometheus", prometheus, _answers(f"{prometheus}/-/ready")))
    return services


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def group_lag(probe: LagProbe, group: str, timeout: float) -> GroupLag | None:
    """The lag of `group` (one of PIPELINE_GROUPS) in records, or None when it is not known: a
    broker going away mid-call, say."""
    with contextlib.suppress(KafkaException):
        return probe.lag(group, PIPELINE_GROUPS[group], timeout=timeout)
    return None


def lag_by_group(cluster: LocalCluster) -> dict[str, GroupLag | None]:
    with LagProbe(cluster.client_settings()) as probe:
        return {group: group_lag(probe, group, timeout=3.0) for group in PIPELINE_GROUPS}


def describe_model(model_path: Path) -> str:
    try:
        card = read_card(model_path)
    except ModelLoadError:
        return f"none usable at {model_path} (`taxi up` or `taxi train` makes one)"
    return f"{card.version} at {model_path}, held-out RMSLE {card.holdout.rmsle:.3f}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--secure",
    is_flag=True,
    help="Expect the secure local cluster (`taxi cluster up --secure`): an error if the one "
    f"here is plaintext (env {SECURITY_ENV}={SASL_SSL}). A secure one is probed as admin "
    "with or without the flag.",
)
@model_option("The model to describe.")
def status(as_json: bool, secure: bool, model_path: Path) -> None:
    """What runs here: the local Kafka cluster (its security too), the consumer groups' lag
    (in records, not offsets: transaction markers take offsets too), the model, each service
    (probed on its default metrics port), the dashboard and Prometheus, and the `taxi up` that
    started them, if any."""
    try:
        cluster = LocalCluster(security=requested_security(secure))
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    cluster_status = cluster.status(timeout=3.0)
    report = PipelineStatus(
        cluster=cluster_status,
        services=probe_services(),
        group_lag=lag_by_group(cluster) if cluster_status.metadata_error is None else {},
        model=describe_model(model_path),
        up=read_state(state_path(cluster)),
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_report(report))
