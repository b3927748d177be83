"""What one Kafka transaction costs the local cluster, by how many partitions the brokers hold.

A transactional producer commits a few records to a few partitions, back to back, for
--seconds; the brokers' CPU over that time (from /proc) is divided by the transactions, and
each transaction's time is split: until its records are acknowledged (registering the
partitions with the transaction comes first), then the commit. Each
configuration runs on a fresh scratch cluster: Kafka's internal topics at their default of 50
partitions each and at the local cluster's 6 (BROKER_SETTINGS), each also with --extra-topics
idle 6-partition topics added, as a shared test cluster gathers them. Prints one JSON object.

    uv run python benchmarks/transaction_cost.py [--seconds 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid
from typing import Any

from json_report import add_out_option, emit

from taxi_kafka import KafkaProducer, TopicSpec, ensure_topics
from taxi_kafka.cluster import BROKER_SETTINGS, NODE_IDS, LocalCluster, scratch_cluster
from taxi_services.bench.figures import busy_share
from taxi_services.bench.probes import machine_ticks, process_cpu_s
from taxi_services.provenance import provenance

INTERNAL = ("offsets.topic.num.partitions", "transaction.state.log.num.partitions")


def partitions_held(cluster: LocalCluster) -> int:
    topics = cluster.admin().list_topics(timeout=30).topics.values()
    return sum(len(topic.partitions) for topic in topics)


def add_idle_topics(cluster: LocalCluster, count: int) -> None:
    name = uuid.uuid4().hex[:6]
    ensure_topics(cluster.admin(), [TopicSpec(f"idle-{name}-{i}") for i in range(count)])


def back_to_back(cluster: LocalCluster, seconds: float, partitions: int) -> dict[str, Any]:
    """Commit one record to each of `partitions` partitions per transaction, for `seconds`."""
    topic = f"txn-cost-{uuid.uuid4().hex[:6]}"
    ensure_topics(cluster.admin(), [TopicSpec(topic, partitions)])
    config = cluster.kafka_config()
    producer = KafkaProducer(config, transactional_id=topic, name="transaction cost")
    client = producer.client
    client.init_transactions(60)
    brokers = [pid for node in NODE_IDS if (pid := cluster.pid(node)) is not None]
    # Warm-up: the first transactions find the coordinator and open connections.
    for _ in range(20):
        client.begin_transaction()
        client.produce(topic, b"x" * 200, partition=0)
        client.commit_transaction(30)
    durations: list[float] = []
    # Until every record is acknowledged (the partitions' registration with the transaction
    # included), then the commit itself.
    sent: list[float] = []
    committed: list[float] = []
    cpu_start, machine_start = process_cpu_s(brokers), machine_ticks()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        client.begin_transaction()
        for partition in range(partitions):
            client.produce(topic, b"x" * 200, partition=partition)
        client.flush(30)
        acknowledged = time.perf_counter()
        client.commit_transaction(30)
        finished = time.perf_counter()
        durations.append(finished - began)
        sent.append(acknowledged - began)
        committed.append(finished - acknowledged)
    elapsed = time.perf_counter() - start
    cpu = process_cpu_s(brokers) - cpu_start
    busy = busy_share(machine_start, machine_ticks())
    percentiles = statistics.quantiles(durations, n=100)
    return {
        "transactions": len(durations),
        "per_s": round(len(durations) / elapsed, 1),
        "p50_ms": round(percentiles[49] * 1000, 1),
        "p99_ms": round(percentiles[98] * 1000, 1),
        "records_acknowledged_p50_ms": round(statistics.median(sent) * 1000, 1),
        "commit_p50_ms": round(statistics.median(committed) * 1000, 1),
        "brokers_cpu_ms_per_transaction": round(cpu * 1000 / len(durations), 1),
        "brokers_cores": round(cpu / elapsed, 2),
        "machine_busy": None if busy is None else round(busy, 2),
    }


def measure(
    internal: int, extra_topics: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    overrides = {key: str(internal) for key in INTERNAL}
    rows = []
    with scratch_cluster("taxi-txn-cost-", broker_overrides=overrides) as cluster:
        added = 0
        for extra in extra_topics:
            add_idle_topics(cluster, extra - added)
            added = extra
            time.sleep(args.settle)  # leaders elected, followers caught up: idle again
            row = {
                "internal_topic_partitions": internal,
                "extra_idle_topics": extra,
                "partitions_held": partitions_held(cluster),
                **back_to_back(cluster, args.seconds, args.partitions),
            }
            logging.warning("%s", row)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--partitions", type=int, default=6, help="written per transaction")
    parser.add_argument("--extra-topics", default="0,120", help="idle topics added, in turn")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before measuring")
    add_out_option(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    extra = [int(n) for n in args.extra_topics.split(",")]
    local = int(BROKER_SETTINGS[INTERNAL[0]])
    rows = [row for internal in (50, local) for row in measure(internal, extra, args)]
    emit(
        {
            "what": __doc__.splitlines()[0],
            "environment": provenance(),
            "command": "uv run python benchmarks/transaction_cost.py "
            f"--seconds {args.seconds:g} --partitions {args.partitions} "
            f"--extra-topics {args.extra_topics} --settle {args.settle:g}",
            "records_per_transaction": args.partitions,
            "results": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
