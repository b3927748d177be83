"""`taxi reset`: start over with an empty pipeline on the same cluster."""

from __future__ import annotations

import click
from confluent_kafka import KafkaException

from taxi_kafka import Deleted, GroupInUseError, KafkaConfig, reset_pipeline
from taxi_kafka.cluster import NODE_IDS, ClusterError, LocalCluster
from taxi_services.commands._admin_kafka import admin_kafka_options
from taxi_services.commands.topics import admin_for
from taxi_services.options import topic_prefix_option
from taxi_services.up_state import read_state, state_path


def reset_or_fail(kafka: KafkaConfig, topic_prefix: str = "") -> Deleted:
    """reset_pipeline, its failures as messages that say what to do."""
    try:
        return reset_pipeline(admin_for(kafka), topic_prefix)
    except GroupInUseError as exc:
        raise click.ClickException(f"{exc}; nothing was deleted") from exc
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args else str(exc)
        raise click.ClickException(
            f"could not reset the pipeline on {kafka.bootstrap_servers}: {reason}"
        ) from exc


def deleted_summary(deleted: Deleted) -> str:
    if not deleted.topics and not deleted.groups:
        return "nothing to delete: the pipeline was empty"
    return (
        f"deleted {len(deleted.topics)} topic(s) ({', '.join(deleted.topics) or 'none'}) and "
        f"{len(deleted.groups)} consumer group(s) ({', '.join(deleted.groups) or 'none'})"
    )


@click.command()
@click.option("--yes", is_flag=True, help="Delete without asking.")
@admin_kafka_options
@topic_prefix_option()
def reset(*, kafka: KafkaConfig, topic_prefix: str, yes: bool) -> None:
    """Delete the pipeline's topics, consumer groups and checkpoints on the cluster.

    Every trip, prediction and metric goes, and with them the producers' replay positions
    and the aggregator's state, so the next `taxi up` replays its data from the first row.
    The model file and the cluster itself stay. `taxi up --fresh` does this first.
    Stop `taxi up` and any service first: a running consumer group refuses to go. The local
    cluster, when it is the one named and is down, is started for the reset and stopped after.
    """
    try:
        local = LocalCluster()
    except ClusterError:  # the local cluster of this folder is on other ports: not this one
        local = None
    if local is not None and (running := read_state(state_path(local))) is not None:
        raise click.ClickException(
            f"taxi up is running (pid {running['pid']}): stop it with Ctrl+C first"
        )
    if not yes:
        click.confirm(
            f"Delete every topic, consumer group and checkpoint of the pipeline"
            f"{f' {topic_prefix!r}' if topic_prefix else ''} on {kafka.bootstrap_servers}?",
            abort=True,
        )
    # The local cluster of this folder is started for the reset if it is down, as taxi up
    # would, and stopped again after it.
    started = False
    if (
        local is not None
        and kafka.bootstrap_servers == local.bootstrap_servers
        and local.runtime_dir.is_dir()
        and any(local.pid(node) is None for node in NODE_IDS)
    ):
        click.echo(f"starting the local cluster in {local.runtime_dir} for the reset")
        try:
            started = not local.up().already_running
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from exc
    try:
        click.echo(deleted_summary(reset_or_fail(kafka, topic_prefix)))
    finally:
        if started and local is not None:
            local.down()
