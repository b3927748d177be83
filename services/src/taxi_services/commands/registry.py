"""`taxi model list|show|publish|promote|rollback|withdraw`: the model registry on Kafka.

The work is taxi_services.registry's (and taxi_model's); this module reads the options and
prints.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from taxi_events import DeploymentDecision, ModelMetrics, Role
from taxi_kafka import MODEL_METRICS, KafkaConfig
from taxi_model import ModelCard, ModelLoadError, QualityMetrics, current_roles
from taxi_services import registry as reg
from taxi_services.commands._admin_kafka import admin_kafka_options
from taxi_services.options import topic_prefix_option

F = TypeVar("F", bound=Callable[..., Any])

ROLES: tuple[Role, ...] = ("champion", "challenger")
NONE = "none"


def registry_options(command: F) -> F:
    """The Kafka options and --topic-prefix: the command receives `kafka` and `topic_prefix`."""
    command = topic_prefix_option()(command)
    return admin_kafka_options(command)


def open_registry(kafka: KafkaConfig, topic_prefix: str) -> reg.ModelRegistry:
    return reg.ModelRegistry(kafka, reg.RegistryTopics.prefixed(topic_prefix))


def role_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--as",
        "role",
        type=click.Choice(ROLES),
        default=None,
        help=help_text,
    )


def reason_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--reason",
        default=None,
        metavar="TEXT",
        help=f"Why, recorded with the decision [default: {default}].",
    )


@contextlib.contextmanager
def registry_errors() -> Iterator[None]:
    """RegistryError and ModelLoadError become a clean message and exit code 1."""
    try:
        yield
    except (reg.RegistryError, ModelLoadError) as exc:
        raise click.ClickException(str(exc)) from exc


# -- text ------------------------------------------------------------------------------------


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def held_out_text(card: ModelCard) -> str:
    """The card's held-out figures, on which trips."""
    data = card.data
    trips = (
        f"the {data.holdout_rows:,} trips picked up from {data.cutoff} on (time split)"
        if data.cutoff
        else f"a random fifth, {data.holdout_rows:,} trips (random split)"
    )
    return f"{quality_text(card.holdout)} on {trips}"


def quality_text(m: QualityMetrics | ModelMetrics) -> str:
    if m.count == 0 or m.rmsle is None:
        return "no trips scored yet"
    parts = [f"RMSLE {m.rmsle:.4f}"]
    if m.mae is not None:
        parts.append(f"MAE {m.mae:.0f} s")
    if m.within_30 is not None:
        parts.append(f"within ±30% {m.within_30:.1%}")
    return ", ".join(parts)


def live_order(item: tuple[reg.LiveKey, ModelMetrics]) -> tuple[str, str, str]:
    """Live figures by source and role, those on every trip before those on shadowed ones."""
    source, _version, role, challenger = item[0]
    return (source, role, challenger or "")


def live_text(metrics: ModelMetrics) -> str:
    on = (
        f" (on the trips {metrics.challenger_version} shadowed)"
        if metrics.challenger_version
        else ""
    )
    # Test rows have no duration: their trip ends are estimates.
    estimated = " (against estimated trip ends)" if metrics.source == "test" else ""
    return (
        f"{metrics.source} as {metrics.role}{on}: {quality_text(metrics)} over "
        f"{metrics.count:,} trips{estimated}, as of {metrics.produced_at:%Y-%m-%d %H:%M:%S} UTC"
    )


def decision_text(decision: DeploymentDecision) -> str:
    """One line; an automatic decision's evidence (its figures) closes it."""
    evidence = ", ".join(f"{name} {value:g}" for name, value in sorted(decision.evidence.items()))
    return (
        f"{decision.decided_at:%Y-%m-%d %H:%M:%S} {decision.action:<8} {decision.version}: "
        f"champion {decision.champion or NONE}, challenger {decision.challenger or NONE}; "
        f"by {decision.actor}: {decision.reason}" + (f" [evidence: {evidence}]" if evidence else "")
    )


def roles_text(champion: str | None, challenger: str | None) -> str:
    return f"champion {champion or NONE}, challenger {challenger or NONE}"


def version_dict(view: reg.VersionView, live: Mapping[reg.LiveKey, ModelMetrics]) -> dict[str, Any]:
    """One version, for --json."""
    out: dict[str, Any] = {
        "version": view.version,
        "role": view.role,
        "size_bytes": view.size,
    }
    if view.record is None:
        out["error"] = {
            "reason": view.error.reason if view.error else None,
            "message": str(view.error),
        }
        return out
    card = view.record.card
    out |= {
        "sha256": view.record.sha256,
        "created_at": card.created_at,
        "data": attrs.asdict(card.data),
        "holdout": card.holdout.to_dict(),
        "live": [
            {
                "source": m.source,
                "role": m.role,
                "challenger_version": m.challenger_version,
                "count": m.count,
                "rmsle": m.rmsle,
                "mae": m.mae,
                "median_ape": m.median_ape,
                "within_30": m.within_30,
                "as_of": m.produced_at.isoformat(),
            }
            for key, m in sorted(live.items(), key=live_order)
            if key[1] == view.version
        ],
    }
    return out


def decision_dict(decision: DeploymentDecision) -> dict[str, Any]:
    return {
        "action": decision.action,
        "version": decision.version,
        "champion": decision.champion,
        "challenger": decision.challenger,
        "actor": decision.actor,
        "reason": decision.reason,
        "evidence": decision.evidence,
        "decided_at": decision.decided_at.isoformat(),
    }


# -- the commands ----------------------------------------------------------------------------


@click.group()
def model() -> None:
    """The model registry on Kafka: each version, and which one is champion (it predicts) and
    challenger (it predicts the same trips in the shadow, for comparison).

    Versions live on the compacted topic model_registry (a version's card, sha256 and file);
    every change of role is a decision on model_deployments, with who made it and why. The
    predictors follow both.
    """


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for machines.")
@registry_options
def list_versions(*, kafka: KafkaConfig, topic_prefix: str, as_json: bool) -> None:
    """Every version, its role and its figures.

    For each version, newest first: its role, its held-out figures (and on which trips: the
    split), its size and when it was trained; and its live figures when the aggregator has
    published some lately (the latest cumulative ones per source and role, read from the end
    of model_metrics).
    """
    with registry_errors():
        view = reg.registry_view(open_registry(kafka, topic_prefix))
    live = reg.live_metrics(kafka, topic_prefix + MODEL_METRICS)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "champion": view.roles.champion,
                    "challenger": view.roles.challenger,
                    "versions": [version_dict(v, live) for v in view.versions],
                },
                indent=2,
            )
        )
        return
    if not view.versions:
        click.echo(
            "the registry is empty: `taxi model publish PATH --as champion` adds the first "
            "model (`taxi up` publishes the one it trains)"
        )
        return
    click.echo(roles_text(view.roles.champion, view.roles.challenger))
    for v in view.versions:
        click.echo("")
        if v.record is None:
            click.echo(f"{v.version}  {megabytes(v.size)}  unreadable: {v.error}")
            continue
        card = v.record.card
        role = v.role or "-"
        click.echo(f"{v.version}  {role:<10}  created {card.created_at}  {megabytes(v.size)}")
        click.echo(f"  held out: {held_out_text(card)}")
        lines = [
            live_text(m) for key, m in sorted(live.items(), key=live_order) if key[1] == v.version
        ]
        for n, line in enumerate(lines or ["not known (no cumulative figures of it lately)"]):
            click.echo(f"  {'live:' if n == 0 else '':<9} {line}")


@model.command()
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for machines.")
@registry_options
def show(*, kafka: KafkaConfig, topic_prefix: str, version: str, as_json: bool) -> None:
    """One version in full, with the decisions about it.

    VERSION may be the start of one. Shows its card (training data, held-out figures,
    features, library versions), sha256, size, role, and every decision that acted on it or
    changed its role, oldest first.
    """
    with registry_errors():
        view = reg.registry_view(open_registry(kafka, topic_prefix)).get(version)
    if as_json:
        out = version_dict(view, {})
        del out["live"]
        if view.record is not None:
            out["card"] = json.loads(json.dumps(attrs.asdict(view.record.card)))
        out["decisions"] = [decision_dict(d) for d in view.decisions]
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"version     {view.version}")
    click.echo(f"role        {view.role or NONE}")
    click.echo(f"size        {view.size:,} bytes ({megabytes(view.size)})")
    if view.record is None:
        click.echo(f"unreadable  {view.error}")
    else:
        card = view.record.card
        data = card.data
        click.echo(f"sha256      {view.record.sha256}")
        click.echo(f"created     {card.created_at}")
        click.echo(
            f"trained on  {data.description}: {data.train_rows:,} of {data.rows:,} trips"
            + (f" (data sha256 {data.sha256[:12]})" if data.sha256 else "")
        )
        click.echo(f"held out    {held_out_text(card)}")
        click.echo(
            f"training    {card.boosting_rounds} boosting rounds in {card.training_seconds:.1f} s"
        )
        click.echo(f"features    {', '.join(card.features)}")
        click.echo("libraries   " + ", ".join(f"{name} {v}" for name, v in card.libraries.items()))
    click.echo("decisions:" if view.decisions else "decisions:  none")
    for decision in view.decisions:
        click.echo(f"  {decision_text(decision)}")


@model.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@role_option("Give it a role too (none by default: it is only added).")
@click.option(
    "--if-vacant",
    is_flag=True,
    help="Take the role only if no version holds it (a second run changes nothing).",
)
@reason_option("the held-out figures")
@registry_options
def publish(
    *,
    kafka: KafkaConfig,
    topic_prefix: str,
    path: Path,
    role: Role | None,
    if_vacant: bool,
    reason: str | None,
) -> None:
    """Add a model file to the registry, optionally as champion or challenger.

    PATH is a model file `taxi train` wrote (its card is the .json beside it). It is checked
    as the predictors will check it first. A version the registry holds already is not written
    again.
    """
    if if_vacant and role is None:
        raise click.UsageError("--if-vacant needs --as champion or --as challenger.")
    publish_and_report(
        open_registry(kafka, topic_prefix), path, role, if_vacant=if_vacant, reason=reason
    )


def publish_and_report(
    registry: reg.ModelRegistry,
    path: Path,
    role: Role | None,
    *,
    if_vacant: bool = False,
    reason: str | None = None,
    how: str | None = None,
) -> reg.Published:
    """Publish the model at `path` (see `publish`) and say what happened. The reason defaults
    to `how` (the command run) and the model's held-out figures."""
    with registry_errors():
        record = reg.record_of(path)
        how = how or f"taxi model publish {path}"
        reason = reason or f"{how}: held out {quality_text(record.card.holdout)}"
        done = reg.publish_model(registry, record, role, if_vacant=if_vacant, reason=reason)
    size = len(record.artifact)
    if done.written:
        click.echo(f"published {done.version} ({megabytes(size)}) to {registry.topics.registry}")
    else:
        click.echo(f"{done.version} is in the registry already; left as it is")
    if done.decision is not None:
        click.echo(
            f"{done.version} is {role} now: "
            + roles_text(done.decision.champion, done.decision.challenger)
        )
    elif role is not None and done.holder == done.version:
        click.echo(f"{done.version} is {role} already")
    elif role is not None:
        click.echo(f"{done.holder} is {role} already; {done.version} takes no role (--if-vacant)")
    return done


@model.command()
@click.argument("version")
@reason_option("promoted by hand")
@registry_options
def promote(*, kafka: KafkaConfig, topic_prefix: str, version: str, reason: str | None) -> None:
    """Make a version champion.

    VERSION (or the one version it is the start of) must be in the registry. If it was the
    challenger, there is none after. `taxi model rollback` brings back the champion before it.
    """
    registry = open_registry(kafka, topic_prefix)
    with registry_errors():
        before = current_roles(registry.history())
        decision = reg.promote(
            registry, version, reason=reason or "promoted by hand (taxi model promote)"
        )
    click.echo(
        f"{decision.version} is champion now (was {before.champion or NONE}): "
        + roles_text(decision.champion, decision.challenger)
    )


@model.command()
@reason_option("rolled back by hand")
@registry_options
def rollback(*, kafka: KafkaConfig, topic_prefix: str, reason: str | None) -> None:
    """Bring back the previous champion.

    Repeat to step further back through the champions. The challenger stays.
    """
    registry = open_registry(kafka, topic_prefix)
    with registry_errors():
        before = current_roles(registry.history())
        decision = reg.rollback(
            registry, reason=reason or "rolled back by hand (taxi model rollback)"
        )
    click.echo(
        f"rolled back from {before.champion} to {decision.version}: "
        + roles_text(decision.champion, decision.challenger)
    )


@model.command()
@reason_option("withdrawn by hand")
@registry_options
def withdraw(*, kafka: KafkaConfig, topic_prefix: str, reason: str | None) -> None:
    """Stop shadowing the challenger.

    The champion then predicts alone. The version stays in the registry: `taxi model publish
    PATH --as challenger` or `taxi model promote` can bring it back.
    """
    registry = open_registry(kafka, topic_prefix)
    with registry_errors():
        decision = reg.withdraw(
            registry, reason=reason or "withdrawn by hand (taxi model withdraw)"
        )
    click.echo(
        f"withdrew challenger {decision.version}: "
        + roles_text(decision.champion, decision.challenger)
    )
