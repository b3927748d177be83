from hypothesis import given
from hypothesis import strategies as st

from taxi_events import Prediction, TripFinished
from taxi_events import testing as events
from taxi_model.join import MatchedTrip, TripJoin


def prediction(trip_id: str, seconds: float = 600.0) -> Prediction:
    return events.prediction(trip_id, predicted_duration=seconds)


def finish(trip_id: str, seconds: float = 660.0) -> TripFinished:
    return events.trip_finished(trip_id, trip_duration=seconds)


def test_either_side_can_arrive_first():
    join = TripJoin(ttl_ms=60_000)
    assert join.add(prediction("a"), 1_000) is None
    assert join.add(finish("b"), 1_500) is None
    assert len(join) == 2
    matched_a = join.add(finish("a"), 2_000)
    matched_b = join.add(prediction("b"), 2_500)
    assert matched_a == MatchedTrip("a", "train", 600.0, 660.0, False, "abc123", 2_000)
    assert matched_b is not None
    assert matched_b.matched_at_ms == 2_500
    assert len(join) == 0


def test_a_repeated_side_is_ignored():
    join = TripJoin(ttl_ms=60_000)
    join.add(prediction("a", 600.0), 1_000)
    assert join.add(prediction("a", 999.0), 1_100) is None
    matched = join.add(finish("a"), 1_200)
    assert matched is not None
    assert matched.predicted_duration == 600.0


def test_unmatched_sides_expire_after_the_ttl():
    join = TripJoin(ttl_ms=10_000)
    join.add(prediction("a"), 1_000)
    join.add(finish("b"), 5_000)
    assert join.expire(11_000) == []
    expired = join.expire(11_001)
    assert [(p.event.trip_id, p.side) for p in expired] == [("a", "prediction")]
    assert [(p.event.trip_id, p.side) for p in join.expire(15_001)] == [("b", "finish")]
    assert join.add(finish("a"), 16_000) is None  # its prediction is gone


def test_the_sources_trips_never_match_each_other():
    # Real Kaggle train rows beside synthetic test rows can share an id (id1436027 did).
    join = TripJoin(ttl_ms=60_000)
    join.add(prediction("id1436027"), 1_000)
    assert join.add(events.trip_finished("id1436027", source="test"), 1_100) is None
    assert join.add(events.prediction("id1436027", source="test"), 1_200) is not None
    matched = join.add(finish("id1436027"), 1_300)
    assert matched is not None
    assert matched.source == "train"
    assert len(join) == 0


trip_ids = st.lists(st.text("abcdef", min_size=1, max_size=4), unique=True, max_size=30)


@given(trip_ids, st.data())
def test_any_order_of_arrival_gives_the_same_matches(ids, data):
    arrivals = [prediction(t) for t in ids] + [finish(t) for t in ids]
    order = data.draw(st.permutations(arrivals))
    join = TripJoin(ttl_ms=10**12)
    matches = [m for i, event in enumerate(order) if (m := join.add(event, i)) is not None]
    assert sorted(m.trip_id for m in matches) == sorted(ids)
    assert all((m.predicted_duration, m.actual_duration) == (600.0, 660.0) for m in matches)
    assert len(join) == 0


# Few ids over both sources, so the same id often names a train trip and a test trip.
trips = st.lists(
    st.tuples(st.sampled_from(["train", "test"]), st.text("ab", min_size=1, max_size=2)),
    unique=True,
    max_size=12,
)


@given(trips, st.data())
def test_each_trip_matches_its_own_source(trips, data):
    def seconds(source: str) -> float:
        return 600.0 if source == "train" else 900.0

    arrivals = [
        side(trip_id, source=source, **{field: seconds(source)})
        for source, trip_id in trips
        for side, field in (
            (events.prediction, "predicted_duration"),
            (events.trip_finished, "trip_duration"),
        )
    ]
    join = TripJoin(ttl_ms=10**12)
    order = data.draw(st.permutations(arrivals))
    matches = [m for i, event in enumerate(order) if (m := join.add(event, i)) is not None]
    assert sorted((m.source, m.trip_id) for m in matches) == sorted(trips)
    assert all(m.predicted_duration == m.actual_duration == seconds(m.source) for m in matches)
    assert len(join) == 0
