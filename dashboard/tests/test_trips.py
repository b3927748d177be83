"""Predictions joined with their trip ends, whichever comes first, in bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from taxi_dashboard.trips import LiveTrip, TripBoard
from taxi_events.testing import prediction, trip_finished

ENDED = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def test_a_prediction_then_its_end_make_a_finished_trip():
    board = TripBoard()
    board.predicted(prediction("t1", predicted_duration=600.0))
    trip = board.get(("train", "t1"))
    assert trip is not None
    assert not trip.finished
    assert trip.error is None
    board.finished(trip_finished("t1", trip_duration=500.0, produced_at=ENDED))
    trip = board.get(("train", "t1"))
    assert trip is not None
    assert trip.finished
    assert trip.actual_duration == 500.0
    assert trip.finished_at == ENDED
    assert trip.error == 100.0
    assert trip.relative_error == 0.2


def test_an_end_read_before_its_prediction_waits_for_it():
    board = TripBoard()
    board.finished(trip_finished("t1", trip_duration=500.0, is_estimate=True, source="test"))
    assert len(board) == 0
    assert board.waiting_ends == 1
    board.predicted(prediction("t1", source="test"))
    trip = board.get(("test", "t1"))
    assert trip is not None
    assert trip.finished
    assert trip.is_estimate
    assert board.waiting_ends == 0


def test_events_read_twice_change_nothing():
    board = TripBoard()
    board.predicted(prediction("t1", predicted_duration=600.0))
    board.finished(trip_finished("t1", trip_duration=500.0, produced_at=ENDED))
    board.predicted(prediction("t1", predicted_duration=999.0))
    board.finished(trip_finished("t1", trip_duration=1.0))
    trip = board.get(("train", "t1"))
    assert trip is not None
    assert (trip.predicted_duration, trip.actual_duration, trip.finished_at) == (600, 500, ENDED)


def test_the_trips_are_listed_by_last_change():
    board = TripBoard()
    for trip_id in ("a", "b", "c"):
        board.predicted(prediction(trip_id))
    board.finished(trip_finished("a"))
    assert [t.trip_id for t in board.trips()] == ["b", "c", "a"]


def test_a_zero_length_trip_has_no_relative_error():
    trip = LiveTrip.of(prediction("t1")).ended(trip_finished("t1", trip_duration=0.0))
    assert trip.error == 600.0
    assert trip.relative_error is None


def test_memory_is_bounded_by_the_capacity():
    board = TripBoard(capacity=10)
    for i in range(100):
        board.predicted(prediction(f"p{i}"))
        board.finished(trip_finished(f"f{i}"))
    assert len(board) == 10
    assert board.waiting_ends == 10
    assert [t.trip_id for t in board.trips()] == [f"p{i}" for i in range(90, 100)]


# Few ids over both sources, so the same id often names a train trip and a test trip.
trips = st.lists(
    st.tuples(st.sampled_from(["train", "test"]), st.text("ab", min_size=1, max_size=3)),
    unique=True,
    max_size=30,
)


@given(data=st.data(), trips=trips)
def test_every_trip_with_both_events_ends_up_finished_whatever_the_order(data, trips):
    events = [("prediction", t) for t in trips] + [("end", t) for t in trips]
    order = data.draw(st.permutations(events))
    board = TripBoard(capacity=max(len(trips), 1))

    def duration(source: str, trip_id: str) -> float:
        # Tied to the trip, so a mix-up between trips would show.
        return float(len(trip_id) * 100 + (source == "test"))

    for kind, (source, trip_id) in order:
        if kind == "prediction":
            board.predicted(
                prediction(trip_id, source=source, predicted_duration=duration(source, trip_id) + 1)
            )
        else:
            board.finished(
                trip_finished(trip_id, source=source, trip_duration=duration(source, trip_id))
            )
    assert {(t.source, t.trip_id) for t in board.trips()} == set(trips)
    for trip in board.trips():
        assert trip.finished
        assert trip.actual_duration == duration(trip.source, trip.trip_id)
        assert trip.error == 1.0
    assert board.waiting_ends == 0


@given(
    capacity=st.integers(1, 10),
    events=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=200),
)
def test_the_board_never_holds_more_than_its_capacity(capacity, events):
    board = TripBoard(capacity)
    for is_prediction, n in events:
        if is_prediction:
            board.predicted(prediction(f"t{n}", trip_started_at=ENDED - timedelta(seconds=n)))
        else:
            board.finished(trip_finished(f"t{n}"))
        assert len(board) <= capacity
        assert board.waiting_ends <= capacity
