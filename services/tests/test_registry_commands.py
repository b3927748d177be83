"""`taxi model ...` and `taxi train --publish`, run as a user would, on the real cluster: each
test in registry topics of its own (--topic-prefix), created with the project's settings."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taxi_events import ModelMetrics, encode
from taxi_kafka import (
    MODEL_DEPLOYMENTS,
    MODEL_METRICS,
    MODEL_REGISTRY,
    KafkaConfig,
    ensure_topics,
    project_topics,
)
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import produce_all, read_all
from taxi_model import Decider, generate_trips, read_card, train_and_save, write_synthetic
from taxi_services.registry import ModelRegistry, RegistryTopics, whoami

SUBCOMMANDS = ("list", "show", "publish", "promote", "rollback", "withdraw")


class Namespace:
    """A test's own registry topics, and the environment that points `taxi` at them."""

    def __init__(self, cluster: LocalCluster, *, topics: bool = True) -> None:
        self.prefix = f"models-{uuid.uuid4().hex[:8]}."
        self.bootstrap_servers = cluster.bootstrap_servers
        self.env = {"KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}
        self.env["TAXI_TOPIC_PREFIX"] = self.prefix
        if topics:
            names = {self.prefix + t for t in (MODEL_REGISTRY, MODEL_DEPLOYMENTS, MODEL_METRICS)}
            specs = [s for s in project_topics(prefix=self.prefix) if s.name in names]
            ensure_topics(cluster.admin(), specs)
        self.registry = ModelRegistry(
            KafkaConfig(cluster.bootstrap_servers),
            RegistryTopics.prefixed(self.prefix),
        )


@pytest.fixture
def space(kafka_cluster: LocalCluster) -> Namespace:
    return Namespace(kafka_cluster)


@pytest.fixture(scope="module")
def second_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model, of other trips: another version."""
    path = tmp_path_factory.mktemp("second") / "taxi_pipeline.skops"
    train_and_save(generate_trips(rows=2000, seed=11), "synthetic rows=2000 seed=11", path)
    return path


def test_help_lists_the_subcommands_and_each_takes_the_kafka_options(taxi):
    code, output, errors = taxi("--help")
    assert code == 0, errors
    assert "model" in output
    code, group_help, errors = taxi("model", "--help")
    assert code == 0, errors
    for name in SUBCOMMANDS:
        assert f"  {name} " in group_help, name
        code, output, errors = taxi("model", name, "--help")
        assert code == 0, errors
        for option in ("--bootstrap-servers", "-X KEY=VALUE", "--topic-prefix"):
            assert option in output, (name, option)


def ok(taxi, space: Namespace, *args: str) -> str:
    """`taxi model ARGS` in the test's topics, which must succeed; its output."""
    code, output, errors = taxi("model", *args, env=space.env)
    assert code == 0, errors
    return output


def refused(taxi, space: Namespace, *args: str) -> str:
    """`taxi model ARGS` in the test's topics, which must fail with exit code 1; its message."""
    code, _output, errors = taxi("model", *args, env=space.env)
    assert code == 1, errors
    return errors


def test_publish_if_vacant_takes_a_free_role_and_nothing_is_written_twice(
    taxi, space, trained_model_path, second_model_path
):
    first = read_card(trained_model_path).version
    second = read_card(second_model_path).version
    assert "the registry is empty" in ok(taxi, space, "list")

    as_champion = ("--as", "champion", "--if-vacant")
    output = ok(taxi, space, "publish", str(trained_model_path), *as_champion)
    assert f"published {first} (" in output
    assert f"{first} is champion now: champion {first}, challenger none" in output

    # Again: nothing is written, no decision is made.
    output = ok(taxi, space, "publish", str(trained_model_path), *as_champion)
    assert f"{first} is in the registry already; left as it is" in output
    assert f"{first} is champion already" in output
    assert len(space.registry.history()) == 1
    assert len(read_all(space.bootstrap_servers, space.prefix + MODEL_REGISTRY)) == 1

    # The champion's role is taken: the second version is only added.
    output = ok(taxi, space, "publish", str(second_model_path), *as_champion)
    assert f"published {second} (" in output
    assert f"{first} is champion already; {second} takes no role (--if-vacant)" in output
    assert len(space.registry.history()) == 1
    assert set(space.registry.raw_records()) == {first, second}

    output = ok(
        taxi, space, "publish", str(second_model_path), "--as", "challenger", "--reason", "try B"
    )
    assert f"{second} is in the registry already; left as it is" in output
    assert f"{second} is challenger now: champion {first}, challenger {second}" in output
    history = space.registry.history()
    assert [(d.action, d.version, d.reason[:18]) for d in history] == [
        ("publish", first, "taxi model publish"),
        ("publish", second, "try B"),
    ]
    assert history[0].reason.startswith(f"taxi model publish {trained_model_path}: held out RMSLE")
    assert {d.actor for d in history} == {whoami()}

    assert (
        "--if-vacant needs --as"
        in taxi("model", "publish", str(trained_model_path), "--if-vacant", env=space.env)[2]
    )


def test_promote_rollback_and_withdraw(taxi, space, trained_model_path, second_model_path):
    first = read_card(trained_model_path).version
    second = read_card(second_model_path).version
    ok(taxi, space, "publish", str(trained_model_path), "--as", "champion")
    ok(taxi, space, "publish", str(second_model_path), "--as", "challenger")

    errors = refused(taxi, space, "promote", "c0ffee00c0ff")
    assert "there is no version c0ffee00c0ff in the registry" in errors
    assert "taxi model list" in errors

    # By the start of its version, as git takes a commit's.
    output = ok(taxi, space, "promote", second[:6])
    assert f"{second} is champion now (was {first}): champion {second}, challenger none" in output
    assert "there is no challenger to withdraw" in refused(taxi, space, "withdraw")

    output = ok(taxi, space, "rollback", "--reason", "worse live")
    assert f"rolled back from {second} to {first}: champion {first}, challenger none" in output
    assert "no earlier champion to roll back to" in refused(taxi, space, "rollback")

    ok(taxi, space, "publish", str(second_model_path), "--as", "challenger")
    output = ok(taxi, space, "withdraw")
    assert f"withdrew challenger {second}: champion {first}, challenger none" in output

    history = space.registry.history()
    assert [(d.action, d.version, d.champion, d.challenger) for d in history] == [
        ("publish", first, first, None),
        ("publish", second, first, second),
        ("promote", second, second, None),
        ("rollback", first, first, None),
        ("publish", second, first, second),
        ("withdraw", second, first, None),
    ]
    assert "taxi model promote" in history[2].reason
    assert history[3].reason == "worse live"
    assert "taxi model withdraw" in history[5].reason


def test_list_and_show(taxi, space, trained_model_path, second_model_path):
    first = read_card(trained_model_path).version
    second = read_card(second_model_path).version
    ok(taxi, space, "publish", str(trained_model_path), "--as", "champion")
    ok(taxi, space, "publish", str(second_model_path), "--as", "challenger")
    ok(taxi, space, "promote", second)
    ok(taxi, space, "rollback")
    ok(taxi, space, "publish", str(second_model_path), "--as", "challenger")

    listed = json.loads(ok(taxi, space, "list", "--json"))
    assert (listed["champion"], listed["challenger"]) == (first, second)
    by_version = {v["version"]: v for v in listed["versions"]}
    assert by_version[first]["role"] == "champion"
    assert by_version[second]["role"] == "challenger"
    card = read_card(trained_model_path)
    assert by_version[first]["holdout"]["rmsle"] == pytest.approx(card.holdout.rmsle)
    assert by_version[first]["data"]["split"] == "time"
    assert by_version[first]["data"]["cutoff"] == card.data.cutoff
    assert by_version[first]["size_bytes"] > trained_model_path.stat().st_size
    assert by_version[first]["created_at"] == card.created_at
    assert by_version[first]["live"] == []

    output = ok(taxi, space, "list")
    assert f"champion {first}, challenger {second}" in output
    assert f"{first}  champion    created {card.created_at}" in output
    assert f"held out: RMSLE {card.holdout.rmsle:.4f}" in output
    assert f"picked up from {card.data.cutoff} on (time split)" in output
    assert "live:     not known" in output

    output = ok(taxi, space, "show", first)
    record = space.registry.records()[first]
    assert f"sha256      {record.sha256}" in output
    assert "role        champion" in output
    assert f"size        {len(record.encode()):,} bytes" in output
    assert f"trained on  {card.data.description}" in output
    decisions = output.split("decisions:\n")[1].splitlines()
    # Its publication, the promotion that ended its reign and the rollback that brought it back.
    assert [line.split()[2] for line in decisions] == ["publish", "promote", "rollback"]

    shown = json.loads(ok(taxi, space, "show", second, "--json"))
    assert shown["role"] == "challenger"
    assert shown["card"]["version"] == second
    assert shown["sha256"] == space.registry.records()[second].sha256
    assert [d["action"] for d in shown["decisions"]] == [
        "publish",
        "promote",
        "rollback",
        "publish",
    ]
    assert "there is no version c0ffee in the registry" in refused(taxi, space, "show", "c0ffee")

    # An automatic decision shows the figures it was made on.
    evidence = {"trips": 4_000.0, "champion_rmsle": 0.5, "challenger_rmsle": 0.41}
    decider = Decider("auto-promotion@test")
    space.registry.decide(decider.withdraw(space.registry.history(), "lost", evidence=evidence))
    last = ok(taxi, space, "show", second).splitlines()[-1]
    assert "withdraw" in last
    assert last.endswith("[evidence: challenger_rmsle 0.41, champion_rmsle 0.5, trips 4000]")
    shown = json.loads(ok(taxi, space, "show", second, "--json"))
    assert shown["decisions"][-1]["evidence"] == evidence
    assert shown["decisions"][0]["evidence"] == {}


def cumulative(
    version: str, count: int, rmsle: float, at: datetime, **fields: object
) -> ModelMetrics:
    return ModelMetrics(
        source="train",
        scope="cumulative",
        window_start=None,
        window_end=None,
        count=count,
        rmsle=rmsle,
        mae=300.0,
        median_ape=0.2,
        within_30=0.7,
        unmatched=0,
        model_version=version,
        produced_at=at,
        **fields,
    )


def test_list_shows_the_latest_live_figures_of_each_version_and_role(
    taxi, space, trained_model_path, second_model_path
):
    first = read_card(trained_model_path).version
    second = read_card(second_model_path).version
    for path in (trained_model_path, second_model_path):
        code, _output, errors = taxi("model", "publish", str(path), env=space.env)
        assert code == 0, errors
    start = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    published = [
        cumulative(first, 100, 0.5, start),
        cumulative(first, 2000, 0.4321, start + timedelta(minutes=1)),
        cumulative(first, 1500, 0.41, start + timedelta(seconds=30)),  # older, written later
        cumulative(first, 300, 0.45, start, role="champion", challenger_version=second),
        cumulative(second, 300, 0.39, start, role="challenger", challenger_version=second),
        # A window's figures are not the live ones.
        ModelMetrics(
            source="train",
            scope="window",
            window_start=start,
            window_end=start + timedelta(seconds=10),
            count=7,
            rmsle=0.9,
            mae=1.0,
            median_ape=0.1,
            within_30=0.5,
            unmatched=0,
            model_version=first,
            produced_at=start + timedelta(minutes=2),
        ),
    ]
    produce_all(
        space.bootstrap_servers,
        space.prefix + MODEL_METRICS,
        [(b"train", encode(m)) for m in published],
    )

    code, output, errors = taxi("model", "list", env=space.env)
    assert code == 0, errors
    assert (
        "train as champion: RMSLE 0.4321, MAE 300 s, within ±30% 70.0% over 2,000 trips" in output
    )
    assert f"train as champion (on the trips {second} shadowed): RMSLE 0.4500" in output
    assert f"train as challenger (on the trips {second} shadowed): RMSLE 0.3900" in output
    assert "0.4100" not in output
    assert "0.9000" not in output

    code, output, errors = taxi("model", "list", "--json", env=space.env)
    assert code == 0, errors
    live = {v["version"]: v["live"] for v in json.loads(output)["versions"]}
    # The figures on every trip first, then those on the trips a challenger shadowed.
    assert [(m["role"], m["count"], m["rmsle"]) for m in live[first]] == [
        ("champion", 2000, 0.4321),
        ("champion", 300, 0.45),
    ]
    assert [(m["role"], m["challenger_version"]) for m in live[second]] == [("challenger", second)]


@pytest.mark.usefixtures("in_tmp")
def test_train_publish_trains_then_publishes(taxi, space, tmp_path):
    write_synthetic(tmp_path / "synthetic", rows=3000, seed=3, test_rows=200)
    data = str(tmp_path / "synthetic" / "train.csv")
    code, _output, errors = taxi("train", "--data", data, "--as", "champion", env=space.env)
    assert code == 2
    assert "--as needs --publish" in errors

    code, output, errors = taxi(
        "train", "--data", data, "--publish", "--as", "champion", env=space.env
    )
    assert code == 0, errors
    version = read_card(Path("models/taxi_pipeline.skops")).version
    assert f"model {version} trained on" in output
    assert f"published {version} (" in output
    assert f"{version} is champion now" in output
    (decision,) = space.registry.history()
    assert decision.champion == version
    assert decision.reason.startswith(f"taxi train --data {data}: held out RMSLE")


def test_publishing_a_model_that_does_not_load_is_refused(taxi, space, in_tmp):
    code, _output, errors = taxi("model", "publish", "models/none.skops", env=space.env)
    assert code == 1
    assert "no model at models/none.skops" in errors
    broken = in_tmp / "broken.skops"
    broken.write_bytes(b"not a model")
    code, _output, errors = taxi("model", "publish", str(broken), env=space.env)
    assert code == 1
    assert "card" in errors
    assert space.registry.raw_records() == {}


def test_without_the_topics_each_command_says_how_to_create_them(
    taxi, kafka_cluster, trained_model_path
):
    env = Namespace(kafka_cluster, topics=False).env
    for args in (
        ("list",),
        ("show", "c0ffee"),
        ("publish", str(trained_model_path)),
        ("promote", "c0ffee"),
        ("rollback",),
        ("withdraw",),
    ):
        code, _output, errors = taxi("model", *args, env=env)
        assert code == 1, args
        assert "does not exist: create the topics with `taxi topics ensure`" in errors, args
