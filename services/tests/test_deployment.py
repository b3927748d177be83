"""The predictor's model follower on the real cluster: roles followed, bad models refused.

Each test has registry topics of its own on the session's shared cluster.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from skops import io as skops_io

from taxi_events import DeploymentDecision
from taxi_kafka import KafkaConfig, ensure_topics, project_topics
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import produce_all, wait_for
from taxi_model import Decider, RegistryRecord, TripDurationModel, read_card
from taxi_model._artifact import content_version
from taxi_services.deployment import Deployment, FollowerError, ModelFollower, ModelPreparer
from taxi_services.registry import ModelRegistry, RegistryTopics, ensure_champion, record_of

pytestmark = pytest.mark.kafka

decider = Decider("test@here")


@attrs.define
class Following:
    registry: ModelRegistry
    follower: ModelFollower
    rejected: list[tuple[str, str]]
    switches: list[tuple[str, str | None]]

    def deployed(self) -> tuple[str, str | None] | None:
        current = self.follower.current
        if current is None:
            return None
        return current.champion.version, current.challenger and current.challenger.version

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}: deployed {self.deployed()}, "
                    f"rejected {self.rejected}"
                )
            time.sleep(0.1)

    def decide(self, version: str, champion: str | None, challenger: str | None) -> None:
        """A decision as any writer may put it there, checked or not."""
        self.registry.decide(
            DeploymentDecision(
                action="promote",
                version=version,
                champion=champion,
                challenger=challenger,
                actor="test@here",
                reason="test",
            )
        )


@pytest.fixture
def registry(kafka_cluster: LocalCluster) -> ModelRegistry:
    prefix = f"deploy-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    return ModelRegistry(
        KafkaConfig(kafka_cluster.bootstrap_servers), RegistryTopics.prefixed(prefix)
    )


@pytest.fixture
def following(registry: ModelRegistry, kafka_cluster: LocalCluster) -> Iterator[Following]:
    rejected: list[tuple[str, str]] = []
    switches: list[tuple[str, str | None]] = []

    def switched(deployment: Deployment) -> None:
        challenger = deployment.challenger
        switches.append((deployment.champion.version, challenger and challenger.version))

    follower = ModelFollower(
        KafkaConfig(kafka_cluster.bootstrap_servers),
        registry.topics,
        on_rejected=lambda version, reason: rejected.append((version, reason)),
        on_switch=switched,
    )
    follower.start()
    yield Following(registry, follower, rejected, switches)
    follower.close()


def test_the_follower_waits_for_a_champion_then_follows_every_decision(
    following, trained_model_path, challenger_model_path
):
    stop = threading.Event()
    threading.Timer(20, stop.set).start()
    champion = ensure_champion(following.registry, trained_model_path, "first")
    assert following.follower.wait_ready(stop) is not None
    assert following.deployed() == (champion, None)

    challenger = record_of(challenger_model_path)
    following.registry.publish(challenger)
    registry = following.registry
    registry.decide(decider.publish(registry.history(), challenger.version, "challenger", "try"))
    following.wait_until(
        "the challenger", lambda: following.deployed() == (champion, challenger.version)
    )
    known = set(registry.raw_records())
    registry.decide(decider.promote(registry.history(), challenger.version, known, "better"))
    following.wait_until(
        "the promotion", lambda: following.deployed() == (challenger.version, None)
    )
    registry.decide(decider.rollback(registry.history(), "worse live"))
    following.wait_until("the rollback", lambda: following.deployed() == (champion, None))
    assert following.switches == [
        (champion, None),
        (champion, challenger.version),
        (challenger.version, None),
        (champion, None),
    ]
    assert following.rejected == []
    stop.set()


def started_follower(
    cluster: LocalCluster,
    registry: ModelRegistry,
    switches: list[Deployment],
    prepare: ModelPreparer | None = None,
) -> ModelFollower:
    """A follower of `registry`'s topics, noting each switch in `switches`."""
    follower = ModelFollower(
        KafkaConfig(cluster.bootstrap_servers),
        registry.topics,
        on_rejected=lambda *_: None,
        on_switch=switches.append,
        prepare=prepare,
    )
    follower.start()
    return follower


def test_a_restarted_follower_starts_on_the_current_champion_only(
    registry, kafka_cluster, trained_model_path, challenger_model_path
):
    """Decisions before it started are history: it loads what the last one names, and never
    switches through the older ones."""
    first = ensure_champion(registry, trained_model_path, "first")
    second = record_of(challenger_model_path)
    registry.publish(second)
    registry.decide(
        decider.promote(registry.history(), second.version, {first, second.version}, "x")
    )
    switches: list[Deployment] = []
    follower = started_follower(kafka_cluster, registry, switches)
    try:
        ready = follower.wait_ready(threading.Event())
    finally:
        follower.close()
    assert ready is not None
    assert [d.champion.version for d in switches] == [second.version]


def test_each_model_is_prepared_once_before_it_predicts(
    registry, kafka_cluster, trained_model_path, challenger_model_path
):
    """`prepare` (compiled trees, in the predictor) makes what the deployment holds, once per
    version: switching back to a model kept in memory does not prepare it again."""
    prepared: dict[str, TripDurationModel] = {}

    def prepare(model: TripDurationModel) -> TripDurationModel:
        assert model.version not in prepared, f"{model.version} prepared twice"
        prepared[model.version] = attrs.evolve(model)  # equal, but another object
        return prepared[model.version]

    first = ensure_champion(registry, trained_model_path, "first")
    second = record_of(challenger_model_path)
    registry.publish(second)
    switches: list[Deployment] = []
    follower = started_follower(kafka_cluster, registry, switches, prepare)
    try:
        assert follower.wait_ready(threading.Event()) is not None
        known = {first, second.version}
        registry.decide(decider.promote(registry.history(), second.version, known, "better"))
        wait_for("the promotion", lambda: len(switches) == 2, 30)
        registry.decide(decider.rollback(registry.history(), "worse live"))
        wait_for("the rollback", lambda: len(switches) == 3, 30)
    finally:
        follower.close()
    assert [d.champion.version for d in switches] == [first, second.version, first]
    assert all(d.champion is prepared[d.champion.version] for d in switches)


class Stranger(BaseEstimator):
    """A type no model of this project holds."""


def needy_pipeline() -> Pipeline:
    """Only trusted scikit-learn types, but it reads a column trip starts do not carry."""
    frame = pd.DataFrame({"weather": [0.0, 1.0, 2.0]})
    return Pipeline(
        [
            ("select", ColumnTransformer([("weather", "passthrough", ["weather"])])),
            ("model", LinearRegression()),
        ]
    ).fit(frame, [300.0, 400.0, 500.0])


def record_with(model_path: Path, artifact: bytes) -> RegistryRecord:
    card = attrs.evolve(read_card(model_path), version=content_version(artifact))
    return RegistryRecord.of(card, artifact)


def test_bad_records_and_decisions_leave_the_running_models_in_place(
    following, kafka_cluster, trained_model_path
):
    stop = threading.Event()
    champion = ensure_champion(following.registry, trained_model_path, "first")
    assert following.follower.wait_ready(stop) is not None
    registry = following.registry
    good = record_of(trained_model_path)

    # Bytes that are no model record at all.
    produce_all(
        kafka_cluster.bootstrap_servers, registry.topics.registry, [(b"c0ffee000000", b"garbage")]
    )
    following.decide("c0ffee000000", "c0ffee000000", None)
    # The model's bytes changed after its sha256 was taken.
    tampered = bytearray(good.artifact)
    tampered[-200] ^= 0xFF
    forged = attrs.evolve(
        good, card=attrs.evolve(good.card, version="badbadbadbad"), artifact=bytes(tampered)
    )
    registry.publish(forged)
    following.decide("badbadbadbad", "badbadbadbad", None)
    # A type that loading does not trust.
    stranger = record_with(trained_model_path, skops_io.dumps(Pipeline([("s", Stranger())])))
    registry.publish(stranger)
    following.decide(stranger.version, stranger.version, None)
    # A version nobody published.
    following.decide("0123456789ab", "0123456789ab", None)
    # A challenger needing features a trip start does not carry.
    needy = record_with(trained_model_path, skops_io.dumps(needy_pipeline()))
    registry.publish(needy)
    following.decide(needy.version, champion, needy.version)

    expected = {
        ("c0ffee000000", "corrupt-record"),
        ("badbadbadbad", "bad-hash"),
        (stranger.version, "unknown-type"),
        ("0123456789ab", "missing"),
        (needy.version, "missing-feature"),
    }
    following.wait_until("every rejection", lambda: set(following.rejected) >= expected)
    assert following.deployed() == (champion, None)
    time.sleep(2)  # a few more rounds of the follower: each is reported once
    assert sorted(following.rejected) == sorted(expected)
    assert following.switches == [(champion, None)]


class FailingAfterTheFirstSwitch(ModelFollower):
    """A real follower whose following breaks once it has deployed its first champion."""

    def _follow(self, roles):
        if self.current is not None:
            raise OSError("disk gone")
        super()._follow(roles)


def test_a_follower_that_fails_stops_the_predictor_rather_than_going_on_unfollowed(
    registry, kafka_cluster, trained_model_path, challenger_model_path
):
    ensure_champion(registry, trained_model_path, "first")
    follower = FailingAfterTheFirstSwitch(
        KafkaConfig(kafka_cluster.bootstrap_servers),
        registry.topics,
        on_rejected=lambda *_: None,
        on_switch=lambda _: None,
    )
    follower.start()
    try:
        assert follower.wait_ready(threading.Event()) is not None
        champion = follower.deployment().champion.version
        challenger = record_of(challenger_model_path)
        registry.publish(challenger)
        registry.decide(
            decider.promote(registry.history(), challenger.version, {challenger.version}, "x")
        )

        def failure() -> FollowerError | None:
            try:
                # Until it fails it serves what it has; it never switched.
                assert follower.deployment().champion.version == champion
            except FollowerError as exc:
                return exc
            return None

        failed = wait_for("the follower's failure to stop the predictor", failure, 30, 0.1)
        assert "the model follower failed" in str(failed)
        assert isinstance(failed.__cause__, OSError)
    finally:
        follower.close()
