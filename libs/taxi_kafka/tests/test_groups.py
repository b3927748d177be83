"""Consumer-group lag: the offsets and ranges, pure; the records counted, against the real
cluster."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, Producer
from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka._config import KafkaConfig
from taxi_kafka._groups import GroupLag, LagProbe, lag_of, lag_ranges
from taxi_kafka._records import PartitionKey
from taxi_kafka._transactions import TransactionalProducer
from taxi_kafka.testing import read_all

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


@given(committed=offsets, ends=offsets)
def test_the_ranges_left_to_read_span_the_offset_lag(committed, ends):
    ranges = lag_ranges(committed, ends)
    assert {key: end for key, (_, end) in ranges.items()} == ends
    assert all(start <= end for start, end in ranges.values())
    assert {key: end - start for key, (start, end) in ranges.items()} == lag_of(committed, ends)


def test_the_totals_sum_the_partitions():
    lag = GroupLag({("t", 0): 5, ("t", 1): 1}, {("t", 0): 3, ("t", 1): 0}, exact=False)
    assert (lag.total_offsets, lag.total_records) == (6, 3)


def write_with_markers(bootstrap_servers: str, topic: str, partitions: int) -> None:
    """Per partition: 3 records committed, 2 aborted, 4 committed; with the markers, offsets
    0-2 records, 3 marker, 4-5 aborted, 6 marker, 7-10 records, 11 marker."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "transactional.id": f"taxi-test-{uuid.uuid4().hex[:8]}",
        }
    )
    producer.init_transactions(30)
    for count, commit in ((3, True), (2, False), (4, True)):
        producer.begin_transaction()
        for partition in range(partitions):
            for i in range(count):
                producer.produce(topic, str(i).encode(), partition=partition)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            producer.abort_transaction(30)
    # Reading to the high watermark waits until the last markers are written.
    assert len(read_all(bootstrap_servers, topic)) == 7 * partitions


def commit_in_transaction(
    config: KafkaConfig, group: str, offsets: Mapping[PartitionKey, int]
) -> None:
    """Commit `group`'s offsets as a transactional processor does: in a transaction."""
    member = Consumer({"bootstrap.servers": config.bootstrap_servers, "group.id": group})
    producer = TransactionalProducer(config, f"taxi-test-{uuid.uuid4().hex[:8]}")
    try:
        assert producer.commit([], offsets, member.consumer_group_metadata())
    finally:
        producer.close()
        member.close()


def settled_lag(
    probe: LagProbe, group: str, topic: str, offsets: Mapping[PartitionKey, int], **options: Any
) -> GroupLag:
    """The group's lag once the offsets it committed are visible (a moment after the commit)."""
    deadline = time.monotonic() + 30
    while (lag := probe.lag(group, [topic], **options)).offsets != offsets:
        assert time.monotonic() < deadline, lag
        time.sleep(0.2)
    return lag


def test_lag_counts_committed_records_not_markers_or_aborted_ones(kafka_config, make_topic):
    topic = make_topic(partitions=2)
    write_with_markers(kafka_config.bootstrap_servers, topic, partitions=2)
    caught_up, behind = f"caught-up-{uuid.uuid4().hex[:8]}", f"behind-{uuid.uuid4().hex[:8]}"
    # A processor commits one past the last record it read: the last marker is left over.
    commit_in_transaction(kafka_config, caught_up, {(topic, 0): 11, (topic, 1): 11})
    # Behind by 6 records on partition 0 (offsets 1, 2 and 7-10), past 2 aborted ones.
    commit_in_transaction(kafka_config, behind, {(topic, 0): 1, (topic, 1): 11})
    with LagProbe({"bootstrap.servers": kafka_config.bootstrap_servers}) as probe:
        lag = settled_lag(probe, caught_up, topic, {(topic, 0): 1, (topic, 1): 1})
        assert lag.records == {(topic, 0): 0, (topic, 1): 0}
        assert lag.exact

        lag = settled_lag(probe, behind, topic, {(topic, 0): 11, (topic, 1): 1})
        assert lag.records == {(topic, 0): 6, (topic, 1): 0}
        assert lag.exact

        never = probe.lag(f"never-{uuid.uuid4().hex[:8]}", [topic])
        assert (never.total_offsets, never.total_records, never.exact) == (24, 14, True)

        # Counting stops past its limit and says so; up to it, the count is exact.
        capped = probe.lag(behind, [topic], limit=4)
        assert (capped.total_records, capped.exact) == (4, False)
        assert probe.lag(behind, [topic], limit=6).exact
