"""`taxi months`' report, worked out from the trips and the records a run leaves (no I/O), and
its command line."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import DeploymentDecision, ModelEvent
from taxi_model import generate_trips
from taxi_services.chaos.checker import Observed, Stamped
from taxi_services.commands.months import months
from taxi_services.lifecycle import Loop
from taxi_services.months import (
    MonthFigures,
    by_month_table,
    first_month,
    in_pickup_order,
    loop_story,
    monthly_rmsle,
    replay_reached,
)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def trips_of(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """Trips (id, pickup time, real duration in s)."""
    return pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "pickup_datetime": pd.to_datetime([r[1] for r in rows]),
            "trip_duration": [r[2] for r in rows],
        }
    )


def observed(predicted: dict[str, tuple[float, str]], actual: dict[str, float]) -> Observed:
    return Observed(
        trips=dict.fromkeys(actual, "train"),
        starts=[],
        ends=[Stamped(trip, 0, duration) for trip, duration in actual.items()],
        predictions=[Stamped(trip, 0, d, version) for trip, (d, version) in predicted.items()],
        metrics=[],
        dead_letters=[],
    )


def test_in_pickup_order_draws_a_fixed_subset_and_sorts_it():
    trips = generate_trips(rows=3_000, seed=5)
    drawn = in_pickup_order(trips, 1_000)
    assert len(drawn) == 1_000
    assert drawn["pickup_datetime"].is_monotonic_increasing
    assert set(drawn["id"]) <= set(trips["id"])
    assert drawn["id"].tolist() == in_pickup_order(trips, 1_000)["id"].tolist()
    everything = in_pickup_order(trips, 5_000)
    assert sorted(everything["id"]) == sorted(trips["id"])


def test_the_first_month_is_the_earliest_calendar_month():
    trips = trips_of(
        [("a", "2016-02-01 00:00", 1), ("b", "2016-01-31 23:59", 1), ("c", "2016-01-01 00:00", 1)]
    )
    assert first_month(trips)["id"].tolist() == ["b", "c"]


def test_each_month_is_scored_on_its_trips_that_were_predicted_and_finished():
    trips = trips_of(
        [
            ("a", "2016-01-30 10:00", 100),
            ("b", "2016-01-31 23:59", 200),
            ("c", "2016-02-01 00:00", 300),
            ("d", "2016-02-03 00:00", 400),  # never predicted: left out
        ]
    )
    figures = monthly_rmsle(
        trips,
        observed(
            {"a": (150.0, "m1"), "b": (200.0, "m1"), "c": (250.0, "m2")},
            {"a": 100.0, "b": 200.0, "c": 300.0, "d": 400.0},
        ),
    )
    january = math.sqrt((math.log1p(150) - math.log1p(100)) ** 2 / 2)
    february = abs(math.log1p(250) - math.log1p(300))
    assert figures == [
        MonthFigures("2016-01", 2, round(january, 4), {"m1": 1.0}),
        MonthFigures("2016-02", 1, round(february, 4), {"m2": 1.0}),
    ]


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=30, unique=True), st.integers())
def test_the_replay_had_reached_the_last_trip_started_by_then(start_times, at_ms):
    starts = sorted((t, f"trip{t}") for t in start_times)
    pickups = {trip: T0 + timedelta(seconds=t) for t, trip in starts}
    reached = replay_reached(starts, pickups, at_ms)
    started = [t for t, _ in starts if t <= at_ms]
    assert reached == (T0 + timedelta(seconds=max(started)) if started else None)


def test_the_story_dates_each_step_by_where_the_replay_was():
    pickups = {f"t{n}": datetime(2016, 1, 26) + timedelta(hours=n) for n in range(100)}
    starts = [(1_000 * n, f"t{n}") for n in range(100)]

    def at(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    loop = Loop(
        events=[
            ModelEvent(
                kind="candidate",
                model_version="m2",
                detail="x",
                occurred_at=at(40.5),
                evidence={"candidate_rmsle": 0.41},
            ),
            ModelEvent(
                kind="concept-drift",
                model_version="m1",
                source="train",
                detail="x",
                statistic="page-hinkley",
                occurred_at=at(31),
                last_trip_id="t30",
            ),
        ],
        decisions=[
            DeploymentDecision(
                action="publish",
                version="m1",
                champion="m1",
                challenger=None,
                actor="taxi months",
                reason="x",
                decided_at=at(0),
            ),
            DeploymentDecision(
                action="promote",
                version="m2",
                champion="m2",
                challenger="m1",
                actor="auto-promotion@host",
                reason="x",
                decided_at=at(60.2),
                evidence={"trips": 4_000.0},
            ),
        ],
        metrics=[],
    )
    story = loop_story(loop, starts, pickups)
    assert [(s["what"], s["model"], s["replay_at"]) for s in story] == [
        ("concept-drift", "m1", "2016-01-27 06:00"),  # its window's last trip
        ("candidate", "m2", "2016-01-27 16:00"),  # the last trip started by then
        ("promote", "m2", "2016-01-28 12:00"),
    ]
    assert story[1]["held_out"] == {"candidate_rmsle": 0.41}
    assert story[2]["evidence"] == {"trips": 4_000.0}


def test_the_table_puts_both_runs_side_by_side():
    without = [MonthFigures("2016-02", 10, 0.46, {"m1": 1.0})]
    with_retraining = [MonthFigures("2016-02", 10, 0.42, {"m1": 0.3, "m2": 0.7})]
    assert by_month_table({"without_retraining": without, "with_retraining": with_retraining}) == [
        {
            "month": "2016-02",
            "trips": 10,
            "without_retraining": 0.46,
            "with_retraining": 0.42,
            "served_by_with_retraining": {"m1": 0.3, "m2": 0.7},
        }
    ]


def test_without_real_trips_it_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(months, [], env={"TAXI_SAMPLE_DATA": str(tmp_path / "none")})
    assert result.exit_code == 2
    assert "no real trips: put Kaggle's train.csv in data/" in result.output
