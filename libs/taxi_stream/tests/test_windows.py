import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_model import WITHIN_TOLERANCE
from taxi_stream import MatchedTrip, QualityAccumulator, Tally, WindowedQuality


def match(at_ms: int, source: str = "train", predicted: float = 600.0) -> MatchedTrip:
    return MatchedTrip(f"t{at_ms}", source, predicted, 660.0, source == "test", "v1", at_ms)


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
    assert closed.window.model_version == "v1"
    [closed] = windows.advance(22_000)
    assert closed.window.quality.count == 1
    assert closed.cumulative.quality.count == 3


def test_sources_are_kept_apart():
    windows = WindowedQuality(window_ms=10_000, grace_ms=0)
    windows.add_match(match(1_000, "train"))
    windows.add_match(match(2_000, "test"))
    windows.add_unmatched("test", 3_000)
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
    st.tuples(st.integers(0, 120_000), st.sampled_from(["train", "test"]), st.booleans()),
    max_size=60,
)


@given(events, st.lists(st.integers(0, 150_000), max_size=10))
def test_windows_add_up_to_the_cumulative_figures(arrivals, advances):
    """Whatever the order and timing, nothing is lost: closed windows sum to the cumulative."""
    windows = WindowedQuality(window_ms=10_000, grace_ms=2_000)
    closed = []
    ticks = iter(sorted(advances))
    for at_ms, source, matched in arrivals:
        if matched:
            windows.add_match(match(at_ms, source))
        else:
            windows.add_unmatched(source, at_ms)
        closed += windows.advance(next(ticks, at_ms))
    closed += windows.advance(10**9)
    assert not windows.open_windows
    for source in ("train", "test"):
        mine = [c for c in closed if c.source == source]
        total = QualityAccumulator()
        for c in mine:
            total.merge(c.window.quality)
        expected_matches = sum(1 for _, s, m in arrivals if s == source and m)
        expected_unmatched = sum(1 for _, s, m in arrivals if s == source and not m)
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
    for at_ms, source, matched in arrivals:
        if matched:
            windows.add_match(match(at_ms, source))
        else:
            windows.add_unmatched(source, at_ms)
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
