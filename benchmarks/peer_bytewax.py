"""The predictor's job written as a bytewax 0.21 dataflow: `taxi bench` part `bytewax`.

bytewax's Kafka input (`bytewax.connectors.kafka.operators.input`: a KafkaSource) reads the
trip starts in batches (up to --batch-size a partition per poll), `flat_map_batch` predicts each
batch it is handed in one go (the JSON of each trip start decoded, then one frame, one features
call and one model call for the batch, each prediction encoded as JSON), and its Kafka output (a
KafkaSink) writes the predictions under the trips' keys, flushing after each batch.

Its guarantee is at-least-once at best: bytewax commits no offsets to Kafka and writes with a
plain (idempotent, not transactional) producer; with a recovery store it resumes from its last
snapshot, reprocessing what came after. None is configured here (bytewax at its fastest), so a
restart would read the topic from its start again. It reads read_committed, as librdkafka does
by default, so the bench's backlog stays hidden until it is committed.

It runs in the workspace's environment (bytewax is a dev dependency), with the predictor's
confluent-kafka and librdkafka. Its Kafka settings are those of the environment
(peer_common.kafka_settings), security included; SIGTERM stops it (exit status 0).

    python benchmarks/peer_bytewax.py --source T --sink T2 --group G --model M.skops
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import orjson
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.run import cli_main
from peer_common import (
    BOOTSTRAP_KEY,
    PRODUCER_SETTINGS,
    PeerModel,
    beyond_brokers,
    job_arguments,
    kafka_settings,
)

log = logging.getLogger("peer_bytewax")

Message = KafkaSourceMessage[bytes | None, bytes | None]
Output = KafkaSinkMessage[bytes | None, bytes | None]


def dataflow(
    settings: dict[str, str],
    *,
    source: str,
    sink: str,
    group: str,
    model: PeerModel,
    batch_size: int,
) -> Dataflow:
    brokers = settings[BOOTSTRAP_KEY].split(",")
    extra = beyond_brokers(settings)
    consumer = {
        **extra,
        # bytewax assigns the partitions itself and commits nothing: the group only names it.
        "group.id": group,
        "isolation.level": "read_committed",
    }
    producer = {**PRODUCER_SETTINGS, **extra}

    def predict(batch: list[Message]) -> list[Output]:
        trips = [orjson.loads(_value(message)) for message in batch]
        return [
            KafkaSinkMessage(message.key, orjson.dumps(prediction))
            for message, prediction in zip(batch, model.predict_batch(trips), strict=True)
        ]

    flow = Dataflow("taxi-bench-bytewax")
    trip_starts = kop.input(
        "trip-starts",
        flow,
        brokers=brokers,
        topics=[source],
        add_config=consumer,
        batch_size=batch_size,
    )
    # A consumer error stops the dataflow (and the bench, which checks on it).
    op.inspect("errors", trip_starts.errs).then(op.raises, "stop-on-error")
    predictions = op.flat_map_batch("predict", trip_starts.oks, predict)
    kop.output("predictions", predictions, brokers=brokers, topic=sink, add_config=producer)
    return flow


def _value(message: Message) -> bytes:
    if message.value is None:
        raise ValueError(f"a record without a value at offset {message.offset}")
    return message.value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    parser = job_arguments(__doc__.split("\n\n")[0], "A group.id (nothing is committed).")
    parser.add_argument("--batch-size", type=int, default=1000, help="KafkaSource's batch_size.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    flow = dataflow(
        kafka_settings(),
        source=args.source,
        sink=args.sink,
        group=args.group,
        model=PeerModel(args.model),
        batch_size=args.batch_size,
    )
    # bytewax runs Python's signal handlers while it runs: SIGTERM stops it as Ctrl+C does (it
    # stops its workers, closes its consumers and raises "signal received"). Its output is
    # flushed after every batch: nothing written is lost.
    signal.signal(signal.SIGTERM, _interrupt)
    log.info("running the dataflow on %s -> %s", args.source, args.sink)
    try:
        cli_main(flow, workers_per_process=1)
    except BytewaxRuntimeError as exc:
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
        log.info("stopped by a signal")
        sys.exit(0)


if __name__ == "__main__":
    main()
