"""The predictor's job written the way a quix-streams user writes it: `taxi bench` parts `quix`
and `quix-batched`.

quix: an `Application` with processing_guarantee="exactly-once" reads the trip starts as JSON
(value_deserializer="json"), `sdf.apply` predicts each one with the predictor's model (one frame,
one features call and one model call per record), and `sdf.to_topic` writes the prediction as
JSON under the trip's key. Offsets and outputs commit in one Kafka transaction per checkpoint.

quix-batched (--batch N): quix-streams hands a function one record at a time (`apply`,
`update`, `filter`, `to_topic`), and its windows gather records per message key. Its way to
aggregate records of many keys is to re-key them first: `group_by` gives every trip one key
(through a repartition topic), a tumbling count window of N `collect()`s them, and once it is
full (`final()`) `apply(..., expand=True)` predicts its N trips in one model call and emits a
prediction each, which `to_topic` writes under its trip's id. The window's state is kept in
RocksDB with a changelog topic, all in the same transactions. A window emits only once full:
the bench gives it backlogs of a whole number of windows.

It runs with the python of its own environment (benchmarks/peers/quix/.venv, which `taxi bench`
makes on first use): quixstreams 3.28.1 needs confluent-kafka<2.13, the workspace locks a newer
one. Its Kafka settings are those of the environment (peer_common.kafka_settings), security
included; it stops cleanly on SIGTERM, committing its checkpoint.

    .venv/bin/python benchmarks/peer_quix.py --source T --sink T2 --group G --model M.skops
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peer_common import (
    PRODUCER_SETTINGS,
    PeerModel,
    beyond_brokers,
    job_arguments,
    kafka_settings,
)
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig


def main(argv: Sequence[str] | None = None) -> None:
    parser = job_arguments(__doc__.split("\n\n")[0], "Consumer group.")
    parser.add_argument("--state-dir", type=Path, required=True, help="quix-streams' state.")
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        help="Seconds between checkpoints (quix-streams' default: 5).",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="0: one model call per record. N: group_by one key, count windows of N trips, "
        "one model call per window.",
    )
    args = parser.parse_args(argv)

    settings = kafka_settings()
    extra = beyond_brokers(settings)
    model = PeerModel(args.model)
    app = Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(settings, ignore_extras=True),
        consumer_group=args.group,
        processing_guarantee="exactly-once",
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        consumer_extra_config=extra,
        producer_extra_config={**PRODUCER_SETTINGS, **extra},
        state_dir=args.state_dir,
        # The bench made the input and output topics; quix-streams makes its own (group_by's
        # repartition topic, the windows' changelog).
        auto_create_topics=True,
    )
    trips = app.topic(args.source, value_deserializer="json")
    sdf = app.dataframe(trips)
    if not args.batch:
        # The key stays the input's: the trip's id, as bytes.
        predictions = app.topic(args.sink, value_serializer="json")
        sdf = sdf.apply(model.predict_one)
        sdf.to_topic(predictions)
    else:
        predictions = app.topic(args.sink, key_serializer="string", value_serializer="json")
        sdf = sdf.group_by(lambda trip: "all", name="one-key")
        sdf = sdf.tumbling_count_window(args.batch).collect().final()
        sdf = sdf.apply(lambda window: model.predict_batch(window["value"]), expand=True)
        sdf.to_topic(predictions, key=lambda prediction: prediction["trip_id"])
    app.run()


if __name__ == "__main__":
    main()
