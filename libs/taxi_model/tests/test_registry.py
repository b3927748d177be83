"""Registry records and deployment decisions: pure, no Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import attrs
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from skops import io as skops_io

from taxi_events import DeploymentDecision
from taxi_events.testing import trip_started
from taxi_model import (
    Decider,
    DeploymentError,
    ModelLoadError,
    RegistryRecord,
    Roles,
    champion_lineage,
    current_roles,
    load_model,
    on_probation,
    read_card,
    roles_since,
)
from taxi_model._artifact import card_to_json, content_version
from taxi_model._registry import MAGIC
from taxi_model._workflow import SavedModel


@pytest.fixture(scope="module")
def record(saved_model: SavedModel) -> RegistryRecord:
    return RegistryRecord.of(read_card(saved_model.model_path), saved_model.model_path.read_bytes())


def rejection(value: bytes | None, key: str) -> str:
    with pytest.raises(ModelLoadError) as caught:
        RegistryRecord.decode(value, key).load()
    return caught.value.reason


def test_a_record_round_trips_and_loads_the_same_model(record, saved_model):
    value = record.encode()
    assert value.startswith(MAGIC)
    decoded = RegistryRecord.decode(value, record.version)
    assert decoded == record
    trips = [trip_started(f"id{i}", pickup_latitude=40.70 + i / 100) for i in range(10)]
    from_file = load_model(saved_model.model_path).predict(trips)
    assert np.array_equal(decoded.load().predict(trips), from_file)
    assert decoded.load().version == record.version


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not a model",
        MAGIC,
        MAGIC + b"\x00\x00\x10\x00{}",
        MAGIC + b"\x00\x00\x00\x02{}",
    ],
)
def test_bytes_that_are_no_model_record_are_corrupt(value):
    with pytest.raises(ModelLoadError) as caught:
        RegistryRecord.decode(value, "abc")
    assert caught.value.reason == "corrupt-record"


def test_a_record_stored_under_another_version_is_corrupt(record):
    assert rejection(record.encode(), "0123456789ab") == "corrupt-record"


def test_an_unreadable_card_is_a_corrupt_card(record):
    older = attrs.evolve(record, card=attrs.evolve(record.card, format=2))
    assert rejection(older.encode(), record.version) == "corrupt-card"
    card = card_to_json(record.card)
    del card["holdout"]
    header = json.dumps({"card": card, "sha256": record.sha256}).encode()
    value = MAGIC + len(header).to_bytes(4, "big") + header + record.artifact
    assert rejection(value, record.version) == "corrupt-card"


def test_an_artifact_changed_in_transit_has_a_bad_hash(record):
    value = bytearray(record.encode())
    value[-100] ^= 0xFF
    assert rejection(bytes(value), record.version) == "bad-hash"


def test_a_record_whose_sha256_names_other_bytes_has_a_bad_hash(record):
    """The card's version is only 12 hex digits of the hash; the record's full sha256 counts."""
    forged = attrs.evolve(record, sha256=record.sha256[:12] + "0" * 52)
    assert rejection(forged.encode(), record.version) == "bad-hash"


def test_a_model_from_another_scikit_learn_is_refused_before_loading(record):
    libraries = {**record.card.libraries, "scikit-learn": "0.24.2"}
    older = attrs.evolve(record, card=attrs.evolve(record.card, libraries=libraries))
    assert rejection(older.encode(), record.version) == "library-version"


def with_artifact(record: RegistryRecord, artifact: bytes) -> RegistryRecord:
    card = attrs.evolve(record.card, version=content_version(artifact))
    return RegistryRecord.of(card, artifact)


class Stranger(BaseEstimator):
    """A type no model of this project holds."""


def test_an_unknown_type_is_refused(record):
    stranger = with_artifact(record, skops_io.dumps(Pipeline([("stranger", Stranger())])))
    with pytest.raises(ModelLoadError, match="Stranger") as caught:
        RegistryRecord.decode(stranger.encode(), stranger.version).load()
    assert caught.value.reason == "unknown-type"


def test_a_model_needing_what_a_trip_start_lacks_is_refused(record):
    """Only trusted scikit-learn types, but it reads a column trips do not carry."""
    frame = pd.DataFrame({"weather": [0.0, 1.0, 2.0], "vendor_id": [1, 2, 1]})
    pipeline = Pipeline(
        [
            ("select", ColumnTransformer([("weather", "passthrough", ["weather"])])),
            ("model", LinearRegression()),
        ]
    ).fit(frame, [300.0, 400.0, 500.0])
    needy = with_artifact(record, skops_io.dumps(pipeline))
    with pytest.raises(ModelLoadError, match="weather") as caught:
        RegistryRecord.decode(needy.encode(), needy.version).load()
    assert caught.value.reason == "missing-feature"


# -- decisions ------------------------------------------------------------------------------

AT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
decider = Decider("ana@laptop", AT)


def test_the_first_champion_then_a_challenger_then_its_promotion():
    history: list[DeploymentDecision] = []
    assert current_roles(history) == Roles()
    history.append(decider.publish(history, "a", "champion", "first model"))
    history.append(decider.publish(history, "b", "challenger", "other settings"))
    assert current_roles(history) == Roles("a", "b")
    history.append(decider.promote(history, "b", {"a", "b"}, "better on 5,000 trips"))
    assert current_roles(history) == Roles("b", None)
    last = history[-1]
    assert (last.action, last.version, last.actor, last.reason, last.decided_at) == (
        "promote",
        "b",
        "ana@laptop",
        "better on 5,000 trips",
        AT,
    )
    history.append(decider.rollback(history, "worse live"))
    assert current_roles(history) == Roles("a", None)
    with pytest.raises(DeploymentError, match="no earlier champion"):
        decider.rollback(history, "again")


def test_refused_decisions_say_why():
    history = [decider.publish([], "a", "champion", "first")]
    with pytest.raises(DeploymentError, match=r"no version zzz in the registry.*taxi model list"):
        decider.promote(history, "zzz", {"a"}, "typo")
    with pytest.raises(DeploymentError, match="champion already"):
        decider.promote(history, "a", {"a"}, "again")
    with pytest.raises(DeploymentError, match="cannot challenge itself"):
        decider.publish(history, "a", "challenger", "self")
    with pytest.raises(DeploymentError, match="no challenger"):
        decider.withdraw(history, "nothing")
    with pytest.raises(DeploymentError, match="no champion yet"):
        decider.rollback([], "nothing")


def test_a_promotion_on_probation_keeps_the_champion_it_replaced_as_challenger():
    history = [decider.publish([], "a", "champion", "first")]
    history.append(decider.publish(history, "b", "challenger", "retrained"))
    assert not on_probation(history)
    evidence = {"champion_rmsle": 0.45, "challenger_rmsle": 0.4, "trips": 1000}
    history.append(
        decider.promote(
            history,
            "b",
            {"a", "b"},
            "better live",
            keep_previous_as_challenger=True,
            evidence=evidence,
        )
    )
    assert current_roles(history) == Roles("b", "a")
    assert history[-1].evidence == {
        "champion_rmsle": 0.45,
        "challenger_rmsle": 0.4,
        "trips": 1000.0,
    }
    assert (on_probation(history), roles_since(history)) == (True, 2)
    # Publishing the challenger again changes no role: the probation goes on.
    history.append(decider.publish(history, "a", "challenger", "again"))
    assert (on_probation(history), roles_since(history)) == (True, 2)
    # A rollback brings a back, and b shadows nothing: the challenger was a itself.
    rolled_back = decider.rollback(history, "worse", evidence={"trips": 1000})
    assert (rolled_back.champion, rolled_back.challenger, rolled_back.evidence) == (
        "a",
        None,
        {"trips": 1000.0},
    )
    # Passing it, the challenger is withdrawn.
    passed = decider.withdraw(history, "held", evidence={"trips": 1000})
    assert (passed.champion, passed.challenger, passed.evidence) == ("b", None, {"trips": 1000.0})
    assert not on_probation([*history, passed])
    # A person's decisions carry no evidence.
    assert decider.promote(history, "a", {"a", "b"}, "mine").evidence == {}


def test_a_promotion_keeping_the_champion_with_no_champion_keeps_none():
    history = [decider.publish([], "a", "challenger", "no champion yet")]
    promoted = decider.promote(history, "a", {"a"}, "r", keep_previous_as_challenger=True)
    assert (promoted.champion, promoted.challenger) == ("a", None)
    assert not on_probation([*history, promoted])


VERSIONS = st.sampled_from("abcde")
steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), VERSIONS, st.sampled_from(["champion", "challenger"])),
        st.tuples(st.just("promote"), VERSIONS, st.none()),
        st.tuples(st.just("promote"), VERSIONS, st.just("keep")),
        st.tuples(st.just("rollback"), st.none(), st.none()),
        st.tuples(st.just("withdraw"), st.none(), st.none()),
    ),
    max_size=25,
)


@given(steps)
def test_roles_stay_consistent_and_rollback_undoes_promotions(plan):
    history: list[DeploymentDecision] = []
    champions_before: list[str | None] = []
    for action, version, role in plan:
        before = current_roles(history)
        try:
            if action == "publish":
                decision = decider.publish(history, version, role, "r")
            elif action == "promote":
                keep = role == "keep"
                decision = decider.promote(
                    history, version, set("abcde"), "r", keep_previous_as_challenger=keep
                )
            elif action == "rollback":
                decision = decider.rollback(history, "r")
            else:
                decision = decider.withdraw(history, "r")
        except DeploymentError:
            continue
        history.append(decision)
        roles = current_roles(history)
        assert roles.champion is None or roles.champion != roles.challenger
        # The roles hold from roles_since on, and changed just before it.
        start = roles_since(history)
        assert all(current_roles(history[: i + 1]) == roles for i in range(start, len(history)))
        assert start == 0 or current_roles(history[:start]) != roles
        if action == "promote" and role == "keep" and before.champion is not None:
            assert roles == Roles(version, before.champion)
            assert on_probation(history)
        elif roles != before:
            assert not on_probation(history)
        lineage = champion_lineage(history)
        assert (lineage[-1] if lineage else None) == roles.champion
        if action == "rollback":
            # Back to the champion that the last change replaced.
            assert roles.champion == champions_before.pop()
        elif roles.champion != before.champion:
            champions_before.append(before.champion)
