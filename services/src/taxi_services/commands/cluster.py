"""`taxi cluster ...`: the local 3-broker KRaft cluster. Thin: parse, call taxi_kafka, print."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from confluent_kafka import KafkaException

from taxi_kafka import DEFAULT_PARTITIONS, project_topics
from taxi_kafka.cluster import (
    COMPOSE_SECRETS_ENV,
    CONTAINER_UID,
    NODE_IDS,
    ClusterError,
    LocalCluster,
    default_compose_secrets_dir,
    ensure_compose_secrets,
    format_status,
    requested_security,
)

ClusterFactory = Callable[..., LocalCluster]

node_argument = click.argument("node", type=click.IntRange(min(NODE_IDS), max(NODE_IDS)))


def _timeout_option(default: float, what: str) -> Callable[[Callable[..., Any]], Any]:
    return click.option(
        "--timeout", type=float, default=default, show_default=True, help=f"Seconds to {what}."
    )


def _nodes(node_ids: Sequence[int]) -> str:
    return ", ".join(map(str, node_ids))


class _ClusterGroup(click.Group):
    """Shows the library's errors as one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from exc
        except KafkaException as exc:
            raise click.ClickException(f"Kafka: {exc.args[0].str() if exc.args else exc}") from exc


@click.group(cls=_ClusterGroup)
@click.option(
    "--runtime-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes' config, data, logs and pids live "
    "[default: $TAXI_RUNTIME_DIR/cluster, else .taxi/cluster in the workspace].",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65433),
    help="First broker port: brokers listen on N..N+2, controllers on N+100..N+102 "
    "[default: 19092, or the ports the runtime dir was created with] "
    "(env TAXI_CLUSTER_BASE_PORT).",
)
@click.pass_context
def cluster(ctx: click.Context, runtime_dir: Path | None, base_port: int | None) -> None:
    """The local 3-broker Kafka cluster: KRaft, each node a broker and a controller in its own
    JVM, on 127.0.0.1.

    Needs Java 17+. The Kafka jars come from Maven Central via mvn on first use (cached in
    ~/.cache/ml-taxi, or $TAXI_CLUSTER_JARS_DIR), or from $KAFKA_HOME/libs if KAFKA_HOME is set.
    """
    ctx.obj = functools.partial(LocalCluster, runtime_dir, base_port=base_port)


@cluster.command()
@click.pass_obj
def fetch(make: ClusterFactory) -> None:
    """Check Java and fetch the Kafka jars now (they are cached; later runs are instant)."""
    local = make()
    started = time.monotonic()
    java = local.ensure_java()
    jars = local.ensure_jars()
    count = len(list(jars.directory.glob("*.jar")))
    click.echo(
        f"Kafka {jars.version}: {count} jars in {jars.directory} "
        f"(from {jars.source}, {time.monotonic() - started:.1f} s); java: {java}"
    )


@cluster.command()
@_timeout_option(180.0, "wait for the cluster to be up and healthy")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=DEFAULT_PARTITIONS,
    show_default=True,
    help="Partitions of each project topic, when it is created.",
)
@click.option(
    "--secure",
    is_flag=True,
    help="SASL_SSL on every listener: TLS with the project's own CA, a SCRAM-SHA-512 user per "
    "service, and ACLs that give each only what it needs (env TAXI_CLUSTER_SECURITY=sasl_ssl). "
    "Secrets are made on first use in .taxi/secrets (mode 0700). A cluster keeps the security "
    "it was made with.",
)
@click.pass_obj
def up(make: ClusterFactory, timeout: float, partitions: int, secure: bool) -> None:
    """Start the cluster (or the nodes of it that are down) and create the project topics.

    Formats storage on first use. Waits until all three brokers serve, the topics (RF 3,
    min.insync.replicas 2) and Kafka's internal topics exist and nothing is under-replicated.
    Running nodes are left alone, so running it twice is fine.
    """
    local = make(topics=project_topics(partitions), security=requested_security(secure))
    result = local.up(timeout)
    if result.already_running:
        click.echo(f"The cluster was already running; healthy ({result.seconds:.1f} s to check).")
    else:
        click.echo(f"Started node(s) {_nodes(result.started)}: up in {result.seconds:.1f} s.")
    if result.created_topics:
        click.echo(f"Created topics: {', '.join(result.created_topics)}.")
    click.echo(format_status(local.status()))
    if local.secure:
        click.echo(f"Secure (SASL_SSL); each principal's client config: {local.secrets_dir}/")
        click.echo("  <principal>.properties (pass it with --kafka-config)")


@cluster.command()
@click.option("--purge", is_flag=True, help="Also delete the nodes' data, logs and config.")
@_timeout_option(30.0, "wait for each node's clean shutdown before SIGKILL")
@click.pass_obj
def down(make: ClusterFactory, purge: bool, timeout: float) -> None:
    """Stop all nodes cleanly (SIGTERM, then SIGKILL after --timeout). Data is kept unless
    --purge."""
    local = make()
    started = time.monotonic()
    stopped = local.down(timeout, purge=purge)
    took = time.monotonic() - started
    click.echo(f"Stopped node(s) {_nodes(stopped)} in {took:.1f} s." if stopped else "No node ran.")
    if purge:
        click.echo(f"Deleted the cluster's data, logs and config in {local.runtime_dir}.")


@cluster.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def status(make: ClusterFactory, as_json: bool) -> None:
    """Each node (up: process alive, port open and registered), the active controller,
    under-replicated and offline partitions. Exits 1 unless all is healthy."""
    current = make().status()
    click.echo(current.to_json() if as_json else format_status(current))
    if not current.healthy:
        raise SystemExit(1)


@cluster.command("stop-broker")
@node_argument
@_timeout_option(30.0, "wait for the clean shutdown before SIGKILL")
@click.pass_obj
def stop_broker(make: ClusterFactory, node: int, timeout: float) -> None:
    """Stop node NODE cleanly (SIGTERM): it hands its partition leaderships over first."""
    stopped = make().stop_broker(node, timeout)
    click.echo(f"Stopped node {node}." if stopped else f"Node {node} was not running.")


@cluster.command("kill-broker")
@node_argument
@click.pass_obj
def kill_broker(make: ClusterFactory, node: int) -> None:
    """Kill node NODE (SIGKILL), like a crash: its leaderships move only once the controller
    fences it, after broker.session.timeout.ms."""
    killed = make().kill_broker(node)
    click.echo(f"Killed node {node}." if killed else f"Node {node} was not running.")


@cluster.command("start-broker")
@node_argument
@_timeout_option(60.0, "wait for the node to serve")
@click.pass_obj
def start_broker(make: ClusterFactory, node: int, timeout: float) -> None:
    """Start node NODE again on its existing data (no re-format) and wait until it serves."""
    started = time.monotonic()
    if make().start_broker(node, timeout):
        click.echo(f"Node {node} is up ({time.monotonic() - started:.1f} s).")
    else:
        click.echo(f"Node {node} was already running.")


@cluster.command("compose-secrets")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write them [default: .taxi/compose-secrets in the workspace, where "
    "docker-compose.secure.yml looks; another folder needs TAXI_COMPOSE_SECRETS=DIR].",
)
def compose_secrets(directory: Path | None) -> None:
    """Write the secrets of docker-compose.secure.yml: the secure cluster in docker compose.

    A CA, a certificate per broker (kafka-N, localhost, 127.0.0.1), a SCRAM password and a
    client config per principal, and each broker's server.properties: the local secure
    cluster's settings with compose's hosts and ports. Folder mode 0700, files 0600. A second
    run reuses what is there (certificates are renewed within 30 days of expiry).
    """
    default = default_compose_secrets_dir()
    directory = (directory or default).absolute()
    written = ensure_compose_secrets(directory)
    click.echo(f"Compose secrets in {directory} (folder 0700, files 0600):")
    click.echo(f"  made: {', '.join(written.made) or 'nothing'}")
    if written.changed:
        click.echo(f"  rewritten: {', '.join(written.changed)}")
    click.echo(f"  reused as they were: {len(written.kept)} file(s)")
    if os.getuid() != CONTAINER_UID:
        click.echo(
            f"Note: the containers run as uid {CONTAINER_UID} and compose mounts these files "
            f"with their owner and mode (0600); on Linux, `sudo chown -R {CONTAINER_UID} "
            f"{directory}` lets them read the files."
        )
    moved = "" if directory == default.absolute() else f"{COMPOSE_SECRETS_ENV}={directory} "
    click.echo(
        "Next: export GF_SECURITY_ADMIN_PASSWORD=... and run\n"
        f"  {moved}docker compose -f docker-compose.yml -f docker-compose.secure.yml up -d --build"
    )
