"""Exactly-once consume-transform-produce through Kafka transactions.

Each batch is one transaction: its outputs, its dead letters and its input offsets
(send_offsets_to_transaction) commit together or not at all. Readers downstream use
read_committed, so they never see an aborted or pending batch.

- Identity. The transactional.id derives from the service and its instance name, so a restarted
  instance fences its predecessor: any transaction the dead one left open is aborted. Group
  membership is dynamic: with a static group.instance.id, a coordinator failover while a broker
  died fenced the live member (FENCED_INSTANCE_ID) and stopped it. A restarted instance gets
  its partitions back once the dead member's session (10 s) expires.
- Overlap. A stateless transform's batches overlap: while one batch's transaction commits on a
  background thread (librdkafka waits for the brokers without holding the GIL), the next batch is
  consumed and transformed; its transaction begins once the last one settled. A batch whose
  predecessor failed to commit is dropped, and both are redone from the committed offsets. A
  stateful transform's state must match its committed offsets, so its batches take turns.
- Rebalances. Rebalance callbacks only run inside consume(), and a revocation first waits for a
  committing transaction to settle, so no revocation cuts into one. A batch during which
  partitions were revoked or lost is dropped and its partitions rewound to their committed
  offsets: consume() may hand over messages fetched under the old assignment. Newly assigned
  partitions start from their committed offsets (read with require_stable under
  read_committed, so never a pending one).
- Errors. The TransactionalProducer (taxi_kafka._transactions) aborts on an abortable error, and
  replaces its producer when the transaction's fate is unknown (a fatal error, a commit or abort
  timeout: librdkafka lacks KIP-890; a send_offsets_to_transaction() stuck after the group
  coordinator's broker went away: librdkafka #5456/#5511). Either way the consumer then rewinds
  to whatever was committed. Being fenced means a newer instance runs: FencedError, and this one
  stops.
- Deliberate aborts. A transform's result with `abort` set is written in a transaction that is
  then aborted (TransactionalProducer.produce_then_abort): fault injection, so tests can check
  that read_committed readers never see an aborted record. The batch is then redone as after a
  failed commit.
- Timeouts. transaction.timeout.ms (30 s by default) bounds how long a dead instance that never
  comes back holds read_committed readers up; batches take well under a second.
  session.timeout.ms (10 s) is how long a dead member keeps its partitions when nobody restarts
  it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taxi_kafka._config import KafkaConfig
from taxi_kafka._deadline import BackgroundCall
from taxi_kafka._observer import Observer, report_outputs
from taxi_kafka._pipeline import DEAD_LETTERS, instance_id
from taxi_kafka._policy import BatchPolicy
from taxi_kafka._records import (
    Outputs,
    PartitionKey,
    StatefulTransform,
    Transform,
    TransformResult,
    count_records,
    output_records,
    rewind_targets,
)
from taxi_kafka._shutdown import run_until_stopped
from taxi_kafka._transactions import Timeouts, TransactionalProducer
from taxi_kafka.consumer import KafkaConsumer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Committing:
    """A batch whose transaction is committing on a background thread."""

    commit: BackgroundCall[bool]
    result: TransformResult
    records: Outputs
    consumed: int
    # Where each of its partitions began: the rewind targets should the commit fail.
    uncommitted_from: Mapping[PartitionKey, int]


class TransactionalProcessor:
    """Consumes `input_topics` in group `group_id`, runs `transform` on each batch and commits
    outputs and offsets in one transaction. Owns its clients: run() closes them."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        service: str,
        instance: str,
        group_id: str,
        input_topics: Sequence[str],
        transform: Transform,
        dead_letter_topic: str = DEAD_LETTERS,
        batch: BatchPolicy | None = None,
        timeouts: Timeouts | None = None,
        observer: Observer | None = None,
        consumer_settings: Mapping[str, Any] | None = None,
        producer_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._service = service
        self.transactional_id = instance_id(service, instance)
        self._transform = transform
        self._dead_letter_topic = dead_letter_topic
        self._batch = batch or BatchPolicy()
        self._observer = observer or Observer()
        self._consumer = KafkaConsumer(
            config,
            group_id,
            input_topics,
            settings=consumer_settings,
            observer=self._observer,
            lag_from_stored=True,
            name=f"{service} consumer",
        )
        self._consumer.listener = self
        # Where each partition's not-yet-committed messages began: the rewind target of a
        # partition that has no committed offset yet.
        self._uncommitted_from: dict[PartitionKey, int] = {}
        self._rebalanced = False
        self._stateful = transform if isinstance(transform, StatefulTransform) else None
        self._committing: _Committing | None = None
        self._committed_inputs = 0
        # A stateful transform restores its committed state before its first batch.
        self._state_void = True
        self._transactions = TransactionalProducer(
            config,
            self.transactional_id,
            settings=producer_settings,
            timeouts=timeouts,
            observer=self._observer,
            name=f"{service} producer",
        )

    # -- rebalances (called inside consume(); a committing batch settles first) ------------

    def on_assign(self, partitions: Sequence[PartitionKey]) -> None:
        """New partitions start from their committed offsets, and what consume() returns after
        an assignment alone was fetched under it; a stateful transform reloads its state."""
        self._state_void = True

    def on_revoke(self, partitions: Sequence[PartitionKey]) -> None:
        # The committing batch settles before its partitions go; should it fail, step() rewinds.
        self._settle()
        self._rebalanced = True
        self._state_void = True
        for key in partitions:
            self._uncommitted_from.pop(key, None)

    on_lost = on_revoke

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> int:
        """Process one batch in one transaction; returns how many input records were committed
        meanwhile (with overlapping batches, those of the batch before)."""
        committed_before = self._committed_inputs
        self._process_batch()
        return self._committed_inputs - committed_before

    def _process_batch(self) -> None:
        self._rebalanced = False
        consumed = self._consumer.consume_batch(self._batch.max_messages, self._batch.max_wait)
        messages = consumed.messages
        for key, offset in consumed.first_offsets().items():
            self._uncommitted_from.setdefault(key, offset)
        if self._rebalanced:
            if messages:
                log.info("dropping a batch of %d split by a rebalance; rewinding", len(messages))
            self._rewind()
            return
        if not messages:
            if not self._settle():
                self._rewind()
            elif self._stateful is not None:
                self._commit_tick(self._stateful)
            return
        self._restore_state()
        try:
            result = self._transform(messages)
        except Exception:
            # Whoever catches this and steps on must get the batch again, not the next one.
            self._settle()
            self._rewind()
            raise
        if not self._settle():
            self._rewind()
            return
        records = output_records(result, self._service, self._dead_letter_topic)
        offsets = consumed.next_offsets()
        group_metadata = self._consumer.group_metadata()
        self._committing = _Committing(
            BackgroundCall(
                lambda: self._transaction(result, records, offsets, group_metadata),
                what=f"{self._service} commit",
            ),
            result,
            records,
            len(messages),
            self._uncommitted_from,
        )
        self._uncommitted_from = {}
        if self._stateful is not None and not self._settle():
            self._rewind()

    def _transaction(
        self,
        result: TransformResult,
        records: Outputs,
        offsets: Mapping[PartitionKey, int] | None = None,
        group_metadata: object | None = None,
    ) -> bool:
        """Commit `records` (and `offsets`) in one transaction, or abort it as `result` asks;
        True once committed."""
        if result.abort is not None:
            log.info(
                "aborting a transaction of %d record(s) deliberately: %s",
                count_records(records),
                result.abort,
            )
            return self._transactions.produce_then_abort(records)
        return self._transactions.commit(records, offsets, group_metadata)

    def _settle(self) -> bool:
        """Wait for the committing batch, if any; False if it failed, its offsets then being
        left to rewind. Raises FencedError if a newer instance took over."""
        committing, self._committing = self._committing, None
        if committing is None:
            return True
        if not committing.commit.result():
            # Its messages came before anything consumed since.
            self._uncommitted_from.update(committing.uncommitted_from)
            return False
        self._committed_inputs += committing.consumed
        if self._stateful is not None:
            self._stateful.committed()
        report_outputs(
            self._observer, committing.records, committing.result, committing.commit.finished_at
        )
        self._observer.batch_processed(committing.consumed)
        return True

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set (the batches in hand are committed first);
        close."""
        run_until_stopped(stop, self.step, self.close)

    def close(self) -> None:
        try:
            self._settle()
        finally:
            self._consumer.close()
            self._transactions.close()

    # -- recovery --------------------------------------------------------------------------

    def _restore_state(self) -> None:
        if self._stateful is not None and self._state_void:
            self._stateful.rolled_back()
            self._state_void = False

    def _commit_tick(self, transform: StatefulTransform) -> None:
        """Let a stateful transform emit on a quiet poll, in a transaction of its own."""
        if not self._consumer.assignment():
            return  # no state to restore yet: the assignment would void it again
        self._restore_state()
        result = transform.tick()
        records = output_records(result, self._service, self._dead_letter_topic)
        if not records:
            return
        if self._transaction(result, records):
            report_outputs(self._observer, records, result)
            transform.committed()
        else:
            self._state_void = True

    def _rewind(self) -> None:
        """Seek the owned partitions with uncommitted work back to their committed offsets;
        a stateful transform's uncommitted state goes with them."""
        self._state_void = True
        owned = set(self._consumer.assignment())
        pending = {key: offset for key, offset in self._uncommitted_from.items() if key in owned}
        if not pending:
            return
        targets = rewind_targets(self._consumer.committed(list(pending)), pending)
        log.info("rewinding %s", ", ".join(f"{t}-{p}@{o}" for (t, p), o in targets.items()))
        self._consumer.seek(targets)
        self._uncommitted_from = targets
