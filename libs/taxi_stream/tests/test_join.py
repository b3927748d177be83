import itertools

from hypothesis import given
from hypothesis import strategies as st

from taxi_events import Prediction, TripFinished
from taxi_events import testing as events
from taxi_stream import MatchedTrip, TripJoin


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
def test_each_match_pairs_a_trips_own_sides_and_the_rest_expire(ids, data):
    """In any order of arrival and at any pace: a trip whose second side comes within the TTL
    of its first is matched, with its own prediction and its own end; any other trip's sides
    are both reported expired, and nothing is left waiting."""
    ttl = 1_000
    durations = {t: (100.0 + i, 1_000.0 + i) for i, t in enumerate(ids)}  # distinct per trip
    arrivals = [prediction(t, durations[t][0]) for t in ids]
    arrivals += [finish(t, durations[t][1]) for t in ids]
    order = data.draw(st.permutations(arrivals))
    gaps = data.draw(st.lists(st.integers(0, 600), min_size=len(order), max_size=len(order)))
    join = TripJoin(ttl_ms=ttl)
    arrived: dict[tuple[str, str], int] = {}
    matches: dict[str, MatchedTrip] = {}
    expired = []
    for event, now in zip(order, itertools.accumulate(gaps), strict=True):
        expired += join.expire(now)  # as the aggregator does with each record's time
        arrived[(event.trip_id, "prediction" if isinstance(event, Prediction) else "finish")] = now
        if (matched := join.add(event, now)) is not None:
            matches[matched.trip_id] = matched
    expired += join.expire(sum(gaps) + ttl + 1)

    for trip in ids:
        first, second = sorted((arrived[(trip, "prediction")], arrived[(trip, "finish")]))
        if second - first <= ttl:
            matched = matches.pop(trip)
            assert (matched.predicted_duration, matched.actual_duration) == durations[trip]
            assert matched.matched_at_ms == second
        else:
            assert trip not in matches
            assert {(trip, "prediction"), (trip, "finish")} <= {
                (p.event.trip_id, p.side) for p in expired
            }
    assert matches == {}
    assert len(expired) == len({(p.event.trip_id, p.side) for p in expired})  # each side once
    assert len(join) == 0


# Few ids over both sources, so the same id often names a train trip and a test trip.
trips = st.lists(
    st.tuples(st.sampled_from(["train", "test"]), st.text("ab", min_size=1, max_size=2)),
    unique=True,
    max_size=12,
)


@given(trips, st.data())
def test_each_trip_matches_its_own_source(trips, data):
    # Distinct per trip, so that a match of the other source's namesake shows.
    durations = {trip: (100.0 + i, 1_000.0 + i) for i, trip in enumerate(trips)}
    arrivals = [
        side(trip_id, source=source, **{field: durations[(source, trip_id)][n]})
        for source, trip_id in trips
        for n, (side, field) in enumerate(
            ((events.prediction, "predicted_duration"), (events.trip_finished, "trip_duration"))
        )
    ]
    join = TripJoin(ttl_ms=60_000)
    order = data.draw(st.permutations(arrivals))
    matches = [m for i, event in enumerate(order) if (m := join.add(event, i)) is not None]
    assert sorted((m.source, m.trip_id) for m in matches) == sorted(trips)
    for m in matches:
        assert (m.predicted_duration, m.actual_duration) == durations[(m.source, m.trip_id)]
    assert len(join) == 0
