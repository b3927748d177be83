"""`taxi reset`: start over with an empty pipeline on the same cluster."""

from __future__ import annotations

import click
from confluent_kafka import KafkaException

from taxi_kafka.admin import Deleted, GroupInUseError, reset_pipeline
from taxi_kafka.cluster import ClusterError, LocalCluster
from taxi_kafka.config import KafkaConfig
from taxi_services.commands.topics import admin_for
from taxi_services.options import kafka_options, topic_prefix_option
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
@kafka_options
@topic_prefix_option()
def reset(*, kafka: KafkaConfig, topic_prefix: str, yes: bool) -> None:
    """Delete the pipeline's topics, consumer groups and checkpoints on the cluster.

    Every trip, prediction and metric goes, and with them the producers' replay positions
    and the aggregator's state, so the next `taxi up` replays its data from the first row.
    The model file and the cluster itself stay. `taxi up --fresh` does this first.
    Stop `taxi up` and any service first: a running consumer group refuses to go.
    """
    try:
        running = read_state(state_path(LocalCluster()))
    except ClusterError:  # no local cluster here, or another one: nothing of ours runs
        running = None
    if running is not None:
        raise click.ClickException(
            f"taxi up is running (pid {running['pid']}): stop it with Ctrl+C first"
        )
    if not yes:
        click.confirm(
            f"Delete every topic, consumer group and checkpoint of the pipeline"
            f"{f' {topic_prefix!r}' if topic_prefix else ''} on {kafka.bootstrap_servers}?",
            abort=True,
        )
    click.echo(deleted_summary(reset_or_fail(kafka, topic_prefix)))
