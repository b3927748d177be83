"""Reading a topic to its end, or its tail, against the real cluster, around transactions."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from taxi_kafka._config import KafkaConfig
from taxi_kafka._records import OutputRecord
from taxi_kafka._table import read_table, read_tail, read_to_end
from taxi_kafka._transactions import TransactionalProducer
from taxi_kafka.testing import numbered, produce_all

pytestmark = pytest.mark.kafka


def transactional_producer(config: KafkaConfig) -> TransactionalProducer:
    return TransactionalProducer(config, f"taxi-test-{uuid.uuid4().hex[:8]}")


def test_a_commit_is_read_whole_the_moment_it_returns(kafka_config, make_topic):
    topic = make_topic()
    producer = transactional_producer(kafka_config)
    committed: list[tuple[bytes, bytes]] = []
    try:
        # Several rounds: the commit markers land a moment after commit() returns.
        for round_ in range(3):
            records = numbered(300, keys=30, start=300 * round_)
            assert producer.commit([OutputRecord(topic, value, key) for key, value in records])
            committed += records
            read = read_to_end(kafka_config, topic, timeout=30)
            assert sorted((m.key(), m.value()) for m in read) == sorted(committed)
    finally:
        producer.close()


def test_a_transaction_in_progress_is_waited_for_and_an_aborted_one_left_out(
    kafka_config, make_topic
):
    topic = make_topic(partitions=1)
    producer = Producer(
        {
            "bootstrap.servers": kafka_config.bootstrap_servers,
            "transactional.id": f"taxi-test-{uuid.uuid4().hex[:8]}",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"kept", b"k")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"pending", b"k")
    producer.flush(10)
    with pytest.raises(TimeoutError, match="not read to the end"):
        read_to_end(kafka_config, topic, timeout=3)
    producer.abort_transaction(30)
    assert read_table(kafka_config, topic) == {b"k": b"kept"}


def test_the_tail_is_the_last_records_of_each_partition_in_order(kafka_config, make_topic):
    topic = make_topic(partitions=3)
    produce_all(kafka_config.bootstrap_servers, topic, numbered(300, keys=30))
    everything = read_to_end(kafka_config, topic, timeout=30)
    by_partition: dict[int, list[bytes]] = {}
    for message in everything:
        by_partition.setdefault(message.partition(), []).append(message.value())
    assert len(by_partition) == 3
    assert all(len(values) > 10 for values in by_partition.values())

    tail = read_tail(kafka_config, topic, per_partition=10)
    expected = [value for p in sorted(by_partition) for value in by_partition[p][-10:]]
    assert [m.value() for m in tail] == expected
    # More than a partition holds: all of it.
    assert [m.value() for m in read_tail(kafka_config, topic, 10_000)] == [
        m.value() for m in everything
    ]
    with pytest.raises(KeyError, match="does not exist"):
        read_tail(kafka_config, f"no-such-topic-{uuid.uuid4().hex[:8]}", 10)
