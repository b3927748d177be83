"""A thin typed wrapper over confluent_kafka.Consumer for batch processing in a group.

Offsets are never committed behind the application's back (`enable.auto.commit=false`), and
reads are `read_committed`, set explicitly. Rebalances are forwarded to a `RebalanceListener`;
lag from the client's statistics goes to the observer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from taxi_kafka._admin import QUIET_CLIENT_CONFIG, is_transient
from taxi_kafka._config import PARTITION_TOLERANT_DEFAULTS, KafkaConfig
from taxi_kafka._errors import fatal_error, log_client_error
from taxi_kafka._lag import broker_states, consumer_lag, lag_seconds
from taxi_kafka._observer import Observer
from taxi_kafka._records import (
    Consumed,
    PartitionKey,
    partition_offsets,
    sort_out,
    topic_partitions,
)
from taxi_kafka._retry import RetryPolicy

log = logging.getLogger(__name__)

CONSUMER_DEFAULTS: Mapping[str, Any] = {
    # A new group starts from the beginning: the pipeline processes the whole history.
    "auto.offset.reset": "earliest",
    # Dead members are noticed after 10 s rather than librdkafka's 45 s.
    "session.timeout.ms": 10000,
    "statistics.interval.ms": 5000,
    **PARTITION_TOLERANT_DEFAULTS,
}
CONSUMER_ENFORCED: Mapping[str, Any] = {
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
}

CLOSE_TIMEOUT = 30.0
# Offset look-ups while a coordinator moves after a broker failure.
COORDINATOR_RETRY = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=2.0, deadline=60.0)


class RebalanceListener(Protocol):
    def on_assign(self, partitions: Sequence[PartitionKey]) -> None: ...

    def on_revoke(self, partitions: Sequence[PartitionKey]) -> None: ...

    def on_lost(self, partitions: Sequence[PartitionKey]) -> None: ...


def _keys(partitions: Sequence[TopicPartition]) -> list[PartitionKey]:
    return [(tp.topic, tp.partition) for tp in partitions]


class KafkaConsumer:
    """Subscribed to `topics` as a member of `group_id`.

    `instance_id` makes the member static (group.instance.id): a restarted process with the same
    id takes its partitions back at once, without waiting out the old session. `lag_from_stored`
    reports lag from the offsets handed to the application rather than the committed ones (for
    transactional processing, whose commits the consumer's statistics do not see).
    """

    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        topics: Sequence[str],
        *,
        instance_id: str | None = None,
        settings: Mapping[str, Any] | None = None,
        observer: Observer | None = None,
        lag_from_stored: bool = False,
        name: str = "consumer",
    ) -> None:
        enforced: dict[str, Any] = {**CONSUMER_ENFORCED, "group.id": group_id}
        if instance_id is not None:
            enforced["group.instance.id"] = instance_id
        client_settings = config.client_settings(
            {**CONSUMER_DEFAULTS, **(settings or {})}, enforced, what=name
        )
        self.listener: RebalanceListener | None = None
        self._observer = observer or Observer()
        self._lag_from_stored = lag_from_stored
        # Timestamp (ms) of the last record handed over per partition, for lag in seconds.
        self._newest_ms: dict[PartitionKey, int] = {}
        self._fatal: KafkaError | None = None
        self.client = Consumer(
            {
                **client_settings,
                "logger": QUIET_CLIENT_CONFIG["logger"],
                "error_cb": self._on_error,
                "stats_cb": self._on_stats,
            }
        )
        self.client.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    # -- callbacks (run inside consume/close, on the calling thread) ------------------------

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        log_client_error(error)

    def _on_stats(self, stats_json: str) -> None:
        lags = consumer_lag(stats_json, stored=self._lag_from_stored)
        self._observer.lag(lags)
        self._observer.lag_seconds(lag_seconds(lags, self._newest_ms, int(time.time() * 1000)))
        self._observer.broker_states("consumer", broker_states(stats_json))

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced("assign", _keys(partitions))

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced("revoke", _keys(partitions))

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced("lost", _keys(partitions))

    def _rebalanced(self, event: str, partitions: list[PartitionKey]) -> None:
        log.info("%s: %s", event, ", ".join(f"{t}-{p}" for t, p in partitions) or "nothing")
        if event != "assign":
            for key in partitions:
                self._newest_ms.pop(key, None)
        self._observer.rebalanced(event, partitions)
        if self.listener is not None:
            getattr(self.listener, f"on_{event}")(partitions)

    # -- consuming -------------------------------------------------------------------------

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` records, waiting at most `timeout` seconds to fill the batch.
        Per-partition errors are logged and left out; fatal ones raise FatalKafkaError."""
        return self.consume_batch(max_messages, timeout).messages

    def consume_batch(self, max_messages: int, timeout: float) -> Consumed:
        """consume(), with each partition's first and last record of the batch."""
        consumed = sort_out(self.client.consume(max_messages, timeout))
        if self._fatal is not None:
            raise fatal_error(self._fatal)
        for message in consumed.errors:
            error = message.error()
            if error is None:
                continue
            if error.fatal():
                raise fatal_error(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("%s [%s]: %s", message.topic(), message.partition(), error.str())
        for topic, count in consumed.counts_by_topic().items():
            self._observer.consumed(topic, count)
        for key, message in consumed.last.items():
            timestamp_type, timestamp_ms = message.timestamp()
            if timestamp_type != TIMESTAMP_NOT_AVAILABLE:
                # The last one handed over, not the highest: a rewind moves it back too.
                self._newest_ms[key] = timestamp_ms
        return consumed

    def assignment(self) -> list[PartitionKey]:
        return _keys(self.client.assignment())

    def commit(self, offsets: Mapping[PartitionKey, int], *, asynchronous: bool = False) -> None:
        """Commit `offsets` (the next offset to read, per partition)."""
        if not offsets:
            return
        # The stub overloads commit() on asynchronous's literal value, not on a bool.
        if asynchronous:
            self.client.commit(offsets=topic_partitions(offsets), asynchronous=True)
        else:
            self.client.commit(offsets=topic_partitions(offsets), asynchronous=False)

    def committed(
        self, partitions: Sequence[PartitionKey], timeout: float = 10.0
    ) -> dict[PartitionKey, int]:
        """The committed offsets (negative: none yet), retried while a coordinator moves."""
        wanted = topic_partitions(dict.fromkeys(partitions, 0))
        found = COORDINATOR_RETRY.call(
            lambda: self.client.committed(wanted, timeout=timeout),
            retry_on=(KafkaException,),
            retryable=is_transient,
            what="committed offsets",
        )
        return partition_offsets(found)

    def seek(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Set the next offset to read, dropping what was fetched beyond it."""
        for tp in topic_partitions(offsets):
            self.client.seek(tp)

    def group_metadata(self) -> object:
        return self.client.consumer_group_metadata()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Leave the group and release the client, waiting at most `timeout` seconds: with
        static membership, librdkafka's close can hang once a newer instance took over
        (librdkafka issue #3437), and a stuck shutdown must not hold a service forever."""
        closing = threading.Thread(target=self.client.close, name="consumer-close", daemon=True)
        closing.start()
        closing.join(timeout)
        if closing.is_alive():
            log.error("consumer close still blocked after %.0f s; abandoning it", timeout)
