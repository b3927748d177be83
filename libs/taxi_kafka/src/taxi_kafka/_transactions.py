"""A transactional producer that outlives its own failures: one call per transaction.

`commit()` produces a list of records, optionally with consumer offsets, in one transaction.
It returns True once committed. On failure it returns False and leaves a producer ready for the
next try: an abortable error is aborted; a fatal error, or a commit or abort whose outcome is
unknown (a timeout included), gets a new producer, whose init_transactions() finishes or aborts
the old transaction (librdkafka lacks KIP-890's guard against a late write of the old one). So
does a send_offsets_to_transaction() that outlives its timeout (taxi_kafka._deadline): the stuck
producer is abandoned, and its successor's new epoch fences it.
Either way nothing of a failed transaction is visible to read_committed readers, and the caller
rolls its own state back to its last committed point. Being fenced raises FencedError: a newer
instance with the same transactional.id runs, and this one must stop.

`produce_then_abort()` is fault injection: it writes the records to the brokers in a
transaction and aborts it on purpose, so tests can check that read_committed readers never see
them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from taxi_kafka._admin import is_transient
from taxi_kafka._config import KafkaConfig
from taxi_kafka._deadline import StuckCallError, call_with_deadline
from taxi_kafka._errors import FatalKafkaError, FencedError, TxnAction, error_of, transaction_action
from taxi_kafka._observer import Observer
from taxi_kafka._records import Outputs, PartitionKey, count_records, topic_partitions
from taxi_kafka._retry import RetryPolicy
from taxi_kafka.producer import KafkaProducer

log = logging.getLogger(__name__)

TRANSACTIONAL_PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "transaction.timeout.ms": 30000,
    # A transaction begun right after the last one committed often meets the coordinator still
    # writing that one's markers (CONCURRENT_TRANSACTIONS), and the client retries after
    # retry.backoff.ms. librdkafka's 100 ms put a floor under every back-to-back transaction;
    # the Java client waits 20 ms in this case (KAFKA-5477). `taxi bench` (d), 2,000 trips/s:
    # p99 385-448 ms with 100, 181-185 with 20, 183-203 with 10.
    "retry.backoff.ms": 20,
    # A transaction commits only if all its records were delivered, so a report per delivered
    # record would only cost a Python callback each; failures are still reported.
    "delivery.report.only.error": True,
}

# The reason a deliberate abort (produce_then_abort) reports to Observer.transaction_aborted.
DELIBERATE_ABORT = "DELIBERATE"

# Starting a producer waits out brokers coming up or an old transaction being completed.
INIT_RETRY = RetryPolicy(initial=0.5, multiplier=2.0, max_delay=5.0, deadline=300.0)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for transactional calls before treating their outcome as unknown."""

    # A transaction that cannot flush holds every read_committed reader of the partitions it
    # wrote to until it ends: past this, it is abandoned and redone on a new producer, whose
    # connections are new. partition-leader's longest gap without predictions (bound 20 s) was
    # 40.6 s in one run of four with 30 s, and 20.1 and 23.4 s in two of five with 15 s on a
    # busy machine (`taxi chaos`). As long as socket.timeout.ms: a commit waiting on a request
    # to a broker cut off by the network is redone rather than waited out.
    commit: float = 10.0
    abort: float = 30.0
    init: float = 30.0
    # Well under transaction.timeout.ms, so a producer stuck sending offsets is replaced before
    # the coordinator times its transaction out (which looks like being fenced). A coordinator
    # failover after a broker is killed takes about 5 s here.
    offsets: float = 8.0
    # How long past its own timeout a call may run before it counts as stuck.
    grace: float = 2.0


class TransactionalProducer:
    def __init__(
        self,
        config: KafkaConfig,
        transactional_id: str,
        *,
        settings: Mapping[str, Any] | None = None,
        timeouts: Timeouts | None = None,
        observer: Observer | None = None,
        name: str = "transactional producer",
    ) -> None:
        self._config = config
        self.transactional_id = transactional_id
        self._settings = {**TRANSACTIONAL_PRODUCER_DEFAULTS, **(settings or {})}
        self._timeouts = timeouts or Timeouts()
        self._observer = observer or Observer()
        self._name = name
        self._producer = self._new_producer()

    def commit(
        self,
        records: Outputs,
        offsets: Mapping[PartitionKey, int] | None = None,
        group_metadata: object | None = None,
    ) -> bool:
        """Produce `records` and commit `offsets` (the next offset to read, per partition, for
        the group of `group_metadata`) atomically. False: nothing committed, try again."""
        client = self._producer.client
        try:
            client.begin_transaction()
            self._producer.produce_all(records)
            if offsets:
                self._send_offsets(offsets, group_metadata)
            client.commit_transaction(self._timeouts.commit)
        except (KafkaException, FatalKafkaError) as exc:
            self._recover(exc)
            return False
        except StuckCallError as exc:
            log.warning("%s: %s; abandoning that producer", self._name, exc)
            self._replace_producer("STUCK")
            return False
        self._observer.transaction_committed(count_records(records))
        return True

    def produce_then_abort(self, records: Outputs) -> bool:
        """Produce `records` in a transaction, wait until the brokers have them, then abort it.
        Returns False, as a failed commit does: nothing committed, the caller redoes its batch.
        Not a failure: the producer stays, unless the abort itself fails."""
        client = self._producer.client
        try:
            client.begin_transaction()
            self._producer.produce_all(records)
            # Aborted while still queued, the records would be purged locally and never reach
            # the brokers' logs, where read_committed readers must skip them.
            remaining = self._producer.flush(self._timeouts.commit)
            client.abort_transaction(self._timeouts.abort)
        except (KafkaException, FatalKafkaError) as exc:
            self._recover(exc)
            return False
        if remaining:
            log.warning(
                "%s: %d record(s) aborted before they reached the brokers", self._name, remaining
            )
        self._observer.transaction_aborted(DELIBERATE_ABORT)
        return False

    def _send_offsets(
        self, offsets: Mapping[PartitionKey, int], group_metadata: object | None
    ) -> None:
        client, timeout = self._producer.client, self._timeouts.offsets
        call_with_deadline(
            lambda: client.send_offsets_to_transaction(
                topic_partitions(offsets), group_metadata, timeout
            ),
            timeout + self._timeouts.grace,
            what="send_offsets_to_transaction",
        )

    def close(self) -> None:
        try:
            # Aborts a transaction left open by an exception; a committed one leaves nothing.
            self._producer.client.close()
        except KafkaException as exc:  # a fenced or failed producer reports its error again
            log.info("%s closed: %s", self._name, error_of(exc).str())
        except SystemError as exc:
            # confluent-kafka 2.16 loses a fatal error (being fenced) that librdkafka reports
            # while close() flushes, and raises this instead; the producer is closed all the same.
            log.info("%s closed after a fatal error: %s", self._name, exc)

    def _recover(self, exc: KafkaException | FatalKafkaError) -> None:
        error = exc.error if isinstance(exc, FatalKafkaError) else error_of(exc)
        action = transaction_action(error)
        log.warning("%s: transaction failed (%s): %s", self._name, action.value, error.str())
        if action is TxnAction.FENCED:
            raise FencedError(error) from exc
        if action is TxnAction.RECREATE or not self._aborted():
            self._replace_producer(error.name())
        else:
            self._observer.transaction_aborted(error.name())

    def _replace_producer(self, reason: str) -> None:
        """A new producer in place of one whose transaction's fate is unknown. The old one is
        dropped, not closed: closing would try to abort and flush, and may block."""
        self._observer.producer_recreated(reason)
        self._producer = self._new_producer()
        self._observer.transaction_aborted(reason)

    def _aborted(self) -> bool:
        try:
            self._producer.client.abort_transaction(self._timeouts.abort)
        except KafkaException as exc:
            log.warning("%s: abort failed: %s", self._name, error_of(exc).str())
            return False
        return True

    def _new_producer(self) -> KafkaProducer:
        """A transactional producer, initialised: this fences any older one with our id."""
        producer = KafkaProducer(
            self._config,
            transactional_id=self.transactional_id,
            settings=self._settings,
            observer=self._observer,
            name=self._name,
        )

        def init() -> None:
            try:
                producer.client.init_transactions(self._timeouts.init)
            except KafkaException as exc:
                if transaction_action(error_of(exc)) is TxnAction.FENCED:
                    raise FencedError(error_of(exc)) from exc
                raise

        INIT_RETRY.call(
            init, retry_on=(KafkaException,), retryable=is_transient, what="init transactions"
        )
        return producer
