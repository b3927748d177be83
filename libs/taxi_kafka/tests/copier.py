"""An identity processor: copies records from one topic to another, exactly once.

It is the TransactionalProcessor with the simplest transform, for the crash tests
(test_failures.py), which run it as a script of its own:

    python libs/taxi_kafka/tests/copier.py --input T --output U --group G --instance I

SIGTERM or SIGINT stop it gracefully. `--crash-after N` makes it SIGKILL itself once it has
produced N records, inside an open transaction: a crash test's deterministic "mid-batch".
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence

from taxi_kafka import (
    DEAD_LETTERS,
    BatchPolicy,
    KafkaConfig,
    KafkaProducer,
    OutputRecord,
    TransactionalProcessor,
    identity,
    stop_on_signals,
)

SERVICE = "copier"


def crash_after(limit: int, grace: float = 2.0) -> None:
    """Make this process SIGKILL itself once `limit` records were handed to a producer, which
    the processor does only inside a transaction: a deterministic crash mid-transaction. First
    the producer is polled for `grace` seconds, so that the records usually reach the brokers
    (librdkafka was seen to send a transaction's records only while the application polls or
    commits). For crash tests only: it patches KafkaProducer in this process."""
    produce_all = KafkaProducer.produce_all
    handed = itertools.count(1)

    # `self`: it replaces the method, so its signature is the method's.
    def produce_then_maybe_crash(self: KafkaProducer, records: Iterable[OutputRecord]) -> None:
        for record in records:
            produce_all(self, (record,))
            if next(handed) >= limit:
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    self.poll(0.1)
                os.kill(os.getpid(), signal.SIGKILL)

    KafkaProducer.produce_all = produce_then_maybe_crash  # type: ignore[method-assign]  # the crash, on purpose


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="copier.py", description=__doc__)
    parser.add_argument("--bootstrap-servers", help="default: $KAFKA_BOOTSTRAP_SERVERS or local")
    parser.add_argument("-X", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--dead-letters", default=DEAD_LETTERS)
    parser.add_argument("--max-messages", type=int, default=BatchPolicy.max_messages)
    parser.add_argument("--max-wait", type=float, default=BatchPolicy.max_wait)
    parser.add_argument("--crash-after", type=int, metavar="N")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    if args.crash_after:
        crash_after(args.crash_after)
    processor = TransactionalProcessor(
        KafkaConfig.from_env(bootstrap_servers=args.bootstrap_servers, overrides=args.overrides),
        service=SERVICE,
        instance=args.instance,
        group_id=args.group,
        input_topics=[args.input],
        transform=functools.partial(identity, output_topic=args.output),
        dead_letter_topic=args.dead_letters,
        batch=BatchPolicy(args.max_messages, args.max_wait),
    )
    with stop_on_signals(threading.Event()) as stop:
        processor.run(stop)


if __name__ == "__main__":
    main()
