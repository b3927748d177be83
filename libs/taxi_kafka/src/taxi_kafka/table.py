"""Reading a compacted topic to its end as a table: the last committed value per key.

Used to restore state (a producer's checkpoint, the aggregator's changelog) on start-up. Reads
read_committed up to each partition's last stable offset, so a transaction still open or
aborted is never part of the table; start it after init_transactions(), which settles ours.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from taxi_kafka.admin import QUIET_CLIENT_CONFIG, is_transient
from taxi_kafka.config import KafkaConfig
from taxi_kafka.retry import RetryPolicy

log = logging.getLogger(__name__)

METADATA_RETRY = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=2.0, deadline=120.0)


def read_table(config: KafkaConfig, topic: str, timeout: float = 120.0) -> dict[bytes, bytes]:
    """Every key's last value in `topic` (keys whose last record is a tombstone are absent)."""
    consumer = Consumer(
        {
            **config.client_settings(
                {"enable.partition.eof": False},
                {
                    "group.id": f"taxi-table-reader-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
                what=f"{topic} reader",
            ),
            "logger": QUIET_CLIENT_CONFIG["logger"],
        }
    )
    table: dict[bytes, bytes] = {}
    try:
        ends = METADATA_RETRY.call(
            lambda: _end_offsets(consumer, topic),
            retryable=is_transient,
            what=f"end offsets of {topic}",
        )
        pending = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took over {timeout:.0f} s")
            for message in consumer.consume(10_000, 0.5):
                if message.error() is None and message.key() is not None:
                    value = message.value()
                    if value is None:
                        table.pop(message.key(), None)
                    else:
                        table[message.key()] = value
            # Positions move past transaction markers too, so compare positions, not offsets.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= pending[tp.partition]:
                    del pending[tp.partition]
    finally:
        consumer.close()
    log.info("read %d key(s) from %s", len(table), topic)
    return table


def _end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    if metadata.topics[topic].error is not None or not partitions:
        raise KeyError(f"topic {topic} does not exist; run `taxi cluster up` or ensure topics")
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
