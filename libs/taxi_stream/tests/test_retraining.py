"""The retraining core (issue 20): the labelled window, its bounds and rejections, the schedule,
candidates against a champion, and the state's exact round trip."""

import zlib
from collections import Counter
from datetime import datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from taxi_events import TripFinished, TripStarted
from taxi_events import testing as events
from taxi_model import TRAIN_COLUMNS, TripDurationModel, evaluate, generate_trips, train_model
from taxi_stream import (
    MAX_LABEL_DURATION_S,
    Candidate,
    InjectedDrift,
    NoCandidate,
    Replay,
    Retraining,
    RetrainingSettings,
    Slowdown,
    train_candidate,
)

Event = TripStarted | TripFinished

PICKUP = datetime(2016, 3, 1, 8, 0)
# Rejections counted once per trip, when its two sides meet; the others count events.
JOIN_REJECTIONS = ("estimate", "impossible-duration", "dropoff-before-pickup")


def start(trip_id: str, source: str = "train", pickup: datetime = PICKUP) -> TripStarted:
    return events.trip_started(trip_id, source=source, pickup_datetime=pickup)


def end(
    trip_id: str,
    seconds: float = 600.0,
    *,
    source: str = "train",
    is_estimate: bool = False,
    dropoff: datetime | None = None,
) -> TripFinished:
    return events.trip_finished(
        trip_id,
        trip_duration=seconds,
        source=source,
        is_estimate=is_estimate,
        dropoff_datetime=PICKUP + timedelta(seconds=seconds) if dropoff is None else dropoff,
    )


def create(**overrides: int) -> Retraining:
    values = {"max_trips": 100, "min_trips": 2, "every_trips": 100, "ttl_ms": 60_000}
    return Retraining.create(RetrainingSettings(**{**values, **overrides}))


def label(retraining: Retraining, *trip_ids: str) -> None:
    for trip_id in trip_ids:
        assert not retraining.add(start(trip_id), 0)
        assert retraining.add(end(trip_id), 0)


def window_ids(retraining: Retraining) -> list[str]:
    return retraining.window.frame()["id"].tolist()


def rejected(retraining: Retraining) -> dict[str, int]:
    return {reason: n for reason, n in retraining.window.rejected.items() if n}


# -- the labelled window ------------------------------------------------------------------------


def test_a_start_and_its_end_in_either_order_make_one_training_row():
    retraining = create()
    assert not retraining.add(end("b", 900.0), 1_000)
    assert not retraining.add(start("a"), 1_000)
    assert retraining.add(end("a", 600.0), 2_000)
    assert retraining.add(start("b"), 3_000)
    frame = retraining.window.frame()
    assert list(frame.columns) == list(TRAIN_COLUMNS)
    assert frame["id"].tolist() == ["a", "b"]
    assert frame["trip_duration"].tolist() == [600.0, 900.0]
    assert frame["pickup_datetime"].tolist() == [pd.Timestamp(PICKUP)] * 2
    assert (retraining.window.waiting_starts, retraining.window.waiting_ends) == (0, 0)
    assert rejected(retraining) == {}


def test_the_window_keeps_the_last_max_trips_labelled():
    retraining = create(max_trips=3, min_trips=1)
    label(retraining, "a", "b", "c", "d", "e")
    assert window_ids(retraining) == ["c", "d", "e"]
    assert retraining.window.labelled == 5


def test_test_trips_and_estimates_are_never_labels():
    retraining = create()
    for event in (start("t", source="test"), end("t", source="test", is_estimate=True)):
        assert not retraining.add(event, 0)
    retraining.add(start("e"), 0)
    assert not retraining.add(end("e", is_estimate=True), 0)
    assert len(retraining.window) == 0
    assert rejected(retraining) == {"test-source": 2, "estimate": 1}


@pytest.mark.parametrize(
    ("seconds", "dropoff", "reason"),
    [
        (0.0, None, "impossible-duration"),
        (MAX_LABEL_DURATION_S + 1.0, None, "impossible-duration"),
        (600.0, PICKUP - timedelta(seconds=1), "dropoff-before-pickup"),
    ],
)
def test_an_impossible_label_is_counted_once_and_never_kept(seconds, dropoff, reason):
    retraining = create()
    retraining.add(end("x", seconds, dropoff=dropoff), 0)
    assert not retraining.add(start("x"), 0)
    assert len(retraining.window) == 0
    assert (retraining.window.waiting_starts, retraining.window.waiting_ends) == (0, 0)
    assert rejected(retraining) == {reason: 1}


def test_a_full_day_is_still_a_possible_label():
    retraining = create()
    retraining.add(start("x"), 0)
    assert retraining.add(end("x", float(MAX_LABEL_DURATION_S)), 0)


def test_duplicates_are_counted_and_change_nothing():
    retraining = create()
    retraining.add(start("a"), 0)
    assert not retraining.add(start("a", pickup=PICKUP + timedelta(hours=1)), 0)  # waiting
    retraining.add(end("a"), 0)
    assert not retraining.add(end("a", 999.0), 0)  # in the window
    assert not retraining.add(start("a"), 0)
    retraining.add(end("b"), 0)
    assert not retraining.add(end("b", 999.0), 0)  # waiting
    assert window_ids(retraining) == ["a"]
    assert retraining.window.frame()["pickup_datetime"].tolist() == [pd.Timestamp(PICKUP)]
    assert rejected(retraining) == {"duplicate": 4}


def test_a_side_waits_for_its_partner_at_most_the_ttl():
    retraining = create(ttl_ms=10_000)
    retraining.add(start("a"), 1_000)
    retraining.add(end("b"), 5_000)
    assert retraining.expire(11_000) == 0
    assert retraining.expire(11_001) == 1  # a's start
    assert not retraining.add(end("a"), 11_002)  # too late: it waits in its turn
    assert retraining.add(start("b"), 11_003)
    assert retraining.expire(21_003) == 1  # a's end
    assert rejected(retraining) == {"expired": 2}
    assert window_ids(retraining) == ["b"]


def test_at_most_max_waiting_of_each_side_wait_the_oldest_go_first():
    retraining = create(max_waiting=2)
    for trip_id in ("a", "b", "c"):
        retraining.add(start(trip_id), 0)
        retraining.add(end(f"end-{trip_id}"), 0)
    assert (retraining.window.waiting_starts, retraining.window.waiting_ends) == (2, 2)
    assert rejected(retraining) == {"waiting-full": 2}
    assert not retraining.add(end("a"), 0)  # its start was pushed out
    assert retraining.add(end("b"), 0)


TRIP_IDS = [f"t{n}" for n in range(6)]
TOPIC_PARTITIONS = ["new_trips/0", "new_trips/5", "finished_trips/0"]


@st.composite
def any_event(draw: st.DrawFn) -> Event:
    """Mostly usual train trips (the repeated choices), so that trips are labelled, evicted and
    expired; now and then each oddity."""
    trip_id = draw(st.sampled_from(TRIP_IDS))
    source = draw(st.sampled_from(["train"] * 9 + ["test"]))
    if draw(st.booleans()):
        return start(trip_id, source, PICKUP + timedelta(minutes=draw(st.integers(0, 60))))
    seconds = [600.0] * 6 + [0.0, 1.0, float(MAX_LABEL_DURATION_S), MAX_LABEL_DURATION_S + 1.0]
    return end(
        trip_id,
        draw(st.sampled_from(seconds)),
        source=source,
        is_estimate=draw(st.sampled_from([False] * 9 + [True])),
        dropoff=PICKUP + timedelta(minutes=draw(st.sampled_from([90] * 9 + [-1]))),
    )


# Operations on a Retraining, mostly events: an event at a record time, expiry at a time, a
# drift event, and taking the window when due (with or without offsets). Long enough to fill
# the window and the waiting sides (hypothesis' lists are short unless told).
operations = st.lists(
    st.tuples(
        st.sampled_from(["add"] * 6 + ["expire", "drift", "take"]),
        any_event(),
        st.integers(0, 30_000),
        st.none() | st.dictionaries(st.sampled_from(TOPIC_PARTITIONS), st.integers(0)),
    ),
    min_size=10,
    max_size=40,
)


def apply(retraining: Retraining, operation: tuple) -> object:
    """Run one operation; returns what it returned, in a comparable form."""
    kind, event, at_ms, offsets = operation
    if kind == "add":
        return retraining.add(event, at_ms)
    if kind == "expire":
        return retraining.expire(at_ms)
    if kind == "drift":
        return retraining.drift_detected()
    job = retraining.take_window(offsets)
    return None if job is None else (job.window, job.trigger, job.trips.to_dict("list"))


SMALL = {"max_trips": 3, "min_trips": 2, "every_trips": 2, "ttl_ms": 10_000, "max_waiting": 2}


@settings(deadline=None, max_examples=60)
@given(operations)
def test_bounds_hold_every_event_is_accounted_for_and_no_window_is_too_small(operations):
    retraining = create(**SMALL)
    train_events = test_events = 0
    for operation in operations:
        result = apply(retraining, operation)
        if operation[0] == "take" and result is not None:
            assert result[0].trips >= SMALL["min_trips"]
        if operation[0] == "add":
            is_train = operation[1].source == "train"
            train_events += is_train
            test_events += not is_train
        window = retraining.window
        assert len(window) <= SMALL["max_trips"]
        assert window.waiting_starts <= SMALL["max_waiting"]
        assert window.waiting_ends <= SMALL["max_waiting"]
        counts = window.rejected
        assert counts["test-source"] == test_events
        # Each train event was dropped on arrival, or waits, or left waiting (expired, pushed
        # out), or met its partner: the pair then made one trip, labelled or rejected.
        assert train_events == (
            counts["duplicate"]
            + counts["expired"]
            + counts["waiting-full"]
            + window.waiting_starts
            + window.waiting_ends
            + 2 * (window.labelled + sum(counts[reason] for reason in JOIN_REJECTIONS))
        )


LABEL_KINDS = {
    "good": {},
    "zero": {"seconds": 0.0},
    "over a day": {"seconds": MAX_LABEL_DURATION_S + 0.5},
    "estimate": {"is_estimate": True},
    "dropoff before pickup": {"dropoff": PICKUP - timedelta(minutes=5)},
    "test": {"source": "test", "is_estimate": True},
}
REASON_OF_KIND = {
    "zero": "impossible-duration",
    "over a day": "impossible-duration",
    "estimate": "estimate",
    "dropoff before pickup": "dropoff-before-pickup",
}


@settings(deadline=None, max_examples=100)
@given(st.lists(st.sampled_from(sorted(LABEL_KINDS)), max_size=30), st.randoms())
def test_each_bad_label_is_counted_and_never_trained_on(kinds, random):
    sides = []
    for n, kind in enumerate(kinds):
        fields = LABEL_KINDS[kind]
        sides.append(start(f"t{n}", source=fields.get("source", "train")))
        sides.append(end(f"t{n}", **{"seconds": 600.0 + n, **fields}))
    random.shuffle(sides)
    retraining = create(max_trips=1_000, min_trips=1)
    for at_ms, side in enumerate(sides):
        retraining.add(side, at_ms)
    frame = retraining.window.frame()
    assert sorted(frame["id"]) == sorted(f"t{n}" for n, kind in enumerate(kinds) if kind == "good")
    assert frame["trip_duration"].between(1, MAX_LABEL_DURATION_S).all()
    expected = Counter(REASON_OF_KIND[kind] for kind in kinds if kind in REASON_OF_KIND)
    expected["test-source"] = 2 * kinds.count("test")
    assert rejected(retraining) == {reason: n for reason, n in expected.items() if n}


# -- the schedule -------------------------------------------------------------------------------


def test_a_candidate_is_due_every_n_labelled_trips():
    retraining = create(min_trips=2, every_trips=3)
    label(retraining, "a", "b")
    assert retraining.due() is None
    assert retraining.take_window() is None
    label(retraining, "c")
    assert retraining.due() == "schedule"
    job = retraining.take_window({"finished_trips/0": 7})
    assert job is not None
    assert (job.trigger, job.window.trips, job.window.offsets) == (
        "schedule",
        3,
        {"finished_trips/0": 7},
    )
    assert retraining.last_window == job.window
    assert retraining.due() is None
    label(retraining, "d", "e")
    assert retraining.due() is None
    label(retraining, "f")
    assert retraining.due() == "schedule"
    assert retraining.windows_taken == 1


def test_a_drift_makes_a_candidate_due_on_the_first_trips_after_it():
    retraining = create(min_trips=2, every_trips=100)
    label(retraining, "a", "b", "c")
    assert retraining.due() is None
    retraining.drift_detected()
    assert len(retraining.window) == 0  # the trips before the drift are forgotten
    label(retraining, "d")
    assert retraining.due() is None
    label(retraining, "e")
    job = retraining.take_window()
    assert job is not None
    assert job.trigger == "drift"
    assert list(job.trips["id"]) == ["d", "e"]
    assert retraining.due() is None  # the drift was answered


def test_nothing_is_due_below_min_trips_and_each_deferral_is_counted():
    retraining = create(min_trips=4, every_trips=2)
    label(retraining, "a", "b")  # every_trips reached, the window too small
    assert retraining.deferred_too_small == 1
    retraining.drift_detected()
    label(retraining, "c", "d", "e")
    assert retraining.due() is None
    label(retraining, "f")
    assert retraining.due() == "drift"  # deferred, not forgotten


# -- candidates ---------------------------------------------------------------------------------


def replayed(trips: pd.DataFrame, slowdown_from: int | None = None) -> list[tuple[Event, int]]:
    """The trips' starts and ends as the train producer sends them, with their record times:
    in pickup order, 1,000 a second, each end seconds after its start. From the
    `slowdown_from`th trip on, every trip lasts 1.5 times as long (a citywide slowdown)."""
    drift = None if slowdown_from is None else InjectedDrift(Slowdown(1.5), slowdown_from)
    replay = Replay(trips.sort_values("pickup_datetime"), "train", rate=1_000, drift=drift)
    sent: list[tuple[Event, int]] = []
    now_ms = 0
    while not replay.done:
        step = replay.step(now_ms, max_starts=1_000)
        sent += [(event, now_ms) for event in [*step.started, *step.finished]]
        now_ms += 100
    return sent


WINDOW = 1_000


@pytest.fixture(autouse=True, scope="module")
def one_training_thread():
    """Train on one thread: on a small machine busy with other work, the booster's OpenMP
    threads spin against it (measured on 2 cores: 0.2 s on one thread, 13 s on two)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def champion() -> TripDurationModel:
    result = train_model(generate_trips(1_500, seed=1), "synthetic rows=1500 seed=1")
    return TripDurationModel(result.pipeline, result.card)


def candidate_on(
    sent: list[tuple[Event, int]], champion: TripDurationModel, min_improvement: float
) -> Candidate:
    # A slowdown makes the longest trips impossible (over a day): they are rejected.
    retraining = create(max_trips=WINDOW, min_trips=WINDOW * 9 // 10, every_trips=WINDOW * 9 // 10)
    for event, at_ms in sent:
        retraining.add(event, at_ms)
    job = retraining.take_window({"new_trips/0": 1_000, "finished_trips/0": 1_000})
    assert job is not None
    outcome = train_candidate(job, champion, min_improvement=min_improvement)
    assert isinstance(outcome, Candidate)
    assert outcome.champion_version == champion.version
    # Both scored on the same held-out trips: the window's newest fifth by pickup time.
    assert outcome.champion_rmsle == evaluate(champion, outcome.holdout).rmsle
    assert outcome.candidate_rmsle == outcome.model.card.holdout.rmsle
    cutoff = pd.Timestamp(outcome.model.card.data.cutoff)
    assert (outcome.holdout["pickup_datetime"] >= cutoff).all()
    assert len(outcome.holdout) == round(job.window.trips * 0.2)
    return outcome


def test_a_candidate_from_a_drifted_window_beats_the_stale_champion(champion):
    trips = generate_trips(WINDOW, seed=5)
    outcome = candidate_on(replayed(trips, slowdown_from=WINDOW // 2), champion, 0.05)
    assert outcome.better
    assert outcome.champion_rmsle is not None
    assert outcome.candidate_rmsle < outcome.champion_rmsle - 0.05
    # The card says what it learnt from: the window, and where its time split cut it.
    data, window = outcome.model.card.data, outcome.window
    assert (data.rows, data.split) == (window.trips, "time")
    assert data.description == window.description()
    assert data.description.startswith(f"live window: {window.trips} train trips picked up from ")
    assert "finished_trips/0=1000 new_trips/0=1000" in data.description
    assert window.first_pickup == trips["pickup_datetime"].min().to_pydatetime()
    assert window.last_pickup == trips["pickup_datetime"].max().to_pydatetime()
    assert window.first_pickup < datetime.fromisoformat(data.cutoff) <= window.last_pickup


def test_a_candidate_from_the_champions_own_distribution_need_not_beat_it(champion):
    outcome = candidate_on(replayed(generate_trips(WINDOW, seed=3)), champion, 0.05)
    assert outcome.champion_rmsle is not None
    assert outcome.champion_rmsle - outcome.candidate_rmsle < 0.05
    assert not outcome.better


def test_a_window_training_refuses_never_makes_a_model(champion):
    retraining = create(min_trips=10, every_trips=10)
    label(retraining, *(f"t{n}" for n in range(10)))
    job = retraining.take_window()
    assert job is not None
    outcome = train_candidate(job, champion)
    assert isinstance(outcome, NoCandidate)
    assert "at least 100" in outcome.reason


# -- the state ----------------------------------------------------------------------------------


def observed(retraining: Retraining) -> tuple:
    window = retraining.window
    return (
        window.frame().to_dict("list"),
        window.waiting_starts,
        window.waiting_ends,
        window.labelled,
        dict(window.rejected),
        retraining.due(),
        retraining.labelled_since_candidate,
        retraining.drift_pending,
        retraining.deferred_too_small,
        retraining.windows_taken,
        retraining.last_window,
    )


@settings(deadline=None, max_examples=60)
@given(operations, operations)
def test_the_state_restores_exactly(before, after):
    """Restored from its bytes, the state does on any continuation exactly what it would have."""
    retraining = create(**SMALL)
    for operation in before:
        apply(retraining, operation)
    state = retraining.to_bytes()
    restored = Retraining.from_bytes(state)
    assert restored == retraining
    assert observed(restored) == observed(retraining)
    assert restored.to_bytes() == state  # the order of arrivals too, which decides evictions
    for operation in after:
        assert apply(restored, operation) == apply(retraining, operation)
        assert restored.to_bytes() == retraining.to_bytes()
    assert observed(restored) == observed(retraining)


def test_other_settings_after_a_restart_apply_at_once_the_oldest_go_first():
    retraining = create(max_trips=5, min_trips=2, every_trips=4, max_waiting=3)
    label(retraining, "a", "b", "c", "d", "e")
    for trip_id in ("f", "g", "h"):
        retraining.add(start(trip_id), 0)
    restored = Retraining.from_bytes(retraining.to_bytes())
    smaller = RetrainingSettings(max_trips=3, min_trips=2, every_trips=9, max_waiting=1)
    restored.reconfigure(smaller)
    assert restored.settings == smaller
    assert window_ids(restored) == ["c", "d", "e"]
    assert restored.window.waiting_starts == 1
    assert rejected(restored) == {"waiting-full": 2}
    assert restored.due() is None  # 5 trips labelled since the last candidate, now 9 are due
    assert restored.add(end("h"), 0)  # the newest start stayed
    assert window_ids(restored) == ["d", "e", "h"]
    assert Retraining.from_bytes(restored.to_bytes()) == restored


@pytest.mark.parametrize(
    "data",
    [b"", b"not zlib", zlib.compress(b"[]"), zlib.compress(b'{"format": 99}'), b"x" * 10],
)
def test_bytes_that_are_no_state_are_refused(data):
    with pytest.raises(ValueError, match="unreadable retraining state"):
        Retraining.from_bytes(data)


def test_a_truncated_state_is_refused():
    retraining = create()
    label(retraining, "a", "b")
    with pytest.raises(ValueError, match="unreadable retraining state"):
        Retraining.from_bytes(retraining.to_bytes()[:-4])


# 32 MiB records hold the state at max_trips 50,000 with max_waiting 50,000 starts and as many
# ends (150,000 rows) if each row takes less than this, with room to spare.
BYTES_PER_ROW = 64


def test_the_state_stays_small_per_trip():
    """Full: 1,000 trips in the window, 1,000 starts and 1,000 ends waiting for their partner."""
    retraining = create(max_trips=1_000, max_waiting=1_000)
    trips = generate_trips(3_000, seed=4)
    sent = [
        *replayed(trips.iloc[:1_000]),
        *[(e, t) for e, t in replayed(trips.iloc[1_000:2_000]) if isinstance(e, TripStarted)],
        *[(e, t) for e, t in replayed(trips.iloc[2_000:]) if isinstance(e, TripFinished)],
    ]
    for event, at_ms in sent:
        retraining.add(event, at_ms)
    window = retraining.window
    assert (len(window), window.waiting_starts, window.waiting_ends) == (1_000, 1_000, 1_000)
    assert len(retraining.to_bytes()) < 3_000 * BYTES_PER_ROW
