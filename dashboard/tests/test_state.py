"""The dashboard's state from raw records: decode, file, count, skip what is malformed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from taxi_dashboard.deployments import Roles
from taxi_dashboard.state import RATE_WINDOW_S, TOPICS, DashboardState, RawRecord
from taxi_events import DeadLetter, DeploymentDecision, ModelEvent, ModelMetrics, encode
from taxi_events.testing import prediction, trip_finished, trip_started

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def record(topic: str, value: bytes | None, *, age_s: float = 2.0, headers=None) -> RawRecord:
    return RawRecord(topic, value, NOW_MS - int(age_s * 1000), headers)


def cumulative(**fields) -> ModelMetrics:
    values = {
        "source": "train",
        "scope": "cumulative",
        "window_start": None,
        "window_end": None,
        "count": 3,
        "rmsle": 0.3,
        "mae": 50.0,
        "median_ape": 0.1,
        "within_30": 0.9,
        "unmatched": 0,
        "model_version": "m1",
    }
    return ModelMetrics(**{**values, **fields})


def decision(**fields) -> DeploymentDecision:
    values = {
        "action": "publish",
        "version": "m2",
        "champion": "m1",
        "challenger": "m2",
        "actor": "ana@host",
        "reason": "retrained on March",
        "decided_at": NOW,
    }
    return DeploymentDecision(**{**values, **fields})


def drift(version: str, kind: str = "concept-drift") -> ModelEvent:
    return ModelEvent(kind=kind, model_version=version, source="train", detail=f"{kind} seen")


def test_each_topic_is_filed_where_it_belongs():
    state = DashboardState()
    letter = DeadLetter(
        source_topic="new_trips", partition=1, offset=7, service="predictor", reason="bad JSON"
    )
    published = decision()
    drifted = drift("m1")
    records = [
        record("new_trips", encode(trip_started("t1"))),
        record("ml_predictions", encode(prediction("t1", predicted_duration=300.0))),
        record("finished_trips", encode(trip_finished("t1", trip_duration=330.0))),
        record("model_metrics", encode(cumulative())),
        record("model_deployments", encode(published)),
        record("model_events", encode(drifted)),
        record("dead_letters", b"\xff not an event", headers=letter.to_headers()),
    ]
    assert all(state.ingest(r, NOW) for r in records)
    snapshot = state.snapshot(NOW)
    [trip] = snapshot.trips
    assert (trip.trip_id, trip.predicted_duration, trip.actual_duration) == ("t1", 300, 330)
    assert snapshot.cumulative["train", "champion", "m1", None].rmsle == 0.3
    assert snapshot.model_version == "m1"
    assert snapshot.roles == Roles("m1", "m2")
    assert snapshot.decisions == (published,)
    assert snapshot.model_events == (drifted,)
    assert [f.latest for f in snapshot.champion_drift] == [drifted]
    assert snapshot.dead_letters == (letter,)
    assert snapshot.dead_letter_count == 1
    assert snapshot.consumed == dict.fromkeys(TOPICS, 1)
    assert snapshot.malformed == {}
    assert snapshot.last_record_at == NOW
    assert snapshot.has_data
    assert snapshot.records_read == 7
    assert snapshot.buffer_sizes["decisions"] == 1
    assert snapshot.buffer_sizes["model_events"] == 1


def test_the_drift_shown_as_current_is_the_champions_only():
    state = DashboardState()
    for event in (drift("m1"), drift("m2", "data-drift")):
        state.ingest(record("model_events", encode(event)), NOW)
    state.ingest(record("model_deployments", encode(decision(champion="m1"))), NOW)
    assert [f.latest.model_version for f in state.snapshot(NOW).champion_drift] == ["m1"]
    promoted = decision(action="promote", version="m2", champion="m2", challenger=None)
    state.ingest(record("model_deployments", encode(promoted)), NOW)
    snapshot = state.snapshot(NOW)
    assert [f.latest.kind for f in snapshot.champion_drift] == ["data-drift"]
    # The drift on the model no longer champion stays in the history.
    assert [e.model_version for e in snapshot.model_events] == ["m2", "m1"]


def test_the_champion_is_the_last_decisions_not_the_newest_figures():
    state = DashboardState()
    for version in ("m1", "m2"):
        state.ingest(record("model_metrics", encode(cumulative(model_version=version))), NOW)
    state.ingest(record("model_deployments", encode(decision(champion="m1"))), NOW)
    state.ingest(
        record("model_deployments", encode(decision(action="withdraw", challenger=None))), NOW
    )
    snapshot = state.snapshot(NOW)
    assert snapshot.model_version == "m1"
    assert snapshot.roles == Roles("m1", None)
    assert [d.action for d in snapshot.decisions] == ["withdraw", "publish"]


def test_malformed_records_are_counted_skipped_and_explained():
    state = DashboardState()
    assert not state.ingest(record("ml_predictions", b"{not json"), NOW)
    assert not state.ingest(record("finished_trips", encode(prediction("t1"))), NOW)
    assert not state.ingest(record("dead_letters", b"x", headers=[("taxi.reason", b"?")]), NOW)
    assert not state.ingest(record("new_trips", None), NOW)
    assert not state.ingest(record("model_deployments", encode(cumulative())), NOW)
    assert not state.ingest(record("model_events", encode(decision())), NOW)
    assert not state.ingest(record("somewhere_else", b"{}"), NOW)
    snapshot = state.snapshot(NOW)
    assert snapshot.malformed_count == 7
    assert snapshot.roles is None
    assert snapshot.decisions == ()
    assert snapshot.model_events == ()
    assert snapshot.malformed["ml_predictions"] == 1
    assert snapshot.problems[0].topic == "somewhere_else"
    assert "not valid JSON" in snapshot.problems[-1].reason
    assert not snapshot.has_data
    assert snapshot.trips == ()
    assert snapshot.dead_letter_count == 0


def test_rates_count_records_by_their_own_timestamps():
    state = DashboardState()
    # Two trips a second over the whole rate window, read all at once (a look-back burst).
    for tenth in range(RATE_WINDOW_S * 10):
        if tenth % 5 == 0:
            stamp = NOW_MS - 1_000 - RATE_WINDOW_S * 1_000 + tenth * 100
            state.ingest(RawRecord("new_trips", encode(trip_started(f"t{tenth}")), stamp), NOW)
    snapshot = state.snapshot(NOW)
    assert snapshot.rates["new_trips"] == 2.0
    assert snapshot.rates["ml_predictions"] == 0.0
    assert sum(count for _, count in snapshot.rate_series["new_trips"]) == 2 * RATE_WINDOW_S


def test_a_record_without_a_timestamp_counts_at_arrival():
    state = DashboardState()
    arrival = NOW - timedelta(seconds=3)
    state.ingest(RawRecord("new_trips", encode(trip_started()), -1), arrival)
    series = dict(state.snapshot(NOW).rate_series["new_trips"])
    assert series[int(arrival.timestamp())] == 1
    assert sum(series.values()) == 1


def test_dead_letters_keep_the_newest_but_count_all():
    state = DashboardState(dead_letters=3)
    for i in range(10):
        letter = DeadLetter(
            source_topic="new_trips", partition=0, offset=i, service="predictor", reason=f"r{i}"
        )
        state.ingest(record("dead_letters", b"", headers=letter.to_headers()), NOW)
    snapshot = state.snapshot(NOW)
    assert [d.reason for d in snapshot.dead_letters] == ["r9", "r8", "r7"]
    assert snapshot.dead_letter_count == 10


@given(
    values=st.lists(
        st.tuples(st.sampled_from(TOPICS), st.one_of(st.none(), st.binary(max_size=64))),
        max_size=100,
    )
)
def test_any_bytes_on_any_topic_are_filed_or_counted_never_raised(values):
    state = DashboardState(trips=5, windows=5, dead_letters=5, decisions=5, model_events=5)
    for topic, value in values:
        state.ingest(record(topic, value), NOW)
    snapshot = state.snapshot(NOW)
    assert snapshot.records_read == len(values)
    sizes = snapshot.buffer_sizes
    assert sizes["trips"] <= 5
    assert sizes["dead_letters"] <= 5
    assert sizes["decisions"] <= 5
    assert sizes["model_events"] <= 5
    assert sizes["malformed"] <= 20
