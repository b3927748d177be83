"""The aggregator's per-batch work (decode, join, windows, changelog and metrics records) over a
long stream, early against late in the same run: its cost per event must not grow with the
history behind it. The baseline is decoding the same events alone, the least any consumer does.

    uv run python benchmarks/bench_aggregator.py [--data PATH] [--trips 50000] [--batch 1000]

Prints one JSON object: microseconds per event over the first and the last tenth of the stream,
the events per second that makes on one core, and ratios. Kafka plays no part: the messages are
built in memory, in the order and with the timestamps the topics would give them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from confluent_kafka import Message
from sample_data import add_data_option, sample_trips

from taxi_events import Prediction, TripFinished, decode, encode
from taxi_events import testing as events
from taxi_kafka import FINISHED_TRIPS, ML_PREDICTIONS
from taxi_services.aggregator import AggregateTransform
from taxi_stream import Aggregation

RATE = 2_000  # trips a second of record time: the top rate of `taxi bench` (d)
END_AFTER_MS = 3_000  # a trip's end follows its start by this much, as the producers replay it
# The aggregator's defaults: 120 s TTL, 10 s windows, 2 s grace.
TTL_MS, WINDOW_MS, GRACE_MS = 120_000, 10_000, 2_000
# Events per second one aggregator must keep up with at RATE: a prediction and an end per trip.
TARGET_EVENTS_PER_S = 2 * RATE


def durations(path: Path, trips: int) -> tuple[np.ndarray, str]:
    """Real trip durations (or synthetic ones), repeated to `trips`."""
    frame, description = sample_trips(path, trips)
    seconds = frame["trip_duration"].to_numpy(dtype=np.float64)
    return np.resize(seconds, trips), description


def stream(actual: np.ndarray) -> list[Message]:
    """Each trip's prediction (off by a log-normal error, as a model's are) at its start and its
    end END_AFTER_MS later, merged in record-time order."""
    predicted = actual * np.random.default_rng(1).lognormal(0.0, 0.4, actual.size)
    timed: list[tuple[int, str, bytes]] = []
    for n, (real, guess) in enumerate(zip(actual.tolist(), predicted.tolist(), strict=True)):
        source = "train" if n % 2 else "test"
        start_ms = n * 1000 // RATE
        trip_id = f"id{n:08d}"
        timed.append(
            (
                start_ms,
                ML_PREDICTIONS,
                encode(events.prediction(trip_id, source=source, predicted_duration=guess)),
            )
        )
        timed.append(
            (
                start_ms + END_AFTER_MS,
                FINISHED_TRIPS,
                encode(events.trip_finished(trip_id, source=source, trip_duration=real)),
            )
        )
    timed.sort(key=lambda record: record[0])
    return [
        Message(topic=topic, partition=0, offset=offset, value=value, timestamp=(1, ms))
        for offset, (ms, topic, value) in enumerate(timed)
    ]


def aggregate_us(messages: Sequence[Message], batch: int) -> list[float]:
    """Microseconds per event of each batch through the aggregator's transform, the changelog
    records taken as a commit would."""
    transform = AggregateTransform(
        lambda: Aggregation.create(TTL_MS, WINDOW_MS, GRACE_MS), lambda state: None
    )
    transform.rolled_back()
    per_batch = []
    for first in range(0, len(messages), batch):
        chunk = messages[first : first + batch]
        started = time.perf_counter()
        transform(chunk)
        per_batch.append((time.perf_counter() - started) / len(chunk) * 1e6)
    return per_batch


def decode_us(messages: Sequence[Message]) -> float:
    # Keyed by what Message.topic() is typed to return; an assert in the loop would be timed.
    types: dict[str | None, type[Prediction | TripFinished]] = {
        ML_PREDICTIONS: Prediction,
        FINISHED_TRIPS: TripFinished,
    }
    started = time.perf_counter()
    for message in messages:
        decode(message.value(), types[message.topic()])
    return (time.perf_counter() - started) / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--trips", type=int, default=50_000, help="trips in the stream")
    parser.add_argument("--batch", type=int, default=1_000, help="messages per batch")
    args = parser.parse_args()

    actual, description = durations(args.data, args.trips)
    messages = stream(actual)
    per_batch = aggregate_us(messages, args.batch)
    tenth = max(1, len(per_batch) // 10)
    first = float(np.mean(per_batch[:tenth]))
    last = float(np.mean(per_batch[-tenth:]))
    decoding = decode_us(messages)
    events_per_s = 1e6 / last
    print(
        json.dumps(
            {
                "data": description,
                "trips": args.trips,
                "events": len(messages),
                "batch": args.batch,
                "record_time_s": round(args.trips / RATE, 1),
                "us_per_event": {
                    "decode_only": round(decoding, 2),
                    "aggregate_first_tenth": round(first, 2),
                    "aggregate_last_tenth": round(last, 2),
                },
                "events_per_s_one_core": round(events_per_s),
                "ratios": {
                    "last_over_first": round(last / first, 2),
                    "aggregate_over_decode": round(last / decoding, 2),
                },
                "targets": [
                    {
                        "name": "no_growth",
                        "description": "cost per event in the last tenth over the first",
                        "value": round(last / first, 2),
                        "threshold": 1.5,
                        "met": last / first <= 1.5,
                    },
                    {
                        "name": "keeps_up",
                        "description": f"events/s on one core, against {RATE:,} trips/s",
                        "value": round(events_per_s),
                        "threshold": TARGET_EVENTS_PER_S,
                        "met": events_per_s >= TARGET_EVENTS_PER_S,
                    },
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
