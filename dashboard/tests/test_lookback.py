"""Where the reader starts in a partition: by time, capped by count, within the log."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from taxi_dashboard.lookback import HISTORY_S, lookback_s, since_ms, start_offset


def test_start_at_the_first_record_of_the_look_back():
    assert start_offset(low=0, high=1_000, at_time=900, max_records=500) == 900


def test_no_record_that_recent_means_start_at_the_end():
    assert start_offset(low=0, high=1_000, at_time=-1, max_records=500) == 1_000


def test_a_busy_partition_is_read_back_no_more_than_the_cap():
    assert start_offset(low=0, high=100_000, at_time=10, max_records=500) == 99_500


def test_records_deleted_by_retention_are_not_asked_for():
    assert start_offset(low=800, high=1_000, at_time=10, max_records=500) == 800


def test_history_topics_read_back_further_than_trips():
    assert lookback_s("ml_predictions", 60) == 60
    assert lookback_s("model_metrics", 60) == HISTORY_S
    assert lookback_s("dead_letters", 3 * HISTORY_S) == 3 * HISTORY_S


def test_the_models_history_is_read_from_its_first_record():
    assert lookback_s("model_deployments", 60) == math.inf
    assert lookback_s("model_events", 60) == math.inf
    assert since_ms(1_000.0, math.inf) == 0
    assert since_ms(1_000.0, 60) == 940_000
    # Never negative: offsets_for_times reads -1 and -2 as the end and the beginning.
    assert since_ms(10.0, HISTORY_S) == 0


@given(
    low=st.integers(0, 10**6),
    size=st.integers(0, 10**6),
    at_time=st.integers(-1, 3 * 10**6),
    cap=st.integers(0, 10**4),
)
def test_the_start_is_within_the_log_and_within_the_cap(low, size, at_time, cap):
    high = low + size
    start = start_offset(low, high, at_time, cap)
    assert low <= start <= high
    assert high - start <= cap
