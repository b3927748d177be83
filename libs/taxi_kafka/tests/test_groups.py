"""Consumer-group lag from committed and end offsets: pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka.groups import lag_of

partitions = st.tuples(st.sampled_from(["new_trips", "finished_trips"]), st.integers(0, 5))
offsets = st.dictionaries(partitions, st.integers(0, 10**9))


def test_lag_is_the_distance_from_the_committed_offset_to_the_end():
    ends = {("new_trips", 0): 100, ("new_trips", 1): 50}
    assert lag_of({("new_trips", 0): 90, ("new_trips", 1): 50}, ends) == {
        ("new_trips", 0): 10,
        ("new_trips", 1): 0,
    }


def test_a_partition_never_committed_lags_by_all_of_it():
    assert lag_of({}, {("new_trips", 3): 7}) == {("new_trips", 3): 7}


@given(committed=offsets, ends=offsets)
def test_lag_covers_exactly_the_ended_partitions_and_is_never_negative(committed, ends):
    lags = lag_of(committed, ends)
    assert lags.keys() == ends.keys()
    assert all(0 <= lag <= ends[key] for key, lag in lags.items())
