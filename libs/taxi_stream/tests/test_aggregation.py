import json
from collections import Counter
from operator import attrgetter

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taxi_events import ModelMetrics, Prediction, TripFinished, encode
from taxi_events import testing as events
from taxi_model import quality_metrics
from taxi_stream import Aggregation, WindowedQuality

CHALLENGER = "c2"


# Trips 2k (test) and 2k + 1 (train) share the id t<k>: the two sources number their trips
# independently, as real Kaggle train rows beside synthetic test rows do.
def trip_id(n: int) -> str:
    return f"t{n // 2}"


def source(n: int) -> str:
    return "train" if n % 2 else "test"


def challenged(n: int) -> bool:
    """Trips the challenger predicts too (it was deployed for some of them only)."""
    return n % 3 != 0


def prediction(n: int, challenger: str | None = None) -> Prediction:
    return events.prediction(
        trip_id(n),
        source=source(n),
        predicted_duration=300.0 + 7 * n,
        model_version="m1",
        challenger_version=challenger,
    )


def shadow(n: int) -> Prediction:
    return events.prediction(
        trip_id(n),
        source=source(n),
        predicted_duration=250.0 + 11 * n,
        model_version=CHALLENGER,
        role="challenger",
    )


def finish(n: int) -> TripFinished:
    return events.trip_finished(
        trip_id(n), source=source(n), trip_duration=200.0 + 13 * n, is_estimate=n % 2 == 0
    )


def sides(n: int) -> dict[str, Prediction | TripFinished]:
    """A trip's sides as the predictor and producer write them, by kind."""
    found: dict[str, Prediction | TripFinished] = {"finish": finish(n)}
    found["champion"] = prediction(n, CHALLENGER if challenged(n) else None)
    if challenged(n):
        found["challenger"] = shadow(n)
    return found


def create() -> Aggregation:
    return Aggregation.create(ttl_ms=60_000, window_ms=10_000, grace_ms=2_000)


def replay_changes(changelog: dict[str, bytes | None]) -> Aggregation:
    rebuilt = create()
    for key, value in changelog.items():
        rebuilt.apply_change(key, value)
    return rebuilt


def cumulative_by_key(published: list[ModelMetrics]) -> dict[tuple, ModelMetrics]:
    """The last cumulative record of each source, role, model version and challenger."""
    return {
        (m.source, m.role, m.model_version, m.challenger_version): m
        for m in published
        if m.scope == "cumulative"
    }


def test_cumulative_metrics_equal_an_offline_evaluation():
    agg = create()
    for n in range(200):  # every prediction waits, its id shared with the other source's
        for kind, side in sides(n).items():
            if kind != "finish":
                agg.add(side, 1_000 + n * 10)
    for n in range(200):
        agg.add(finish(n), 3_000 + n * 10)
    published = agg.advance(10**7)
    cumulative = cumulative_by_key(published)
    train = [n for n in range(200) if n % 2]
    head_to_head = [n for n in train if challenged(n)]

    def offline(trips: list[int], predicted: list[float]) -> object:
        return quality_metrics([200.0 + 13 * n for n in trips], predicted)

    expected = {
        ("train", "champion", "m1", None): offline(train, [300.0 + 7 * n for n in train]),
        ("train", "champion", "m1", CHALLENGER): offline(
            head_to_head, [300.0 + 7 * n for n in head_to_head]
        ),
        ("train", "challenger", CHALLENGER, CHALLENGER): offline(
            head_to_head, [250.0 + 11 * n for n in head_to_head]
        ),
    }
    assert {k for k in cumulative if k[0] == "train"} == expected.keys()
    for key, figures in expected.items():
        assert cumulative[key].count == figures.count
        assert cumulative[key].rmsle == pytest.approx(figures.rmsle, abs=1e-9)
        assert cumulative[key].mae == pytest.approx(figures.mae, abs=1e-9)
        assert cumulative[key].unmatched == 0
    assert cumulative["train", "champion", "m1", None].count == 100
    assert cumulative["train", "challenger", CHALLENGER, CHALLENGER].count == len(head_to_head)
    assert {m.scope for m in published} == {"window", "cumulative"}


def test_unmatched_sides_expire_and_are_counted():
    agg = Aggregation.create(ttl_ms=5_000, window_ms=10_000, grace_ms=0)
    agg.add(prediction(1), 1_000)
    agg.add(finish(3), 1_000)
    agg.add(prediction(5, CHALLENGER), 1_000)  # its challenger's prediction never comes
    agg.add(finish(5), 1_000)
    agg.advance(7_000)
    assert len(agg.join) == 0
    cumulative = cumulative_by_key(agg.advance(20_000))
    assert {key: (m.count, m.unmatched) for key, m in cumulative.items()} == {
        ("train", "champion", "m1", None): (1, 1),  # trip 5 matched, trip 1 not
        ("train", "champion", "unknown", None): (0, 1),  # trip 3's end named no model
        ("train", "champion", "m1", CHALLENGER): (0, 1),
        ("train", "challenger", CHALLENGER, CHALLENGER): (0, 1),
    }
    assert cumulative["train", "champion", "unknown", None].rmsle is None


def test_the_windows_are_serialised_once_per_batch(monkeypatch):
    # Once per event, it cost ~0.7 ms an event when the histograms had filled: the aggregator
    # then kept up with ~700 trips/s at most.
    serialised = []
    to_json = WindowedQuality.to_json

    def counted_to_json(windows: WindowedQuality) -> dict:
        serialised.append(windows)
        return to_json(windows)

    monkeypatch.setattr(WindowedQuality, "to_json", counted_to_json)
    agg = create()
    for n in range(100):
        agg.add(prediction(n), 1_000 + n * 10)
        agg.add(finish(n), 3_000 + n * 10)
    agg.advance(15_000)
    assert serialised == []
    changes = agg.take_changes()
    assert len(serialised) == 1
    assert json.loads(changes["windows"]) == to_json(agg.windows)
    assert "windows" not in agg.take_changes()  # nothing changed since


KINDS = ("champion", "challenger", "finish")
batches = st.lists(
    st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from(KINDS), st.integers(0, 30_000)),
        max_size=15,
    ),
    max_size=8,
)


def run(
    agg: Aggregation,
    batches: list,
    changelog: dict[str, bytes | None],
    clock: int,
    published: list[ModelMetrics] | None = None,
) -> int:
    """Feed `batches` of (trip, kind of side, time step), writing each batch's changes to
    `changelog` as the aggregator commits them, and what it publishes to `published`; the
    record time reached."""
    for batch in batches:
        for n, kind, dt in batch:
            clock += dt
            side = sides(n).get(kind)
            if side is not None:
                agg.add(side, clock)
        (published if published is not None else []).extend(agg.advance(clock))
        changelog.update(agg.take_changes())
    return clock


def assert_same_state(rebuilt: Aggregation, agg: Aggregation) -> None:
    key = attrgetter("key")
    assert sorted(rebuilt.join.pending(), key=key) == sorted(agg.join.pending(), key=key)
    assert rebuilt.windows == agg.windows
    assert rebuilt.drift.to_json() == agg.drift.to_json()
    assert without_times(rebuilt.advance(10**9)) == without_times(agg.advance(10**9))


@settings(deadline=None, max_examples=60)
@given(batches)
def test_the_changelog_rebuilds_the_exact_state(batches):
    agg = create()
    changelog: dict[str, bytes | None] = {}
    run(agg, batches, changelog, 0)
    assert_same_state(replay_changes(changelog), agg)


@settings(deadline=None, max_examples=60)
@given(batches)
def test_windows_add_up_and_both_roles_count_the_same_trips(batches):
    """Whatever arrives when: each key's windows add up to its cumulative figures, and head to
    head both roles have the same matched and unmatched counts."""
    agg = create()
    published: list[ModelMetrics] = []
    clock = run(agg, batches, {}, 0, published)
    published += agg.advance(clock + 10**9)
    for key, last in cumulative_by_key(published).items():
        windows = [
            m
            for m in published
            if m.scope == "window"
            and (m.source, m.role, m.model_version, m.challenger_version) == key
        ]
        assert sum(m.count for m in windows) == last.count
        assert sum(m.unmatched for m in windows) == last.unmatched
    head_to_head = Counter()
    for (source_, role, _, challenger), m in cumulative_by_key(published).items():
        if challenger is not None:
            head_to_head[source_, role, "count"] += m.count
            head_to_head[source_, role, "unmatched"] += m.unmatched
    for source_ in ("train", "test"):
        for figure in ("count", "unmatched"):
            assert (
                head_to_head[source_, "champion", figure]
                == head_to_head[source_, "challenger", figure]
            )


def without_times(metrics: list) -> list:
    return [attrs.evolve(m, produced_at=events.PRODUCED) for m in metrics]


@pytest.mark.parametrize("key", ["join/t1", "join/other/t1", "join/train/", "states"])
def test_a_changelog_key_it_does_not_know_is_refused(key):
    agg = create()
    with pytest.raises(ValueError, match="Delete its changelog topic"):
        agg.apply_change(key, None)


# -- changelogs written before challengers (format 1) -----------------------------------------

# aggregator_changelog as the aggregator left it before issue 19, events of schema 1.0: trips
# t1-t3 (train) and t1 (test) matched in the window [0, 10 s), t7 (train) in the open window
# [10 s, 20 s); t4's prediction and t5's end waiting.
FORMAT_1: dict[str, bytes | None] = {
    "join/train/t1": None,
    "join/test/t1": None,
    "windows": (
        b'{"window_ms":10000,"grace_ms":2000,"watermark_ms":17000,"open_windows":[["train",'
        b'10000,{"quality":{"count":1,"sum_squared_log_error":0.01778303862037015,'
        b'"sum_absolute_error":100.0,"within_30":1,"ape_histogram":{"-170":1}},"unmatched":0,'
        b'"model_version":"m1"}]],"cumulative":{"test":{"quality":{"count":1,'
        b'"sum_squared_log_error":0.011054159187035737,"sum_absolute_error":50.0,'
        b'"within_30":1,"ape_histogram":{"-191":1}},"unmatched":0,"model_version":"m1"},'
        b'"train":{"quality":{"count":3,"sum_squared_log_error":0.09165889412079051,'
        b'"sum_absolute_error":320.0,"within_30":3,"ape_histogram":{"-209":1,"-140":1,'
        b'"-121":1}},"unmatched":0,"model_version":"m1"}}}'
    ),
    "join/train/t4": (
        b'{"arrived_at_ms":16000,"event":{"dropoff_latitude":40.77,"dropoff_longitude":-73.96,'
        b'"model_version":"m1","pickup_datetime":"2016-03-01T08:00:00","pickup_latitude":40.75,'
        b'"pickup_longitude":-73.98,"predicted_at":"2026-01-01T00:00:00+00:00",'
        b'"predicted_duration":700.0,"produced_at":"2026-01-01T00:00:00+00:00",'
        b'"schema_version":"1.0","source":"train","trip_id":"t4",'
        b'"trip_started_at":"2026-01-01T00:00:00+00:00"},"side":"prediction"}'
    ),
    "join/train/t5": (
        b'{"arrived_at_ms":17000,"event":{"dropoff_datetime":"2016-03-01T08:00:00",'
        b'"is_estimate":false,"produced_at":"2026-01-01T00:00:00+00:00","schema_version":"1.0",'
        b'"source":"train","trip_duration":900.0,"trip_id":"t5"},"side":"finish"}'
    ),
}


def test_a_changelog_of_format_1_is_migrated():
    agg = replay_changes(FORMAT_1)
    waiting = {p.key: p for p in agg.join.pending()}
    assert waiting.keys() == {("train", "t4"), ("train", "t5")}
    t4, t5 = waiting["train", "t4"], waiting["train", "t5"]
    assert t4.champion is not None
    assert (t4.champion.arrived_at_ms, t4.challenger, t4.finish) == (16_000, None, None)
    assert (t4.champion.event.predicted_duration, t4.champion.event.role) == (700.0, "champion")
    assert t5.finish is not None
    assert (t5.finish.arrived_at_ms, t5.champion) == (17_000, None)
    # Their partners match them as before; all is the champion's, over all its trips.
    agg.add(events.trip_finished("t4", trip_duration=650.0), 18_000)
    agg.add(events.prediction("t5", predicted_duration=950.0, model_version="m1"), 18_500)
    cumulative = cumulative_by_key(agg.advance(10**6))
    assert {key: m.count for key, m in cumulative.items()} == {("train", "champion", "m1", None): 6}
    assert {key: t.quality.count for key, t in agg.windows.cumulative.items()} == {
        ("train", "champion", "m1", None): 6,
        ("test", "champion", "m1", None): 1,
    }
    offline = quality_metrics([660, 240, 1000, 700, 650, 900], [600, 300, 1200, 800, 700, 950])
    assert cumulative["train", "champion", "m1", None].rmsle == pytest.approx(offline.rmsle)
    assert cumulative["train", "champion", "m1", None].mae == pytest.approx(offline.mae)


old_trips = st.dictionaries(
    st.integers(0, 40), st.tuples(st.booleans(), st.integers(10_000, 17_000)), max_size=12
)


def format_1_side(n: int, is_prediction: bool, arrived_at_ms: int) -> bytes:
    """A waiting side as the aggregator wrote it before issue 19, its event of schema 1.0."""
    event = json.loads(encode(prediction(n) if is_prediction else finish(n)))
    event.pop("role", None)
    event.pop("challenger_version", None)
    event["schema_version"] = "1.0"
    body = {
        "side": "prediction" if is_prediction else "finish",
        "arrived_at_ms": arrived_at_ms,
        "event": event,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


@settings(deadline=None, max_examples=60)
@given(old_trips, batches)
def test_a_changelog_begun_in_format_1_rebuilds_the_exact_state(old, batches):
    """Day two: the changelog holds format 1 (sides waiting, windows per source) under the
    records this version writes on top of it. Replayed, it rebuilds exactly the state of the
    aggregator that started from the old records and went on."""
    changelog = dict(FORMAT_1)
    changelog.update(
        {
            f"join/{source(n)}/{trip_id(n)}": format_1_side(n, is_prediction, at)
            for n, (is_prediction, at) in old.items()
        }
    )
    agg = replay_changes(changelog)
    for n, (is_prediction, at) in old.items():
        waiting = agg.join[source(n), trip_id(n)]
        [side] = waiting.sides()
        assert side is (waiting.champion if is_prediction else waiting.finish)
        assert side.arrived_at_ms == at
        assert side.event == attrs.evolve(
            prediction(n) if is_prediction else finish(n), schema_version="1.0"
        )
    run(agg, batches, changelog, 17_000)
    assert_same_state(replay_changes(changelog), agg)


SLOWED_FROM = 1_000


def slowed_trip(n: int) -> list[Prediction | TripFinished]:
    """A train trip whose model was right to within ±30% until trip SLOWED_FROM; from then on
    every trip takes 1.5 times as long. (Page-Hinkley weighs a change against the mean since it
    armed: it needs steady trips first, see docs/drift.md.)"""
    usual = 200.0 + (37 * n) % 1_500
    return [
        events.prediction(
            f"s{n}", source="train", predicted_duration=usual * (0.7 + 0.05 * (n % 13))
        ),
        events.trip_finished(
            f"s{n}", source="train", trip_duration=usual * (1.5 if n >= SLOWED_FROM else 1)
        ),
    ]


@pytest.mark.parametrize("restart_every", [None, 3, 7, 50])
def test_a_drift_is_detected_once_at_the_same_trip_however_often_it_restarts(restart_every):
    agg = create()
    changelog: dict[str, bytes | None] = {}
    alarms = []
    for n in range(SLOWED_FROM + 600):
        for side in slowed_trip(n):
            agg.add(side, n * 100)
        changelog.update(agg.take_changes())
        alarms += [(n, alarm) for alarm in agg.take_alarms()]
        if restart_every and n % restart_every == 0:
            agg = replay_changes(changelog)
    assert [(n, a.kind, a.source, a.model_version) for n, a in alarms] == [
        (alarms[0][0], "concept-drift", "train", "abc123")
    ]
    assert SLOWED_FROM < alarms[0][0] < SLOWED_FROM + 500
    assert alarms[0][1].first_trip_id == "s0"
