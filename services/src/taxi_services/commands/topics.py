"""`taxi topics ensure|list`: the project's topics on any Kafka cluster, through the admin API.

Unlike `taxi cluster up`, these run against whatever cluster --bootstrap-servers names (docker
compose's, a managed one), with any librdkafka setting passed through (TAXI_KAFKA_*, -X).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import click
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from taxi_kafka import (
    DEFAULT_PARTITIONS,
    INTERNAL_TOPICS,
    MIN_INSYNC_REPLICAS,
    REPLICATION_FACTOR,
    KafkaConfig,
    NotReadyError,
    RetryPolicy,
    TopicSpec,
    TopicState,
    admin_client,
    create_internal_topics,
    differences,
    ensure_grants,
    ensure_topics,
    is_transient,
    pipeline_grants,
    project_topics,
    topic_states,
)
from taxi_kafka.cli import env_option
from taxi_kafka.cluster import PartitionState, partitions_of
from taxi_services.commands._admin_kafka import admin_kafka_options, local_secure_cluster
from taxi_services.options import topic_prefix_option

F = TypeVar("F", bound=Callable[..., Any])

option = env_option("topics")
# One metadata or admin request at most; the retries around it are bounded by --timeout.
REQUEST_TIMEOUT_S = 10.0
# Clients here wait for brokers that are starting: reconnect quickly rather than back off 10 s.
ADMIN_DEFAULTS = {"reconnect.backoff.max.ms": 1000}


def _topic_options(timeout: float) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        command = option(
            "--partitions",
            type=click.IntRange(min=1),
            default=DEFAULT_PARTITIONS,
            help="Partitions of new_trips, finished_trips, ml_predictions, model_metrics and "
            "dead_letters (the state topics have one).",
        )(command)
        command = option(
            "--timeout",
            type=click.FloatRange(min=0),
            default=timeout,
            help="Seconds to keep retrying while the cluster is unreachable or not ready.",
        )(command)
        return admin_kafka_options(topic_prefix_option()(command))

    return decorate


@dataclass(frozen=True)
class TopicReport:
    """One topic as it should be and as it is."""

    name: str
    partitions: int | None
    replication_factor: int | None
    min_insync_replicas: int | None
    under_replicated: int
    offline: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"topic": data.pop("name"), **data, "ok": self.ok}


def expected_internal(name: str) -> TopicSpec:
    # Kafka's internal topics: the brokers choose their partition count.
    return TopicSpec(name, 0, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS)


def topic_report(
    spec: TopicSpec,
    state: TopicState | None,
    partitions: Sequence[PartitionState],
    fields: Sequence[str] = ("partitions", "replication_factor", "min_insync_replicas"),
) -> TopicReport:
    """Compare a topic with its spec on `fields`; also flag under-replicated and offline
    partitions."""
    if state is None:
        return TopicReport(spec.name, None, None, None, 0, 0, ("missing",))
    under = sum(p.under_replicated for p in partitions)
    offline = sum(p.offline for p in partitions)
    problems = differences(spec, state, fields)
    problems += [f"{under} under-replicated"] if under else []
    problems += [f"{offline} offline"] if offline else []
    return TopicReport(
        spec.name,
        state.partitions,
        state.replication_factor,
        state.min_insync_replicas,
        under,
        offline,
        tuple(problems),
    )


def format_reports(reports: Sequence[TopicReport]) -> str:
    def cell(value: int | None) -> str:
        return "-" if value is None else str(value)

    width = max(len(r.name) for r in reports) + 2
    lines = [f"{'topic':<{width}}partitions  RF  min ISR  under-replicated  offline  state"]
    for r in reports:
        state = "ok" if r.ok else "; ".join(r.problems)
        lines.append(
            f"{r.name:<{width}}{cell(r.partitions):>10}  {cell(r.replication_factor):>2}"
            f"  {cell(r.min_insync_replicas):>7}  {r.under_replicated:>16}  {r.offline:>7}  {state}"
        )
    return "\n".join(lines)


def admin_for(kafka: KafkaConfig) -> AdminClient:
    """An admin client with every setting passed through (security included)."""
    settings = kafka.client_settings(ADMIN_DEFAULTS, what="admin")
    return admin_client(kafka.bootstrap_servers, **settings)


@dataclass(frozen=True)
class _Budget:
    """--timeout as a monotonic deadline for all the retries, and a cap on each request."""

    deadline: float
    request: float

    @classmethod
    def of(cls, timeout: float) -> _Budget:
        return cls(time.monotonic() + timeout, min(REQUEST_TIMEOUT_S, max(timeout, 1.0)))

    def retry(self) -> RetryPolicy:
        remaining = max(self.deadline - time.monotonic(), 0.0)
        return RetryPolicy(initial=0.5, max_delay=5.0, deadline=remaining)


def _fail(kafka: KafkaConfig, exc: Exception, timeout: float) -> click.ClickException:
    reason = exc.args[0].str() if isinstance(exc, KafkaException) and exc.args else str(exc)
    return click.ClickException(
        f"the Kafka cluster at {kafka.bootstrap_servers} is not ready after {timeout:.0f} s: "
        f"{reason}"
    )


def _reports(admin: AdminClient, specs: Sequence[TopicSpec], budget: _Budget) -> list[TopicReport]:
    names = [spec.name for spec in specs] + list(INTERNAL_TOPICS)

    def fetch() -> list[TopicReport]:
        states = topic_states(admin, names, budget.request)
        by_topic: dict[str, list[PartitionState]] = defaultdict(list)
        for partition in partitions_of(admin.list_topics(timeout=budget.request)):
            by_topic[partition.topic].append(partition)
        internal_fields = ("replication_factor", "min_insync_replicas")
        return [
            topic_report(spec, states.get(spec.name), by_topic[spec.name]) for spec in specs
        ] + [
            topic_report(expected_internal(n), states.get(n), by_topic[n], internal_fields)
            for n in INTERNAL_TOPICS
        ]

    return budget.retry().call(fetch, retryable=is_transient, what="describe topics")


def _wait_until_ready(
    admin: AdminClient, specs: Sequence[TopicSpec], internal: bool, budget: _Budget
) -> int:
    """Wait until the cluster answers with enough brokers to create what is missing (a topic
    with replication factor 3 needs three). Returns the number of brokers."""
    wanted = [(spec.name, spec.replication_factor) for spec in specs]
    wanted += [(name, REPLICATION_FACTOR) for name in INTERNAL_TOPICS] if internal else []

    def check() -> int:
        metadata = admin.list_topics(timeout=budget.request)
        missing = [(name, rf) for name, rf in wanted if name not in metadata.topics]
        needed = max((rf for _name, rf in missing), default=1)
        if len(metadata.brokers) < needed:
            raise NotReadyError(
                f"{len(metadata.brokers)} broker(s) up; creating "
                f"{', '.join(name for name, _rf in missing)} needs {needed}"
            )
        return len(metadata.brokers)

    return budget.retry().call(check, retryable=is_transient, what="wait for the cluster")


@click.group()
def topics() -> None:
    """The project's topics on any Kafka cluster: create them, or check them.

    Point --bootstrap-servers (or KAFKA_BOOTSTRAP_SERVERS) at every broker; pass TLS, SASL or
    any other librdkafka setting with -X or TAXI_KAFKA_* variables.
    """


@topics.command()
@_topic_options(timeout=120.0)
@click.option(
    "--internal/--no-internal",
    default=True,
    show_default=True,
    help="Also make the brokers create __consumer_offsets and __transaction_state now, while "
    "all brokers are up (created lazily, they would fail to appear with one broker down).",
)
@option(
    "--grant-acls",
    is_flag=True,
    default=False,
    help="Also grant each service's principal what it needs (its topics and group under "
    "--topic-prefix), as ACLs, as the principal this runs as (an admin). On this folder's "
    "secure cluster that is done anyway.",
)
def ensure(
    *,
    kafka: KafkaConfig,
    partitions: int,
    timeout: float,
    internal: bool,
    grant_acls: bool,
    topic_prefix: str,
) -> None:
    """Create the project's topics that are missing (replication factor 3, min.insync.replicas
    2), and print what was created and what already existed.

    Waits up to --timeout for the cluster to answer with enough brokers, so it can run while
    the brokers start (docker compose runs it so). Existing topics are never changed: any
    difference from the expected settings is reported.
    """
    started = time.monotonic()
    budget = _Budget.of(timeout)
    specs = project_topics(partitions, topic_prefix)
    admin = admin_for(kafka)
    click.echo(
        f"waiting for the Kafka cluster at {kafka.bootstrap_servers} (up to {timeout:.0f} s)"
    )
    try:
        brokers = _wait_until_ready(admin, specs, internal, budget)
        click.echo(f"{brokers} broker(s) up after {time.monotonic() - started:.1f} s")
        created = ensure_topics(admin, specs, retry=budget.retry(), timeout=budget.request)
        if internal:
            create_internal_topics(
                kafka.client_settings(what="internal topics"),
                retry=budget.retry(),
                timeout=budget.request,
            )
        reports = _reports(admin, specs, budget)
        # On this folder's secure cluster, the services get their ACLs under the prefix too
        # (`taxi cluster up --secure` grants the unprefixed names); on any other, when asked
        # (docker-compose.secure.yml's topics job, a company's cluster).
        granted = (
            ensure_grants(admin, pipeline_grants(topic_prefix))
            if grant_acls or local_secure_cluster(kafka)
            else 0
        )
    except (KafkaException, NotReadyError) as exc:
        raise _fail(kafka, exc, timeout) from exc
    existed = [spec.name for spec in specs if spec.name not in created]
    click.echo(f"created: {', '.join(created) or 'none'}")
    click.echo(f"already existed: {', '.join(existed) or 'none'}")
    if granted:
        click.echo(f"ACLs: {granted} grants to the services' principals")
    click.echo(format_reports(reports))


@topics.command("list")
@_topic_options(timeout=30.0)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_topics(
    kafka: KafkaConfig, partitions: int, timeout: float, as_json: bool, topic_prefix: str
) -> None:
    """Each project topic, and Kafka's internal ones: partitions, replication factor,
    min.insync.replicas, under-replicated and offline partitions.

    Exits 1 unless every topic exists with the expected settings and all its partitions are
    fully replicated.
    """
    admin = admin_for(kafka)
    try:
        reports = _reports(admin, project_topics(partitions, topic_prefix), _Budget.of(timeout))
    except (KafkaException, NotReadyError) as exc:
        raise _fail(kafka, exc, timeout) from exc
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        click.echo(format_reports(reports))
    if not all(r.ok for r in reports):
        raise SystemExit(1)
