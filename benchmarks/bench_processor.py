"""Exactly-once against at-least-once: the TransactionalProcessor copying records, against the
plain ConsumerLoop (consume, produce, wait for the acks, commit) doing the same identity work.

Both read the same pre-filled input topic, in the same run, each time in a fresh consumer group,
each variant into its own output topic, with the same batch policy. The variants take turns,
--repeat times each, and the best rate of each counts: the box is shared with three brokers, so
single runs are noisy. Prints one JSON object with both rates and their ratio. Uses the cluster
at --bootstrap-servers, or starts a local one on spare ports (and stops it after).

    uv run python benchmarks/bench_processor.py [--records N] [--bootstrap-servers HOSTS]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable

from consumer_loop import ConsumerLoop

from taxi_kafka import (
    BatchPolicy,
    CommitPolicy,
    Counters,
    KafkaConfig,
    KafkaConsumer,
    KafkaProducer,
    TopicSpec,
    TransactionalProcessor,
    admin_client,
    ensure_topics,
    identity,
)
from taxi_services.bench.cluster import Backlog, cluster_at

# A deadline per run, so a stuck run fails instead of hanging.
RUN_TIMEOUT = 600.0


def fill(config: KafkaConfig, topic: str, records: int, value_size: int) -> None:
    padding = b"x" * max(value_size - 8, 0)
    values = ((f"trip-{i % 10_000}".encode(), b"%08d" % i + padding) for i in range(records))
    Backlog(config, topic, values).release()


def timed(step: Callable[[], int], records: int, finish: Callable[[], None]) -> float:
    """Records per second of `step()` until `records` were processed, `finish()` included."""
    done = 0
    start = time.perf_counter()
    deadline = start + RUN_TIMEOUT
    while done < records:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{done} of {records} records processed in {RUN_TIMEOUT} s")
        done += step()
    finish()
    return records / (time.perf_counter() - start)


def plain_rate(
    config: KafkaConfig, source: str, sink: str, records: int, batch: BatchPolicy
) -> float:
    counters = Counters()
    loop = ConsumerLoop(
        KafkaConsumer(config, f"bench-plain-{uuid.uuid4().hex}", [source], observer=counters),
        KafkaProducer(config),
        functools.partial(identity, output_topic=sink),
        service="bench",
        batch=batch,
        commit=CommitPolicy(asynchronous=True),
        observer=counters,
    )
    # close() commits synchronously what is left: the loop's real ending.
    return timed(loop.step, records, loop.close)


def transactional_rate(
    config: KafkaConfig, source: str, sink: str, records: int, batch: BatchPolicy
) -> tuple[float, int]:
    counters = Counters()
    processor = TransactionalProcessor(
        config,
        service="bench",
        instance=uuid.uuid4().hex,
        group_id=f"bench-txn-{uuid.uuid4().hex}",
        input_topics=[source],
        transform=functools.partial(identity, output_topic=sink),
        batch=batch,
        observer=counters,
    )
    return timed(processor.step, records, processor.close), counters.commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", help="a running cluster (default: start one)")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--value-size", type=int, default=100, help="bytes per record")
    parser.add_argument("--max-messages", type=int, default=BatchPolicy.max_messages)
    parser.add_argument("--max-wait", type=float, default=BatchPolicy.max_wait)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batch = BatchPolicy(args.max_messages, args.max_wait)

    with cluster_at(args.bootstrap_servers) as cluster:
        config = cluster.config
        run = uuid.uuid4().hex[:8]
        source, plain_sink, txn_sink = (f"bench-{name}-{run}" for name in ("in", "plain", "txn"))
        ensure_topics(
            admin_client(config.bootstrap_servers, **config.settings),
            [TopicSpec(t) for t in (source, plain_sink, txn_sink)],
        )
        fill(config, source, args.records, args.value_size)
        plain_runs, txn_runs = [], []
        for _ in range(args.repeat):
            plain_runs.append(plain_rate(config, source, plain_sink, args.records, batch))
            txn_runs.append(transactional_rate(config, source, txn_sink, args.records, batch))
        plain = max(plain_runs)
        transactional, transactions = max(txn_runs)
    print(
        json.dumps(
            {
                "records": args.records,
                "value_size": args.value_size,
                "max_messages": args.max_messages,
                "max_wait": args.max_wait,
                "repeat": args.repeat,
                "plain_records_per_s": round(plain),
                "transactional_records_per_s": round(transactional),
                "plain_runs": [round(rate) for rate in plain_runs],
                "transactional_runs": [round(rate) for rate, _ in txn_runs],
                "transactions": transactions,
                "ratio": round(transactional / plain, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
