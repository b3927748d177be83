"""Broker failures and processor crashes on the real cluster: nothing acknowledged is lost, nothing
is duplicated, order per key is kept."""

from __future__ import annotations

import collections
import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from taxi_kafka._admin import QUIET_CLIENT_CONFIG, is_transient
from taxi_kafka.cluster import NODE_IDS, LocalCluster
from taxi_kafka.consumer import COORDINATOR_RETRY
from taxi_kafka.producer import KafkaProducer
from taxi_kafka.testing import numbered, produce_all, read_all

COPIER = Path(__file__).with_name("copier.py")

pytestmark = pytest.mark.kafka

COUNT = 20_000
WAIT = 120.0


def by_key(records: Sequence[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    grouped = collections.defaultdict(list)
    for key, value in records:
        grouped[key].append(value)
    return dict(grouped)


def pairs(messages: Sequence[Message]) -> list[tuple[bytes, bytes]]:
    return [(m.key(), m.value()) for m in messages]


def wait_for(check: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:.0f} s")
        time.sleep(0.2)


def assert_each_once(acknowledged: list[bytes], consumed: list[bytes]) -> None:
    duplicates = [v for v, n in collections.Counter(consumed).items() if n > 1]
    assert duplicates == []
    assert set(acknowledged) <= set(consumed)


def leaders(cluster: LocalCluster, topic: str) -> dict[int, int]:
    """The leader of each partition of `topic`, per the cluster's metadata (-1: none)."""
    return {p.partition: p.leader for p in cluster.status().partitions if p.topic == topic}


@pytest.mark.parametrize("failure", ["stop", "kill"])
def test_every_acknowledged_record_survives_losing_the_leader(
    kafka_cluster, kafka_config, make_topic, failure, record_property
):
    topic = make_topic()
    victim = kafka_cluster.leader_of_most_partitions([topic])
    led = {p for p, leader in leaders(kafka_cluster, topic).items() if leader == victim}
    acked: list[bytes] = []
    ack_times: list[float] = []
    ack_partitions: list[int] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is None:
            acked.append(message.value())
            ack_times.append(time.monotonic())
            ack_partitions.append(message.partition())

    fail = {"stop": kafka_cluster.stop_broker, "kill": kafka_cluster.kill_broker}[failure]
    failing: list[float] = []  # when the failure began, and when the broker was gone

    def take_the_leader_down() -> None:
        failing.append(time.monotonic())
        fail(victim)
        failing.append(time.monotonic())

    broker_down = threading.Thread(target=take_the_leader_down)
    with KafkaProducer(kafka_config, on_delivery=delivered) as producer:
        for i, (key, value) in enumerate(numbered(COUNT)):
            if i == COUNT // 2:
                broker_down.start()
            if i == COUNT - COUNT // 20:
                # The last records go out only once the broker is gone: only a new leader can
                # acknowledge those of its partitions.
                broker_down.join(WAIT)
            producer.produce(topic, value, key)
            if i % 500 == 0:  # spread the second half over the failure
                producer.poll(0.1)
        assert producer.flush(WAIT) == 0
    broker_down.join(WAIT)
    # The leader went down mid-stream: acknowledgements came before the failure began, records
    # were still unacknowledged then, and the partitions it led took acknowledgements after it
    # was gone, from the replicas that took over.
    began, gone = failing
    assert 0 < sum(t < began for t in ack_times) < COUNT
    acked_on_led_after = sum(
        t > gone and p in led for t, p in zip(ack_times, ack_partitions, strict=True)
    )
    assert led
    assert acked_on_led_after > 0
    wait_for(
        lambda: all(leaders(kafka_cluster, topic).get(p) not in (victim, -1) for p in led),
        timeout=30,
        what=f"new leaders for the partitions broker {victim} led",
    )
    assert kafka_cluster.pid(victim) is None
    # The longest wait between two acknowledgements: the failover as producers see it.
    stall = max(b - a for a, b in itertools.pairwise(ack_times))
    record_property("failover_stall_seconds", round(stall, 2))
    print(f"{failure} leader {victim}: longest gap between acks {stall:.2f} s")
    assert producer.stats.failed == 0
    assert len(acked) == COUNT
    assert_each_once(acked, [m.value() for m in read_all(kafka_config.bootstrap_servers, topic)])


def test_writes_pause_with_two_brokers_down_and_resume_when_one_returns(
    kafka_cluster, kafka_config, make_topic
):
    topic = make_topic()
    down = list(NODE_IDS[:2])
    for node in down:
        assert kafka_cluster.kill_broker(node)
    records = numbered(5000)
    # A small queue, so produce() itself has to wait.
    producer = KafkaProducer(kafka_config, settings={"queue.buffering.max.messages": 500})
    sent = threading.Event()

    def produce() -> None:
        for key, value in records:
            producer.produce(topic, value, key)
        sent.set()

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    # No quorum, no acknowledgement: the writer blocks inside produce() and nothing fails.
    assert not sent.wait(8.0)
    assert producer.stats.delivered < len(records)
    assert producer.stats.failed == 0

    assert kafka_cluster.start_broker(down[0])
    assert sent.wait(WAIT)
    writer.join(WAIT)
    assert producer.close(WAIT) == 0
    assert producer.stats.failed == 0
    assert producer.stats.delivered == len(records)
    consumed = pairs(read_all(kafka_config.bootstrap_servers, topic))
    assert sorted(consumed) == sorted(records)


class Copier:
    """The copier script (copier.py, next to this file) as a child process, its log in
    `log_dir`."""

    def __init__(self, bootstrap: str, source: str, sink: str, log_dir: Path) -> None:
        self.args = [
            *("--bootstrap-servers", bootstrap, "--input", source, "--output", sink),
            *("--group", f"copier-{sink}", "--instance", "0"),
            *("--max-messages", "500", "--max-wait", "0.2"),
        ]
        self.log_dir = log_dir
        self.runs = 0

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        self.runs += 1
        log_file = (self.log_dir / f"copier-{self.runs}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, str(COPIER), *self.args, *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """How many records of `topic` the group has committed (offsets start at 0). Retried while
    the group's coordinator moves: the killed broker may have been it (NOT_COORDINATOR)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **QUIET_CLIENT_CONFIG})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        wanted = [TopicPartition(topic, p) for p in partitions]
        offsets = COORDINATOR_RETRY.call(
            lambda: consumer.committed(wanted, timeout=10),
            retry_on=(KafkaException,),
            retryable=is_transient,
            what="committed offsets",
        )
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    process.send_signal(sig)
    return process.wait(WAIT)


@pytest.mark.parametrize("broker_failure", [False, True], ids=["brokers-up", "broker-killed"])
def test_a_crashed_processor_resumes_exactly_once(
    kafka_cluster, kafka_config, make_topic, tmp_path, broker_failure
):
    bootstrap = kafka_config.bootstrap_servers
    source, sink = make_topic(), make_topic()
    records = numbered(COUNT, keys=100)
    produce_all(bootstrap, source, records)
    copier = Copier(bootstrap, source, sink, tmp_path)
    group = f"copier-{sink}"

    def progress(at_least: int) -> Callable[[], bool]:
        return lambda: committed_total(bootstrap, group, source) >= at_least

    # A deterministic crash inside an open transaction, with records produced in it.
    crashing = copier.start("--crash-after", "5250")
    assert crashing.wait(WAIT) == -signal.SIGKILL
    # It died inside the transaction of the batch that crossed 5250 records.
    assert committed_total(bootstrap, group, source) < 5250
    # And a crash at whatever moment the test gets to it.
    running = copier.start()
    wait_for(progress(8000), what="progress after the first crash")
    assert stop(running, signal.SIGKILL) == -signal.SIGKILL

    final = copier.start()
    if broker_failure:
        wait_for(progress(12000), what="progress before the broker failure")
        assert kafka_cluster.kill_broker(kafka_cluster.leader_of_most_partitions([sink]))
    wait_for(progress(COUNT), what="all input committed")
    assert stop(final, signal.SIGTERM) == 0

    output = pairs(read_all(bootstrap, sink))
    assert len(output) == COUNT
    assert by_key(output) == by_key(records)
