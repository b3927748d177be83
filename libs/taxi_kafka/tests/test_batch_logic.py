"""Pure batch logic: offsets to commit, rewinds, dead letters, policies, lag, error handling."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import DeadLetter
from taxi_kafka._errors import TxnAction, transaction_action
from taxi_kafka._lag import consumer_lag
from taxi_kafka._observer import Counters, report_outputs
from taxi_kafka._policy import BatchPolicy, CommitPolicy, PendingOffsets
from taxi_kafka._records import (
    Failure,
    OutputRecord,
    RecordColumns,
    TransformResult,
    count_records,
    dead_letter,
    each_record,
    identity,
    next_offsets,
    output_records,
    rewind_targets,
    sort_out,
)


def message(topic="in", partition=0, offset=0, *, key=b"k", value=b"v", headers=None) -> Message:
    return Message(
        topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers
    )


batches = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(0, 10**6)), max_size=50
)


@given(batches)
def test_next_offsets_are_one_past_each_partitions_highest(batch):
    after = next_offsets([message(t, p, o) for t, p, o in batch])
    assert set(after) == {(t, p) for t, p, _ in batch}
    for (topic, partition), offset in after.items():
        assert offset == max(o for t, p, o in batch if (t, p) == (topic, partition)) + 1


# As consume() hands them over: partitions interleaved, each in offset order (with gaps, as
# transaction markers leave), and now and then an error event.
consumed_batches = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(1, 3), st.booleans()),
    max_size=60,
)


@given(consumed_batches)
def test_one_pass_sorts_out_what_a_batch_needs(draws):
    next_offset: dict[tuple[str, int], int] = {}
    batch = []
    for topic, partition, gap, is_error in draws:
        if is_error:
            batch.append(Message(topic=topic, partition=partition, error=KafkaError(-191)))
            continue
        offset = next_offset.get((topic, partition), 0) + gap
        next_offset[(topic, partition)] = offset
        batch.append(message(topic, partition, offset))
    consumed = sort_out(batch)
    records = [m for m in batch if m.error() is None]
    assert consumed.messages == records
    assert consumed.errors == [m for m in batch if m.error() is not None]
    assert consumed.next_offsets() == next_offsets(records)
    for key, first in consumed.first_offsets().items():
        assert first == min(m.offset() for m in records if (m.topic(), m.partition()) == key)
    assert consumed.counts_by_topic() == {
        t: sum(m.topic() == t for m in records) for t in {m.topic() for m in records}
    }


def test_rewind_prefers_committed_offsets_and_falls_back_to_the_batch_start():
    committed = {("in", 0): 40, ("in", 1): -1001, ("in", 2): 7}
    uncommitted_from = {("in", 0): 30, ("in", 1): 12}
    assert rewind_targets(committed, uncommitted_from) == {
        ("in", 0): 40,  # an "uncertain" commit that went through: do not redo it
        ("in", 1): 12,  # never committed: back to where this member's work began
        ("in", 2): 7,
    }


def test_dead_letter_keeps_the_original_record_and_says_why():
    failed_at = datetime(2024, 5, 1, 12, tzinfo=UTC)
    failure = Failure(
        message("new_trips", 3, 1234, key=b"trip-1", value=b"\xff garbage"), "not JSON"
    )
    record = dead_letter(failure, "predictor", "dead_letters", failed_at)
    assert (record.topic, record.key, record.value) == ("dead_letters", b"trip-1", b"\xff garbage")
    assert DeadLetter.from_headers(record.headers) == DeadLetter(
        source_topic="new_trips",
        partition=3,
        offset=1234,
        service="predictor",
        reason="not JSON",
        failed_at=failed_at,
    )


def test_a_failure_without_a_reason_still_makes_a_valid_dead_letter():
    record = dead_letter(Failure(message(), "", kind="crash"), "svc", "dl")
    assert DeadLetter.from_headers(record.headers).reason == "crash"


def test_output_records_put_dead_letters_after_the_outputs_and_report_them():
    bad = message(offset=5, value=b"?")
    happened = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)]
    result = TransformResult(
        [OutputRecord("out", b"1"), OutputRecord("out", b"2")],
        [Failure(bad, "x")],
        event_times={"in": happened},
    )
    records = output_records(result, "svc", "dl")
    assert [r.topic for r in records] == ["out", "out", "dl"]
    counters = Counters()
    report_outputs(counters, records, result)
    assert counters.produced_by_topic == {"out": 2, "dl": 1}
    assert counters.dead_letters_by_kind == {"invalid": 1}
    assert counters.event_times == {"in": happened}


@given(st.lists(st.one_of(st.integers(0, 5), st.none()), max_size=8))
def test_column_batches_count_and_come_apart_as_their_records_in_order(layout):
    """Any mix of single records (None) and column batches (of n rows) counts and iterates as
    the same records written one by one."""
    outputs: list[OutputRecord | RecordColumns] = []
    expected = []
    for item, rows in enumerate(layout):
        topic = f"t{item % 2}"
        if rows is None:
            outputs.append(OutputRecord(topic, b"single", b"s"))
            expected.append(OutputRecord(topic, b"single", b"s"))
        else:
            values = [f"{item}.{row}".encode() for row in range(rows)]
            keys = [f"k{row}".encode() for row in range(rows)]
            outputs.append(RecordColumns(topic, values, keys))
            expected += [OutputRecord(topic, v, k) for v, k in zip(values, keys, strict=True)]
    assert list(each_record(outputs)) == expected
    assert count_records(outputs) == len(expected)
    counters = Counters()
    report_outputs(counters, outputs)
    by_topic = {t: sum(r.topic == t for r in expected) for t in {r.topic for r in expected}}
    assert counters.produced_by_topic == by_topic


def test_a_column_batch_with_a_key_missing_is_refused():
    with pytest.raises(ValueError, match="shorter"):
        list(each_record([RecordColumns("t", [b"1", b"2"], [b"k"])]))


def test_identity_copies_key_value_and_headers():
    result = identity([message(key=b"k", value=b"v", headers=[("h", b"1")])], "out")
    assert result.records == [OutputRecord("out", b"v", b"k", [("h", b"1")])]
    assert not result.failures


def test_commit_policy_counts_batches():
    assert CommitPolicy().due(1)
    policy = CommitPolicy(every_batches=3)
    assert [policy.due(n) for n in range(5)] == [False, False, False, True, True]
    with pytest.raises(ValueError, match="every_batches"):
        CommitPolicy(every_batches=0)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"max_messages": 0}, "max_messages"), ({"max_wait": -1}, "max_wait")]
)
def test_batch_policy_rejects_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchPolicy(**kwargs)


@given(
    st.lists(
        st.dictionaries(st.tuples(st.just("t"), st.integers(0, 3)), st.integers(0, 100)),
        max_size=10,
    )
)
def test_pending_offsets_keep_the_highest_per_partition(batches_):
    pending = PendingOffsets()
    for offsets in batches_:
        pending.add(offsets)
    assert pending.batches == len(batches_)
    expected = {}
    for offsets in batches_:
        for key, offset in offsets.items():
            expected[key] = max(expected.get(key, offset), offset)
    assert pending.take([("t", 0)]) == {k: v for k, v in expected.items() if k == ("t", 0)}
    pending.keep_only([("t", 1)])
    assert pending.take() == {k: v for k, v in expected.items() if k == ("t", 1)}
    assert pending.take() == {}
    assert pending.batches == 0


def partition_stats(partition, fetch_state="active", lag=5, stored=3):
    return {
        "partition": partition,
        "fetch_state": fetch_state,
        "consumer_lag": lag,
        "consumer_lag_stored": stored,
    }


def test_lag_counts_only_actively_fetched_partitions():
    stats = {
        "topics": {
            "new_trips": {
                "partitions": {
                    "0": partition_stats(0),
                    "1": partition_stats(1, "stopped", lag=9),
                    "2": partition_stats(2, lag=-1, stored=-1),
                    "-1": partition_stats(-1, lag=99),
                }
            },
            "finished_trips": {"partitions": {"4": partition_stats(4, lag=0, stored=0)}},
        }
    }
    text = json.dumps(stats)
    assert consumer_lag(text) == {("new_trips", 0): 5, ("finished_trips", 4): 0}
    assert consumer_lag(text, stored=True) == {("new_trips", 0): 3, ("finished_trips", 4): 0}
    assert consumer_lag(json.dumps({"name": "producer", "topics": {}})) == {}
    assert consumer_lag("{}") == {}


@given(
    st.dictionaries(
        st.integers(-1, 20),
        st.tuples(st.sampled_from(["active", "none", "offset-query"]), st.integers(-1001, 10**9)),
    )
)
def test_lag_is_never_negative_and_only_active(partitions):
    stats = {
        "topics": {
            "t": {
                "partitions": {
                    str(p): partition_stats(p, s, lag) for p, (s, lag) in partitions.items()
                }
            }
        }
    }
    lags = consumer_lag(json.dumps(stats))
    assert lags == {
        ("t", p): lag for p, (s, lag) in partitions.items() if p >= 0 and s == "active" and lag >= 0
    }


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (KafkaError(KafkaError.INVALID_TXN_STATE, txn_requires_abort=True), TxnAction.ABORT),
        (KafkaError(KafkaError._TIMED_OUT, retriable=True), TxnAction.RECREATE),
        (KafkaError(KafkaError._FATAL, fatal=True), TxnAction.RECREATE),
        (
            KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, fatal=True, txn_requires_abort=True),
            TxnAction.RECREATE,
        ),
        (KafkaError(KafkaError._FENCED, fatal=True), TxnAction.FENCED),
        (KafkaError(KafkaError.PRODUCER_FENCED, fatal=True), TxnAction.FENCED),
        (KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE), TxnAction.RECREATE),
    ],
)
def test_transaction_errors_map_to_actions(error, action):
    assert transaction_action(error) is action
