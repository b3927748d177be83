"""The at-least-once consume loop: consume a batch, transform it, produce the outputs and dead
letters, wait for their delivery, then commit the batch's offsets (per the CommitPolicy).

A crash between delivery and commit reprocesses the uncommitted batches: duplicates, never
loss. For exactly once, use the TransactionalProcessor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from taxi_kafka import (
    DEAD_LETTERS,
    BatchPolicy,
    CommitPolicy,
    DeliveryError,
    KafkaConsumer,
    KafkaProducer,
    Observer,
    PartitionKey,
    PendingOffsets,
    Transform,
    next_offsets,
    output_records,
    report_outputs,
    run_until_stopped,
)

log = logging.getLogger(__name__)

# How long to wait for a batch's outputs; brokers may be failing over meanwhile.
DELIVERY_TIMEOUT = 120.0


class ConsumerLoop:
    """Owns its consumer and producer: run() closes both when it returns."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        transform: Transform,
        *,
        service: str,
        dead_letter_topic: str = DEAD_LETTERS,
        batch: BatchPolicy | None = None,
        commit: CommitPolicy | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._transform = transform
        self._service = service
        self._dead_letter_topic = dead_letter_topic
        self._batch = batch or BatchPolicy()
        self._commit = commit or CommitPolicy()
        self._observer = observer or Observer()
        self._pending = PendingOffsets()
        consumer.listener = self

    # -- rebalances ------------------------------------------------------------------------

    def on_assign(self, partitions: Sequence[PartitionKey]) -> None:
        """Nothing to do: newly assigned partitions start from their committed offsets."""

    def on_revoke(self, partitions: Sequence[PartitionKey]) -> None:
        # Still a member of the old generation here, so the commit is accepted.
        self._commit_now(self._pending.take(partitions), asynchronous=False)

    def on_lost(self, partitions: Sequence[PartitionKey]) -> None:
        # Another member owns them already: our commit would be rejected or, worse, move it.
        self._pending.take(partitions)

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> int:
        """Process one batch; returns its size (0 when nothing came)."""
        messages = self._consumer.consume(self._batch.max_messages, self._batch.max_wait)
        if not messages:
            return 0
        result = self._transform(messages)
        records = output_records(result, self._service, self._dead_letter_topic)
        failed_before = self._producer.stats.failed
        self._producer.produce_all(records)
        if self._producer.flush(DELIVERY_TIMEOUT):
            raise DeliveryError(f"outputs of a batch undelivered after {DELIVERY_TIMEOUT:.0f} s")
        if self._producer.stats.failed > failed_before:
            raise DeliveryError(f"output delivery failed: {self._producer.stats.last_error}")
        report_outputs(self._observer, records, result)
        # A rebalance inside consume() may have taken partitions of this very batch.
        self._pending.add(next_offsets(messages))
        self._pending.keep_only(self._consumer.assignment())
        if self._commit.due(self._pending.batches):
            self._commit_now(self._pending.take(), asynchronous=self._commit.asynchronous)
        self._observer.batch_processed(len(messages))
        return len(messages)

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set; then commit what was processed and close."""
        run_until_stopped(stop, self.step, self.close)

    def close(self) -> None:
        """Commit what was processed (its outputs are delivered) and close both clients."""
        try:
            self._commit_now(self._pending.take(), asynchronous=False)
        finally:
            self._consumer.close()
            self._producer.close()

    def _commit_now(self, offsets: dict[PartitionKey, int], *, asynchronous: bool) -> None:
        if offsets:
            self._consumer.commit(offsets, asynchronous=asynchronous)
