"""The predictor's codec: a batch of trip starts decoded into columns and its predictions
encoded from them, against the one-event codec (decode() per record, then a Prediction built
and encode()d per record), on the same records in the same run.

    uv run python benchmarks/bench_codec.py [--data PATH] [--records 20000] [--repeat 5]

Prints one JSON object: microseconds per record of each way, fastest of --repeat, and ratios.
Both ways give the same bytes (the tests check that); only the speed differs.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sample_data import add_data_option, sample_trips

from taxi_events import TripStarted, decode, encode
from taxi_events.columns import decode_trip_starts, encode_predictions, prediction_for
from taxi_stream import Replay

MODEL_VERSION = "bench"


def trip_start_values(path: Path, records: int) -> tuple[list[bytes], str]:
    """Encoded TripStarted records, as the producer writes them."""
    frame, description = sample_trips(path, records)
    replay = Replay(frame.head(records), "train")
    started = replay.step(now_ms=0, max_starts=records).started
    return [encode(trip) for trip in started], description


def fastest_us_per_record(run: Callable[[], object], records: int, repeat: int) -> float:
    seconds = min(timeit.repeat(run, number=1, repeat=repeat))
    return round(seconds / records * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--records", type=int, default=20_000, help="records per batch")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the fastest counts")
    args = parser.parse_args()

    values, description = trip_start_values(args.data, args.records)
    records = len(values)
    at = datetime.now(UTC)
    trips = [decode(value, TripStarted) for value in values]
    columns = decode_trip_starts(values).columns
    durations = [600.0 + row % 900 for row in range(records)]

    def encode_each() -> list[bytes]:
        return [
            encode(prediction_for(trip, duration, MODEL_VERSION, at))
            for trip, duration in zip(trips, durations, strict=True)
        ]

    figures = {
        "decode_each": fastest_us_per_record(
            lambda: [decode(value, TripStarted) for value in values], records, args.repeat
        ),
        "decode_batch": fastest_us_per_record(
            lambda: decode_trip_starts(values), records, args.repeat
        ),
        "encode_each": fastest_us_per_record(encode_each, records, args.repeat),
        "encode_batch": fastest_us_per_record(
            lambda: encode_predictions(columns, durations, MODEL_VERSION, at),
            records,
            args.repeat,
        ),
    }
    each = figures["decode_each"] + figures["encode_each"]
    batch = figures["decode_batch"] + figures["encode_batch"]
    print(
        json.dumps(
            {
                "data": description,
                "records": records,
                "us_per_record": figures,
                "ratios": {
                    "decode_each_over_batch": round(
                        figures["decode_each"] / figures["decode_batch"], 2
                    ),
                    "encode_each_over_batch": round(
                        figures["encode_each"] / figures["encode_batch"], 2
                    ),
                    "codec_each_over_batch": round(each / batch, 2),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
