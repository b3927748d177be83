"""The Kafka options of the commands a user runs to manage the pipeline (`taxi reset`,
`taxi topics`, `taxi model ...`): on this folder's local cluster, made secure, they act as its
`admin` principal unless told otherwise. The services never do: each needs its own."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from taxi_kafka import KafkaConfig
from taxi_kafka.cli import kafka_options
from taxi_kafka.cluster import (
    SASL_SSL,
    SECURITY_ENV,
    ClusterError,
    LocalCluster,
    requested_security,
)

F = TypeVar("F", bound=Callable[..., Any])


def local_secure_cluster(kafka: KafkaConfig) -> LocalCluster | None:
    """This folder's local cluster, when it is a secure one and `kafka` names it."""
    try:
        local = LocalCluster()
    except ClusterError:  # this folder's cluster is on other ports: not the one named
        return None
    if not local.secure or kafka.bootstrap_servers != local.bootstrap_servers:
        return None
    return local


def local_admin(kafka: KafkaConfig) -> KafkaConfig:
    """`kafka` with the local secure cluster's admin credentials beneath its own settings,
    when it names that cluster and brings no security settings of its own."""
    local = None if "security.protocol" in kafka.settings else local_secure_cluster(kafka)
    if local is None:
        return kafka
    admin = local.client_settings()
    del admin["bootstrap.servers"]
    return KafkaConfig(kafka.bootstrap_servers, {**admin, **kafka.settings})


def encrypted(kafka: KafkaConfig) -> bool:
    """Whether `kafka`'s clients talk TLS."""
    return str(kafka.settings.get("security.protocol", "")).lower() in ("ssl", "sasl_ssl")


def secure_option(command: F) -> F:
    """--secure: refuse to reach the cluster in plaintext (env TAXI_CLUSTER_SECURITY)."""
    return click.option(
        "--secure",
        is_flag=True,
        help="Refuse to reach the cluster unencrypted: the local secure cluster (as `taxi "
        "cluster up --secure` makes it), or the TLS settings given "
        f"(env {SECURITY_ENV}={SASL_SSL}).",
    )(command)


def admin_kafka_options(command: F) -> F:
    """kafka_options and --secure, with `kafka` made `local_admin(kafka)`."""

    @secure_option
    @functools.wraps(command)
    def wrapper(*, kafka: KafkaConfig, secure: bool, **kwargs: Any) -> Any:
        kafka = local_admin(kafka)
        try:
            wanted = requested_security(secure) == SASL_SSL
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from exc
        if wanted and not encrypted(kafka):
            raise click.ClickException(
                f"--secure: {kafka.bootstrap_servers} would be reached unencrypted. No secure "
                "local cluster runs there (`taxi cluster up --secure` starts one), and no "
                "security.protocol=SASL_SSL or SSL was given (--kafka-config, -X or "
                "TAXI_KAFKA_SECURITY_PROTOCOL)"
            )
        return command(kafka=kafka, **kwargs)

    return kafka_options(wrapper)  # type: ignore[return-value]  # wraps() keeps F's options
