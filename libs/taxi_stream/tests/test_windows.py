import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_model import WITHIN_TOLERANCE
from taxi_stream import MatchedTrip, MetricsKey, QualityAccumulator, Tally, WindowedQuality

KEYS = [
    MetricsKey("train", "champion", "v1", None),
    MetricsKey("test", "champion", "v1", None),
    MetricsKey("train", "champion", "v2", None),
    MetricsKey("train", "champion", "v1", "c2"),
    MetricsKey("train", "challenger", "c2", "c2"),
    MetricsKey("test", "challenger", "c2", "c2"),
]


def champion(source: str) -> MetricsKey:
    return MetricsKey(source, "champion", "v1", None)


def match(
    at_ms: int, source: str = "train", predicted: float = 600.0, key: MetricsKey | None = None
) -> MatchedTrip:
    role, version, challenger = (key or champion(source))[1:]
    return MatchedTrip(
        f"t{at_ms}", source, predicted, 660.0, source == "test", version, at_ms, role, challenger
    )


def test_a_window_closes_after_its_end_plus_grace():
    windows = WindowedQuality(window_ms=10_000, grace_ms=2_000)
    windows.add_match(match(1_000))
    windows.add_match(match(9_999))
    windows.add_match(match(10_000))
    assert windows.advance(11_999) == []
    [closed] = windows.advance(12_000)
    assert (closed.source, closed.start_ms, closed.end_ms) == ("train", 0, 10_000)
    assert closed.window.quality.count == 2
    assert closed.cumulative.quality.count == 2
    assert closed.key == champion("train")
    [closed] = windows.advance(22_000)
    assert closed.window.quality.count == 1
    assert closed.cumulative.quality.count == 3


def test_sources_are_kept_apart():
    windows = WindowedQuality(window_ms=10_000, grace_ms=0)
    windows.add_match(match(1_000, "train"))
    windows.add_match(match(2_000, "test"))
    windows.add_unmatched(champion("test"), 3_000)
    closed = {c.source: c for c in windows.advance(10_000)}
    assert closed["train"].window.quality.count == 1
    assert closed["test"].window.quality.count == 1
    assert closed["test"].window.unmatched == 1
    assert closed["train"].window.unmatched == 0


def test_a_late_match_goes_to_the_oldest_open_window():
    windows = WindowedQuality(window_ms=10_000, grace_ms=2_000)
    windows.add_match(match(25_000))
    windows.advance(25_000)  # windows up to [10 s, 20 s) are closed
    windows.add_match(match(5_000))
    [closed] = windows.advance(32_000)
    assert closed.start_ms == 20_000
    assert closed.window.quality.count == 2


def test_the_watermark_never_goes_back():
    windows = WindowedQuality()
    windows.advance(50_000)
    windows.advance(10_000)
    assert windows.watermark_ms == 50_000


events = st.lists(
    st.tuples(st.integers(0, 120_000), st.sampled_from(KEYS), st.booleans()),
    max_size=60,
)


def add(windows: WindowedQuality, at_ms: int, key: MetricsKey, matched: bool) -> None:
    if matched:
        windows.add_match(match(at_ms, key.source, key=key))
    else:
        windows.add_unmatched(key, at_ms)


@given(events, st.lists(st.integers(0, 150_000), max_size=10))
def test_windows_add_up_to_the_cumulative_figures(arrivals, advances):
    """Whatever the order and timing, nothing is lost: closed windows sum to the cumulative,
    per source, role, model version and challenger."""
    windows = WindowedQuality(window_ms=10_000, grace_ms=2_000)
    closed = []
    ticks = iter(sorted(advances))
    for at_ms, key, matched in arrivals:
        add(windows, at_ms, key, matched)
        closed += windows.advance(next(ticks, at_ms))
    closed += windows.advance(10**9)
    assert not windows.open_windows
    for key in KEYS:
        mine = [c for c in closed if c.key == key]
        total = QualityAccumulator()
        for c in mine:
            total.merge(c.window.quality)
        expected_matches = sum(1 for _, k, m in arrivals if k == key and m)
        expected_unmatched = sum(1 for _, k, m in arrivals if k == key and not m)
        assert total.count == expected_matches
        assert sum(c.window.unmatched for c in mine) == expected_unmatched
        if mine:
            assert mine[-1].cumulative.quality.count == expected_matches
            assert mine[-1].cumulative.unmatched == expected_unmatched
        starts = [c.start_ms for c in mine]
        assert starts == sorted(set(starts))  # each window closes once, in order


def assert_figures_of(tally: Tally, trips: list[tuple[float, float]]) -> None:
    """`tally`'s figures against a direct computation over (predicted, actual) `trips`."""
    metrics = tally.quality.metrics()
    assert metrics.count == len(trips)
    if not trips:
        return
    predicted, actual = (np.array(column) for column in zip(*trips, strict=True))
    log_errors = np.log1p(predicted) - np.log1p(actual)
    assert metrics.rmsle == pytest.approx(math.sqrt(np.mean(log_errors**2)), rel=1e-9, abs=1e-12)
    assert metrics.mae == pytest.approx(np.mean(np.abs(predicted - actual)), rel=1e-9)
    within = np.mean(np.abs(predicted - actual) <= WITHIN_TOLERANCE * actual)
    assert metrics.within_30 == pytest.approx(within)


durations = st.floats(1.0, 7_200.0)


@given(
    st.lists(
        st.tuples(st.integers(0, 60_000), st.sampled_from(["train", "test"]), durations, durations),
        max_size=40,
    )
)
def test_each_windows_figures_are_those_of_its_own_trips(trips):
    """Every trip with an error of its own: each window's RMSLE, MAE and share within 30% are
    those of the trips matched in its span, and the cumulative ones those of every trip of its
    source up to its end."""
    windows = WindowedQuality(window_ms=10_000, grace_ms=2_000)
    for i, (at_ms, source, predicted, actual) in enumerate(trips):
        windows.add_match(MatchedTrip(f"t{i}", source, predicted, actual, False, "v1", at_ms))
    closed = windows.advance(10**9)
    assert sum(c.window.quality.count for c in closed) == len(trips)
    for c in closed:
        of_source = [(at, p, a) for at, source, p, a in trips if source == c.source]
        in_span = [(p, a) for at, p, a in of_source if c.start_ms <= at < c.end_ms]
        assert_figures_of(c.window, in_span)
        assert_figures_of(c.cumulative, [(p, a) for at, p, a in of_source if at < c.end_ms])


@given(events)
def test_state_survives_json(arrivals):
    windows = WindowedQuality()
    for at_ms, key, matched in arrivals:
        add(windows, at_ms, key, matched)
        windows.advance(at_ms - 15_000)
    restored = WindowedQuality.from_json(json.loads(json.dumps(windows.to_json())))
    assert restored == windows
    assert restored.advance(10**9) == windows.advance(10**9)


def test_metrics_of_a_closed_window():
    windows = WindowedQuality(window_ms=1_000, grace_ms=0)
    windows.add_match(match(10, predicted=660.0))
    [closed] = windows.advance(1_000)
    metrics = closed.window.quality.metrics()
    assert metrics.rmsle == pytest.approx(0.0)
    assert metrics.within_30 == 1.0


# -- windows written before challengers (format 1: one tally per source) ----------------------

# What the aggregator wrote to aggregator_changelog under "windows" before issue 19.
FORMAT_1 = (
    b'{"window_ms":10000,"grace_ms":2000,"watermark_ms":17000,"open_windows":[["train",10000,'
    b'{"quality":{"count":1,"sum_squared_log_error":0.01778303862037015,"sum_absolute_error":'
    b'100.0,"within_30":1,"ape_histogram":{"-170":1}},"unmatched":0,"model_version":"m1"}],'
    b'["test",10000,{"quality":{"count":0,"sum_squared_log_error":0.0,"sum_absolute_error":0.0,'
    b'"within_30":0,"ape_histogram":{}},"unmatched":2,"model_version":null}]],"cumulative":'
    b'{"test":{"quality":{"count":1,"sum_squared_log_error":0.011054159187035737,'
    b'"sum_absolute_error":50.0,"within_30":1,"ape_histogram":{"-191":1}},"unmatched":0,'
    b'"model_version":"m1"},"train":{"quality":{"count":3,"sum_squared_log_error":'
    b'0.09165889412079051,"sum_absolute_error":320.0,"within_30":3,"ape_histogram":{"-209":1,'
    b'"-140":1,"-121":1}},"unmatched":0,"model_version":"m1"}}}'
)


def test_windows_of_format_1_are_the_champions_figures():
    windows = WindowedQuality.from_json(json.loads(FORMAT_1))
    train, test = (
        champion("train")._replace(model_version="m1"),
        champion("test")._replace(model_version="m1"),
    )
    assert (windows.window_ms, windows.grace_ms, windows.watermark_ms) == (10_000, 2_000, 17_000)
    assert sorted(windows.open_windows) == [(test, 10_000), (train, 10_000)]
    # The window that matched nothing takes its source's version.
    assert windows.open_windows[test, 10_000].unmatched == 2
    assert windows.cumulative[train].quality.count == 3
    assert windows.cumulative[train].quality.sum_absolute_error == 320.0
    closed = {c.key: c for c in windows.advance(22_000)}
    assert closed[train].cumulative.quality.count == 4
    assert closed[test].cumulative.quality.count == 1
    assert closed[test].cumulative.unmatched == 2
    assert WindowedQuality.from_json(json.loads(json.dumps(windows.to_json()))) == windows


def test_windows_of_an_unknown_format_are_refused():
    data = {**WindowedQuality().to_json(), "format": 3}
    with pytest.raises(ValueError, match="format 3"):
        WindowedQuality.from_json(data)


pairs = st.lists(st.tuples(durations, durations), max_size=4)
old_tallies = st.tuples(pairs, st.integers(0, 3), st.sampled_from([None, "m1", "m2"]))


def old_tally(tally: tuple) -> dict:
    trips, unmatched, version = tally
    quality = QualityAccumulator()
    quality.add([a for _, a in trips], [p for p, _ in trips])
    return {"quality": quality.to_json(), "unmatched": unmatched, "model_version": version}


@given(
    st.dictionaries(st.sampled_from(["train", "test"]), old_tallies),
    st.dictionaries(st.tuples(st.sampled_from(["train", "test"]), st.integers(3, 5)), old_tallies),
)
def test_any_format_1_state_migrates_figure_for_figure(cumulative, open_windows):
    """Every tally of format 1 comes back, unchanged, as the champion's figures on all its
    trips (challenger None) under the version it named, else its source's, else unknown; the
    windows then go on adding up to the cumulative figures per key."""
    old = {
        "window_ms": 10_000,
        "grace_ms": 2_000,
        "watermark_ms": 35_000,  # windows from 30 s on are open
        "open_windows": [
            [source, start * 10_000, old_tally(t)] for (source, start), t in open_windows.items()
        ],
        "cumulative": {source: old_tally(t) for source, t in cumulative.items()},
    }
    windows = WindowedQuality.from_json(json.loads(json.dumps(old)))

    def key(source: str, version: str | None) -> MetricsKey:
        fallback = cumulative.get(source, (None, None, None))[2]
        return MetricsKey(source, "champion", version or fallback or "unknown", None)

    assert windows.cumulative == {
        key(source, t[2]): Tally.from_json(old_tally(t)) for source, t in cumulative.items()
    }
    assert windows.open_windows == {
        (key(source, t[2]), start * 10_000): Tally.from_json(old_tally(t))
        for (source, start), t in open_windows.items()
    }
    before = {k: (t.quality.count, t.unmatched) for k, t in windows.cumulative.items()}
    closed = windows.advance(10**9)
    for k in {c.key for c in closed}:
        mine = [c for c in closed if c.key == k]
        count, unmatched = before.get(k, (0, 0))
        assert mine[-1].cumulative.quality.count == count + sum(
            c.window.quality.count for c in mine
        )
        assert mine[-1].cumulative.unmatched == unmatched + sum(c.window.unmatched for c in mine)
