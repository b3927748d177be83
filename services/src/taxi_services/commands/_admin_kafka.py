"""The Kafka options of the commands a user runs to manage the pipeline (`taxi reset`,
`taxi topics`, `taxi model ...`): on this folder's local cluster, made secure, they act as its
`admin` principal unless told otherwise. The services never do: each needs its own."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from taxi_kafka import KafkaConfig
from taxi_kafka.cli import kafka_options
from taxi_kafka.cluster import ClusterError, LocalCluster

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


def admin_kafka_options(command: F) -> F:
    """kafka_options, with `kafka` made `local_admin(kafka)`."""

    @functools.wraps(command)
    def wrapper(*, kafka: KafkaConfig, **kwargs: Any) -> Any:
        return command(kafka=local_admin(kafka), **kwargs)

    return kafka_options(wrapper)  # type: ignore[return-value]  # wraps() keeps F's options
