"""Bounded buffers: fixed maximum sizes, oldest out first, rates by event time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_dashboard.buffers import BoundedMap, RateMeter


def test_the_oldest_write_is_evicted_first():
    buffer: BoundedMap[str, int] = BoundedMap(2)
    buffer.put("a", 1)
    buffer.put("b", 2)
    buffer.put("a", 3)  # rewriting makes "a" the newest
    buffer.put("c", 4)
    assert list(buffer) == ["a", "c"]
    assert buffer.values() == [3, 4]
    assert buffer.evicted == 1
    assert "b" not in buffer


def test_newest_lists_the_latest_first_up_to_a_count():
    buffer: BoundedMap[int, int] = BoundedMap(10)
    for i in range(5):
        buffer.put(i, i * 10)
    assert buffer.newest(3) == [40, 30, 20]
    assert buffer.newest(99) == [40, 30, 20, 10, 0]


def test_pop_and_get_of_missing_keys_return_none():
    buffer: BoundedMap[str, int] = BoundedMap(1)
    assert buffer.get("x") is None
    assert buffer.pop("x") is None
    buffer.put("x", 1)
    assert buffer.pop("x") == 1
    assert len(buffer) == 0


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_buffer_holds_at_least_one_entry(capacity):
    with pytest.raises(ValueError, match="capacity"):
        BoundedMap(capacity)


@given(
    capacity=st.integers(1, 20),
    writes=st.lists(st.tuples(st.integers(0, 30), st.integers()), max_size=200),
)
def test_a_bounded_map_keeps_the_latest_writes_of_the_most_recent_keys(capacity, writes):
    buffer: BoundedMap[int, int] = BoundedMap(capacity)
    reference: dict[int, int] = {}  # a plain dict in last-write order
    inserted = 0
    for key, value in writes:
        inserted += key not in buffer
        buffer.put(key, value)
        reference.pop(key, None)
        reference[key] = value
    kept = list(reference.items())[-capacity:]
    assert len(buffer) <= capacity
    assert list(zip(buffer, buffer.values(), strict=True)) == kept
    assert buffer.evicted == inserted - len(buffer)


def test_the_rate_is_counted_by_event_second_over_finished_seconds():
    meter = RateMeter(horizon_s=60)
    for second in range(100, 110):
        meter.add(second + 0.5, count=5)
    meter.add(110.2, count=1000)  # the current second, still filling: left out
    assert meter.rate(now_s=110.9, window_s=10, settle_s=0) == 5.0
    assert meter.rate(now_s=111.5, window_s=10, settle_s=1) == 5.0
    assert meter.rate(now_s=200, window_s=10) == 0.0


def test_the_series_has_a_value_for_every_second_zeros_included():
    meter = RateMeter(horizon_s=60)
    meter.add(100.1)
    meter.add(100.9)
    meter.add(102.0)
    assert meter.series(now_s=104, length_s=4, settle_s=1) == [
        (99, 0),
        (100, 2),
        (101, 0),
        (102, 1),
    ]


def test_events_older_than_the_horizon_are_not_kept():
    meter = RateMeter(horizon_s=10)
    meter.add(1_000)
    meter.add(500)  # long before the newest second: nothing to show it in
    assert meter.series(now_s=1_001, length_s=1_000, settle_s=0)[-1] == (1_000, 1)
    assert sum(count for _, count in meter.series(1_001, 1_000, settle_s=0)) == 1


@given(
    horizon=st.integers(1, 50),
    stamps=st.lists(st.floats(0, 10_000, allow_nan=False), max_size=300),
)
def test_a_rate_meter_never_holds_more_seconds_than_its_horizon(horizon, stamps):
    meter = RateMeter(horizon_s=horizon)
    for stamp in stamps:
        meter.add(stamp)
        assert len(meter) <= horizon
