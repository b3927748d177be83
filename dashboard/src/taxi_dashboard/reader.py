"""The dashboard's one background component per process: a Kafka reader and a health poller.

The reader thread assigns itself every partition of the topics it shows (no consumer group, no
commits), starting a bounded look-back before each partition's end (lookback.py), and reads
them with read_committed into a DashboardState. Topics that do not exist yet are looked for
again every few seconds. The poller thread checks the cluster on its own interval with short
timeouts, so a broker that is down never holds up the page. Browser sessions share both
through `snapshot` and `health`, which only take a lock and copy.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from taxi_dashboard import metrics
from taxi_dashboard.health import BrokerMemory, ClusterHealth
from taxi_dashboard.lookback import lookback_s, since_ms, start_offset
from taxi_dashboard.probe import probe_cluster
from taxi_dashboard.settings import DashboardSettings
from taxi_dashboard.state import TOPICS, DashboardState, RawRecord, Snapshot
from taxi_kafka import PIPELINE_GROUPS, QUIET_CLIENT_CONFIG, group_reader, throwaway_group

log = logging.getLogger("taxi.dashboard")

BATCH = 1_000
POLL_S = 0.5
ASSIGN_RETRY_S = 5.0
METADATA_TIMEOUT_S = 5.0
# Sessions refreshing at once share one snapshot for this long.
SNAPSHOT_TTL_S = 0.4
CONSUMER_DEFAULTS = {
    # Bounds librdkafka's prefetch queue: part of keeping memory flat.
    "queued.max.messages.kbytes": 16_384,
    "reconnect.backoff.max.ms": 1_000,
    "topic.metadata.refresh.interval.ms": 10_000,
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class LiveData:
    """The reader and health threads, and the state they fill (see the module docstring)."""

    def __init__(
        self, settings: DashboardSettings, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._state = DashboardState()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._health: ClusterHealth | None = None
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0.0
        self.assigned: set[str] = set()
        self.reader_error: str | None = None
        self._threads = [
            threading.Thread(target=self._read, name="dashboard-reader", daemon=True),
            threading.Thread(target=self._poll_health, name="dashboard-health", daemon=True),
        ]

    def start(self) -> LiveData:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    # -- what the page reads ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._snapshot_at > SNAPSHOT_TTL_S:
                self._snapshot = self._state.snapshot(self._clock())
                self._snapshot_at = time.monotonic()
            return self._snapshot

    def health(self) -> ClusterHealth | None:
        with self._lock:
            return self._health

    # -- the reader thread ---------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        settings = self.settings.kafka.client_settings(
            CONSUMER_DEFAULTS,
            {
                # Required by the client, but never joined: partitions are assigned directly
                # and no offset is ever committed.
                "group.id": throwaway_group("dashboard", self.settings.kafka.settings),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
            },
            what="dashboard reader",
        )
        return Consumer({**settings, **QUIET_CLIENT_CONFIG})

    def _read(self) -> None:
        consumer = self._consumer()
        next_assign = 0.0
        try:
            while not self._stop.is_set():
                if len(self.assigned) < len(TOPICS) and time.monotonic() >= next_assign:
                    self._assign(consumer)
                    next_assign = time.monotonic() + ASSIGN_RETRY_S
                if not self.assigned:
                    self._stop.wait(POLL_S)
                    continue
                try:
                    self._ingest(consumer.consume(BATCH, POLL_S))
                except KafkaException as exc:
                    # Fatal client errors only; a broker going away is retried inside.
                    log.error("reading failed: %s; retrying", exc.args[0] if exc.args else exc)
                    self._stop.wait(1.0)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        """Assign the partitions of every topic not yet assigned that exists now."""
        try:
            metadata = consumer.list_topics(timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            self.reader_error = f"cannot read the topic list: {exc.args[0]}"
            log.warning("%s", self.reader_error)
            return
        for topic in TOPICS:
            described = metadata.topics.get(topic)
            if topic in self.assigned or described is None or described.error is not None:
                continue
            try:
                starts = self._start_offsets(consumer, topic, list(described.partitions))
            except KafkaException as exc:
                log.warning("%s: no offsets yet (%s); trying again soon", topic, exc.args[0])
                continue
            consumer.incremental_assign(starts)
            self.assigned.add(topic)
            log.info("reading %s: %d partitions", topic, len(starts))
        missing = [t for t in TOPICS if t not in self.assigned]
        self.reader_error = f"waiting for topics: {', '.join(missing)}" if missing else None

    def _start_offsets(
        self, consumer: Consumer, topic: str, partitions: list[int]
    ) -> list[TopicPartition]:
        since = since_ms(self._clock().timestamp(), lookback_s(topic, self.settings.lookback_s))
        at_times = consumer.offsets_for_times(
            [TopicPartition(topic, p, since) for p in partitions],
            timeout=METADATA_TIMEOUT_S,
        )
        starts = []
        for found in at_times:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, found.partition), timeout=METADATA_TIMEOUT_S
            )
            offset = start_offset(low, high, found.offset)
            starts.append(TopicPartition(topic, found.partition, offset))
        return starts

    def _ingest(self, messages: list[Message]) -> None:
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                _, timestamp = message.timestamp()
                topic = message.topic()
                # confluent_kafka types it Optional; a consumed record has one.
                assert topic is not None
                records.append(RawRecord(topic, message.value(), timestamp, message.headers()))
            elif error.code() != KafkaError._PARTITION_EOF:
                log.debug("%s [%s]: %s", message.topic(), message.partition(), error.str())
        if not records:
            return
        consumed: collections.Counter[str] = collections.Counter()
        malformed: collections.Counter[str] = collections.Counter()
        now = self._clock()
        with self._lock:
            for record in records:
                consumed[record.topic] += 1
                if not self._state.ingest(record, now):
                    malformed[record.topic] += 1
            sizes = self._state.buffer_sizes()
        metrics.record_batch(consumed, malformed)
        metrics.record_buffers(sizes)

    # -- the health thread ---------------------------------------------------------------------

    def _poll_health(self) -> None:
        settings = self.settings.kafka.client_settings(
            {"reconnect.backoff.max.ms": 1_000}, what="dashboard health check"
        )
        admin = AdminClient({**settings, **QUIET_CLIENT_CONFIG})
        readers = {group: group_reader(settings, group) for group in PIPELINE_GROUPS}
        memory = BrokerMemory()
        try:
            while True:
                try:
                    health = probe_cluster(
                        admin,
                        readers,
                        memory,
                        expected_brokers=self.settings.brokers,
                        now=self._clock(),
                    )
                except Exception:
                    log.exception("the cluster health check failed")
                else:
                    with self._lock:
                        self._health = health
                    if health.reachable:
                        metrics.BROKERS_UP.set(len(health.brokers_up))
                        metrics.UNDER_REPLICATED.set(health.under_replicated)
                if self._stop.wait(self.settings.health_interval_s):
                    return
        finally:
            for reader in readers.values():
                reader.close()


_shared: LiveData | None = None
_shared_lock = threading.Lock()


def shared_live_data(settings: DashboardSettings) -> LiveData:
    """The process's one LiveData, started (with the metrics endpoint) on first use.

    `taxi-dashboard` calls it before the server starts, so the buffers are full and the
    metrics served before anyone opens the page; the app's cached resource finds it running.
    """
    global _shared  # noqa: PLW0603 - one reader per process is the point
    with _shared_lock:
        if _shared is None:
            metrics.serve_metrics(settings.metrics_port, settings.metrics_address)
            _shared = LiveData(settings).start()
            atexit.register(_shared.stop)
        return _shared
