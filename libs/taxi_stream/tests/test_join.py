import itertools
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from taxi_events import Prediction, TripFinished
from taxi_events import testing as events
from taxi_stream import UNKNOWN_MODEL, MatchedTrip, MetricsKey, TripJoin


def prediction(trip_id: str, seconds: float = 600.0) -> Prediction:
    return events.prediction(trip_id, predicted_duration=seconds)


def finish(trip_id: str, seconds: float = 660.0) -> TripFinished:
    return events.trip_finished(trip_id, trip_duration=seconds)


def champion(trip_id: str, seconds: float = 600.0, challenger: str | None = "c2") -> Prediction:
    return events.prediction(
        trip_id, predicted_duration=seconds, model_version="m1", challenger_version=challenger
    )


def challenger(trip_id: str, seconds: float = 700.0, version: str = "c2") -> Prediction:
    return events.prediction(
        trip_id, predicted_duration=seconds, model_version=version, role="challenger"
    )


def test_either_side_can_arrive_first():
    join = TripJoin(ttl_ms=60_000)
    assert join.add(prediction("a"), 1_000) == []
    assert join.add(finish("b"), 1_500) == []
    assert len(join) == 2
    matched_a = join.add(finish("a"), 2_000)
    [matched_b] = join.add(prediction("b"), 2_500)
    assert matched_a == [MatchedTrip("a", "train", 600.0, 660.0, False, "abc123", 2_000)]
    assert matched_b.matched_at_ms == 2_500
    assert (matched_b.role, matched_b.challenger_version) == ("champion", None)
    assert len(join) == 0


def test_a_repeated_side_is_ignored():
    join = TripJoin(ttl_ms=60_000)
    join.add(prediction("a", 600.0), 1_000)
    assert join.add(prediction("a", 999.0), 1_100) == []
    [matched] = join.add(finish("a"), 1_200)
    assert matched.predicted_duration == 600.0


def test_unmatched_sides_expire_after_the_ttl():
    join = TripJoin(ttl_ms=10_000)
    join.add(prediction("a"), 1_000)
    join.add(finish("b"), 5_000)
    assert join.expire(11_000) == []
    expired = join.expire(11_001)
    assert [(p.key, p.unmatched()) for p in expired] == [
        (("train", "a"), [MetricsKey("train", "champion", "abc123", None)])
    ]
    [end_only] = join.expire(15_001)
    # A trip end alone names no model.
    assert end_only.unmatched() == [MetricsKey("train", "champion", UNKNOWN_MODEL, None)]
    assert join.add(finish("a"), 16_000) == []  # its prediction is gone


def test_the_sources_trips_never_match_each_other():
    # Real Kaggle train rows beside synthetic test rows can share an id (id1436027 did).
    join = TripJoin(ttl_ms=60_000)
    join.add(prediction("id1436027"), 1_000)
    assert join.add(events.trip_finished("id1436027", source="test"), 1_100) == []
    assert join.add(events.prediction("id1436027", source="test"), 1_200) != []
    [matched] = join.add(finish("id1436027"), 1_300)
    assert matched.source == "train"
    assert len(join) == 0


def test_a_challenged_trip_waits_for_its_challenger_then_makes_a_pair():
    join = TripJoin(ttl_ms=60_000)
    assert join.add(champion("a", 600.0), 1_000) == []
    # The champion's match is made at once; the trip then waits for its challenger.
    [alone] = join.add(finish("a", 660.0), 3_000)
    assert alone == MatchedTrip("a", "train", 600.0, 660.0, False, "m1", 3_000)
    assert len(join) == 1
    assert join.add(finish("a", 999.0), 3_500) == []  # redelivered: nothing changes
    pair = join.add(challenger("a", 700.0), 4_000)
    assert pair == [
        MatchedTrip("a", "train", 700.0, 660.0, False, "c2", 4_000, "challenger", "c2"),
        MatchedTrip("a", "train", 600.0, 660.0, False, "m1", 4_000, "champion", "c2"),
    ]
    assert len(join) == 0


def test_a_challenger_arriving_first_makes_the_trip_wait_for_it():
    join = TripJoin(ttl_ms=60_000)
    assert join.add(challenger("a"), 1_000) == []
    # The champion's prediction named no challenger; the one that predicted counts.
    assert join.add(champion("a", challenger=None), 1_000) == []
    matches = join.add(finish("a"), 2_000)
    assert [(m.role, m.model_version, m.challenger_version) for m in matches] == [
        ("champion", "m1", None),
        ("challenger", "c2", "c2"),
        ("champion", "m1", "c2"),
    ]
    assert len(join) == 0


def test_an_expired_challenged_trip_counts_unmatched_for_the_figures_it_missed():
    join = TripJoin(ttl_ms=10_000)
    join.add(champion("a"), 1_000)
    join.add(finish("a"), 2_000)  # the champion's match: only the pair is missing
    join.add(champion("b"), 1_000)  # neither
    join.add(challenger("c"), 1_000)  # only a challenger: the champion's figures are not concerned
    expired = {p.key[1]: p.unmatched() for p in join.expire(11_001)}
    pair = [
        MetricsKey("train", "champion", "m1", "c2"),
        MetricsKey("train", "challenger", "c2", "c2"),
    ]
    assert expired == {
        "a": pair,
        "b": [MetricsKey("train", "champion", "m1", None), *pair],
        "c": [MetricsKey("train", "champion", UNKNOWN_MODEL, "c2"), pair[1]],
    }


trip_ids = st.lists(st.text("abcdef", min_size=1, max_size=4), unique=True, max_size=30)


@given(trip_ids, st.data())
def test_each_match_pairs_a_trips_own_sides_and_the_rest_expire(ids, data):
    """Without a challenger, in any order of arrival and at any pace: a trip whose second side
    comes within the TTL of its first is matched, with its own prediction and its own end; any
    other trip's sides are both reported expired, and nothing is left waiting."""
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
        for matched in join.add(event, now):
            matches[matched.trip_id] = matched
    expired += join.expire(sum(gaps) + ttl + 1)

    sides = [(p.key[1], "prediction" if p.champion else "finish") for p in expired]
    assert all(len(p.sides()) == 1 for p in expired)
    for trip in ids:
        first, second = sorted((arrived[(trip, "prediction")], arrived[(trip, "finish")]))
        if second - first <= ttl:
            matched = matches.pop(trip)
            assert (matched.predicted_duration, matched.actual_duration) == durations[trip]
            assert matched.matched_at_ms == second
        else:
            assert trip not in matches
            assert {(trip, "prediction"), (trip, "finish")} <= set(sides)
    assert matches == {}
    assert len(sides) == len(set(sides))  # each side once
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
    matches = [m for i, event in enumerate(order) for m in join.add(event, i)]
    assert sorted((m.source, m.trip_id) for m in matches) == sorted(trips)
    for m in matches:
        assert (m.predicted_duration, m.actual_duration) == durations[(m.source, m.trip_id)]
    assert len(join) == 0


# -- three sides: the champion's prediction, a challenger's, the end --------------------------

TTL = 1_000


@st.composite
def shadowed_trips(draw: st.DrawFn, span_ms: int = TTL) -> list[list[tuple[object, int]]]:
    """Trips, each its sides with their record times within `span_ms`: every trip has the
    champion's prediction and an end; while a challenger is deployed (c2 or c3, named by the
    champion's prediction) also the challenger's prediction. Durations distinct per side."""
    ids = draw(st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=15))
    found = []
    for i, trip_id in enumerate(ids):
        source = draw(st.sampled_from(["train", "test"]))
        version = draw(st.sampled_from([None, "c2", "c3"]))
        sides: list[Prediction | TripFinished] = [
            events.prediction(
                trip_id,
                source=source,
                predicted_duration=100.0 + i,
                model_version="m1",
                challenger_version=version,
            ),
            events.trip_finished(trip_id, source=source, trip_duration=1_000.0 + i),
        ]
        if version is not None:
            sides.append(
                events.prediction(
                    trip_id,
                    source=source,
                    predicted_duration=500.0 + i,
                    model_version=version,
                    role="challenger",
                )
            )
        times = draw(st.lists(st.integers(0, span_ms), min_size=len(sides), max_size=len(sides)))
        found.append(list(zip(sides, times, strict=True)))
    return found


def expected_matches(trips: list[list[tuple[object, int]]]) -> Counter[MatchedTrip]:
    """What the trips' sides make, worked out per trip from its own sides."""
    expected: Counter[MatchedTrip] = Counter()
    for sides in trips:
        by_kind = {"finish" if isinstance(e, TripFinished) else e.role: (e, at) for e, at in sides}
        (end, end_at), (champ, champ_at) = by_kind["finish"], by_kind["champion"]

        def match(p: Prediction, at: int, version: str | None, end=end) -> MatchedTrip:
            return MatchedTrip(
                end.trip_id,
                end.source,
                p.predicted_duration,
                end.trip_duration,
                end.is_estimate,
                p.model_version,
                at,
                p.role,
                version,
            )

        expected[match(champ, max(champ_at, end_at), None)] += 1
        if "challenger" in by_kind:
            rival, rival_at = by_kind["challenger"]
            last = max(champ_at, end_at, rival_at)
            expected[match(rival, last, rival.model_version)] += 1
            expected[match(champ, last, rival.model_version)] += 1
    return expected


@given(shadowed_trips(), st.data())
def test_any_order_of_the_three_sides_gives_the_same_matches(trips, data):
    """Within the TTL, the sides of every trip arriving in any order (the three topics are read
    at their own pace): each trip makes its champion's match and, when challenged, its pair;
    nothing else, and nothing is left waiting."""
    order = data.draw(st.permutations([side for sides in trips for side in sides]))
    join = TripJoin(ttl_ms=TTL)
    matches: Counter[MatchedTrip] = Counter()
    now = 0
    for event, at in order:
        now = max(now, at)
        assert join.expire(now) == []
        matches.update(join.add(event, at))
    assert matches == expected_matches(trips)
    assert len(join) == 0


@given(shadowed_trips(), st.data())
def test_a_redelivered_side_changes_nothing(trips, data):
    sides = [side for sides in trips for side in sides]
    repeats = data.draw(st.lists(st.sampled_from(sides), max_size=10)) if sides else []
    order = data.draw(st.permutations(sides + repeats))
    join = TripJoin(ttl_ms=TTL)
    matches: Counter[MatchedTrip] = Counter()
    for event, at in order:
        # A repeat after its trip was done would wait anew, as before challengers: not this.
        if join.get((event.source, event.trip_id)) is None and any(
            m.trip_id == event.trip_id and m.source == event.source for m in matches
        ):
            continue
        matches.update(join.add(event, at))
    assert matches == expected_matches(trips)


def waits(sides: list[tuple[object, int]]) -> list[dict[str, object]]:
    """The sides that wait together, by kind, in record-time order: a trip waits from its first
    side on, and a side that comes more than the TTL after that first finds it expired and
    starts the wait anew."""
    found: list[dict[str, object]] = []
    first = None
    for event, at in sorted(sides, key=lambda side: side[1]):
        if first is None or at - first > TTL:
            found.append({})
            first = at
        found[-1]["finish" if isinstance(event, TripFinished) else event.role] = event
    return found


def missed(wait: dict[str, object]) -> list[MetricsKey]:
    """The figures a wait counts unmatched in: the champion's if it lacks the champion's
    prediction or the end (but not both), the pair's if a challenger is in play but missing
    a side."""
    source = next(iter(wait.values())).source
    champion = wait["champion"].model_version if "champion" in wait else UNKNOWN_MODEL
    rival = wait.get("challenger")
    version = (
        rival.model_version if rival else getattr(wait.get("champion"), "challenger_version", None)
    )
    keys = []
    if ("champion" in wait) != ("finish" in wait):
        keys.append(MetricsKey(source, "champion", champion, None))
    if version is not None and len(wait) < 3:
        keys += [
            MetricsKey(source, "champion", champion, version),
            MetricsKey(source, "challenger", version, version),
        ]
    return keys


@given(shadowed_trips(span_ms=4 * TTL), st.randoms())
def test_trips_make_what_their_sides_within_the_ttl_make_and_count_the_rest(trips, rng):
    """In record-time order, at any pace: a trip makes its champion's match if the champion's
    prediction and its end wait together (within the TTL of the first side waiting), and its
    pair if all three do; each pair has one match per role; each figure a trip misses counts
    it as unmatched."""
    timed = [(at, event) for sides in trips for event, at in sides]
    rng.shuffle(timed)
    timed.sort(key=lambda side: side[0])  # stable: ties stay shuffled
    join = TripJoin(ttl_ms=TTL)
    matches: list[MatchedTrip] = []
    unmatched: Counter[MetricsKey] = Counter()
    for at, event in timed:
        for expired in join.expire(at):
            unmatched.update(expired.unmatched())
        matches += join.add(event, at)
    for expired in join.expire(4 * TTL + TTL + 1):
        unmatched.update(expired.unmatched())
    assert len(join) == 0

    expected_unmatched: Counter[MetricsKey] = Counter()
    for sides in trips:
        together = waits(sides)
        trip = sides[0][0]
        mine = [m for m in matches if (m.source, m.trip_id) == (trip.source, trip.trip_id)]
        champion_match = [m for m in mine if m.challenger_version is None]
        pair = [m for m in mine if m.challenger_version is not None]
        assert len(champion_match) == int(any({"champion", "finish"} <= w.keys() for w in together))
        assert len(pair) == 2 * int(any(len(w) == 3 for w in together))
        assert sorted(m.role for m in pair) == ["challenger", "champion"][: len(pair)]
        expected_unmatched.update(key for wait in together for key in missed(wait))
    assert unmatched == expected_unmatched

    # Head to head, both roles have the same matched and unmatched counts, per challenger.
    for version in ("c2", "c3"):
        for role_count in (
            Counter(m.role for m in matches if m.challenger_version == version),
            Counter(k.role for k in unmatched.elements() if k.challenger_version == version),
        ):
            assert role_count["champion"] == role_count["challenger"]
