import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taxi_model import generate_trips
from taxi_stream import (
    END_DELAY_RANGE_S,
    CheckpointMismatchError,
    InjectedDrift,
    Replay,
    ReplayCheckpoint,
    ReplayStep,
    Slowdown,
    end_delays_s,
    generation_trip_id,
    replay_fingerprint,
)

TRIPS = generate_trips(rows=60, seed=11)
TEST_TRIPS = TRIPS.drop(columns=["dropoff_datetime", "trip_duration"])
T0 = 1_750_000_000_000


def run(replay: Replay, until_ms: int, step_ms: int = 100, max_starts: int = 1000):
    """Step the replay every `step_ms` up to `until_ms`; return starts and ends with their times."""
    started, finished = [], []
    for now in range(T0, until_ms, step_ms):
        step = replay.step(now, max_starts)
        started += [(now, e) for e in step.started]
        finished += [(now, e) for e in step.finished]
    return started, finished


def test_trips_start_at_the_rate_and_end_two_to_five_seconds_later():
    replay = Replay(TRIPS, "train", rate=10)
    started, finished = run(replay, T0 + 20_000)
    assert sum(at < T0 + 3_000 for at, _ in started) == 30  # 10 a second
    assert replay.done
    assert sorted(e.trip_id for _, e in finished) == sorted(TRIPS["id"])
    started_at = {e.trip_id: at for at, e in started}
    for ended_at, e in finished:
        if e.trip_id in started_at:
            assert 2_000 <= ended_at - started_at[e.trip_id] < 5_100


def test_train_ends_carry_the_real_duration_and_test_ends_an_estimate():
    train = Replay(TRIPS, "train")
    _, finished = run(train, T0 + 6_000)
    by_id = {e.trip_id: e for _, e in finished}
    row = TRIPS.iloc[0]
    assert by_id[row["id"]].trip_duration == row["trip_duration"]
    assert not by_id[row["id"]].is_estimate
    assert by_id[row["id"]].dropoff_datetime == row["dropoff_datetime"].to_pydatetime()

    test = Replay(TEST_TRIPS, "test")
    started, finished = run(test, T0 + 6_000)
    assert {e.source for _, e in started} == {"test"}
    assert finished
    assert all(e.is_estimate and e.trip_duration > 0 for _, e in finished)


def test_as_fast_as_possible_is_bounded_by_max_starts():
    replay = Replay(TRIPS, "train")
    assert len(replay.step(T0, max_starts=25).started) == 25
    assert replay.position == replay.started == 25


def test_stop_after_counts_from_where_the_replay_stands():
    replay = Replay(TRIPS, "train")
    replay.step(T0, max_starts=10)
    replay.stop_after(7)
    started, finished = run(replay, T0 + 10_000)
    assert [e.trip_id for _, e in started] == list(TRIPS["id"][10:17])
    assert len(finished) == 17  # the first ten trips' ends were owed too
    assert replay.done
    assert replay.position == 17


def test_a_limit_is_the_same_data_not_other_data():
    limited = Replay(TRIPS, "train")
    limited.stop_after(5)
    run(limited, T0 + 10_000)
    again = Replay(TRIPS, "train")
    again.restore(limited.checkpoint())  # no CheckpointMismatchError
    assert again.position == 5
    assert limited.fingerprint == replay_fingerprint(TRIPS, "train")


def test_without_loop_a_finished_replay_starts_nothing_more():
    replay = Replay(TRIPS, "train")
    run(replay, T0 + 10_000)
    resumed = Replay(TRIPS, "train")
    resumed.restore(replay.checkpoint())
    assert resumed.done
    assert resumed.step(T0 + 20_000, max_starts=100).started == []


def test_a_looping_replay_goes_on_with_new_trip_ids():
    replay = Replay(TRIPS, "train", rate=20, loop=True)
    started, finished = run(replay, T0 + 8_000)
    ids = [e.trip_id for _, e in started]
    rows = list(TRIPS["id"])
    assert ids[: len(rows)] == rows
    assert ids[len(rows) : 2 * len(rows)] == [f"{r}-g2" for r in rows]
    assert len(ids) == len(set(ids)) > 2 * len(rows)  # a third generation has begun
    assert replay.generation == 3
    assert not replay.done
    ended = {e.trip_id for _, e in finished}
    assert ended <= set(ids)
    assert f"{rows[0]}-g2" in ended


def test_the_generation_is_part_of_the_trip_id_only_after_the_first():
    assert generation_trip_id("id0001", 1) == "id0001"
    assert generation_trip_id("id0001", 2) == "id0001-g2"


def test_an_empty_file_is_done_even_when_looping():
    replay = Replay(TRIPS.iloc[:0], "train", loop=True)
    assert replay.done
    assert replay.step(T0, max_starts=10).started == []


def test_a_checkpoint_from_before_generations_still_restores():
    replay = Replay(TRIPS, "train")
    old = {"fingerprint": replay.fingerprint, "next_row": 12, "pending_ends": [[T0, 11]]}
    replay.restore(ReplayCheckpoint.from_json(old))
    assert (replay.position, replay.started, replay.pending_ends) == (12, 12, 1)


def test_end_delays_are_stable_and_in_range():
    ids = TRIPS["id"].to_numpy()
    delays = end_delays_s(ids, np.zeros(len(ids)), None)
    assert ((delays >= END_DELAY_RANGE_S[0]) & (delays <= END_DELAY_RANGE_S[1])).all()
    assert (delays == end_delays_s(ids, np.zeros(len(ids)), None)).all()
    assert end_delays_s(["a"], [600.0], time_scale=60).tolist() == [10.0]
    with pytest.raises(ValueError, match="positive"):
        end_delays_s(["a"], [600.0], time_scale=0)


def test_a_checkpoint_of_other_data_is_refused():
    other = Replay(generate_trips(rows=60, seed=12), "train")
    with pytest.raises(CheckpointMismatchError, match="other trip data"):
        Replay(TRIPS, "train").restore(other.checkpoint())
    with pytest.raises(CheckpointMismatchError):
        Replay(TRIPS, "test").restore(Replay(TRIPS, "train").checkpoint())


@settings(deadline=None, max_examples=40)
@given(
    gaps=st.lists(st.integers(0, 3_000), min_size=1, max_size=40),
    crash_points=st.sets(st.integers(0, 39), max_size=6),
    max_starts=st.integers(1, 20),
    loop=st.booleans(),
    limits=st.lists(st.integers(1, 90), max_size=6),
    drift_from=st.integers(0, 120),
)
def test_a_restart_from_any_checkpoint_starts_and_ends_every_trip_exactly_once(
    *, gaps, crash_points, max_starts, loop, limits, drift_from
):
    """A producer killed between transactions, or stopped at a --limit, restarts from its last
    committed checkpoint; each run may have a limit of its own, and a looping replay may go on
    past the end of the file. Its injected drift goes on from the same trip."""
    limits = iter(limits)
    drift = InjectedDrift(Slowdown(1.5), drift_from)

    def process() -> Replay:  # a new producer process: restore, then this run's limit
        replay = Replay(TRIPS, "train", rate=40, loop=loop, drift=drift)
        if saved is not None:
            replay.restore(ReplayCheckpoint.from_json(json.loads(saved)))
        if (limit := next(limits, None)) is not None:
            replay.stop_after(limit)
        return replay

    saved = None
    replay = process()
    started, finished = Counter(), Counter()
    durations = {}
    now = T0

    def record(step: ReplayStep) -> None:
        started.update(e.trip_id for e in step.started)
        finished.update(e.trip_id for e in step.finished)
        durations.update({e.trip_id: e.trip_duration for e in step.finished})

    for i, gap in enumerate(gaps):
        now += gap
        record(replay.step(now, max_starts))
        if i in crash_points or replay.done:  # committed, then killed or stopped at its limit
            saved = json.dumps(replay.checkpoint().to_json())
            replay = process()
    replay.stop_after(0)  # the last run: send what is owed
    while not replay.done:
        now += 1_000
        record(replay.step(now, max_starts))
    assert set(started) == set(finished)
    assert set(started.values()) <= {1}
    assert set(finished.values()) <= {1}
    assert replay.started == len(started)
    rows = len(TRIPS)
    expected = [
        generation_trip_id(TRIPS["id"][p % rows], p // rows + 1) for p in range(len(started))
    ]
    assert sorted(started) == sorted(expected)  # no trip skipped: the first N in order
    real = TRIPS["trip_duration"]
    assert [durations[trip] for trip in expected] == [
        real[p % rows] * (1.5 if p >= drift_from else 1) for p in range(len(started))
    ]
