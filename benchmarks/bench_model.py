"""Model speed: training time, batch prediction, and single-row against batch per-trip cost.

Predictions run on the predictor's one model thread (taxi_services.predictor.MODEL_THREADS), and
a batch's cost is also split into the features and the trees.

    uv run python benchmarks/bench_model.py [--data PATH] [--single-rows 200]

Prints one JSON object. Targets: training on the 73k-row sample under 60 s; a 10,000-trip
batch predicted under 100 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pandas as pd
from sample_data import add_data_option, sample_trips
from threadpoolctl import threadpool_limits
from timing import timed

from taxi_model import INPUT_COLUMNS, train_model
from taxi_services.predictor import MODEL_THREADS

BATCH = 10_000
SAMPLE_ROWS = 73_177  # the real sample's rows: the synthetic stand-in has as many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--single-rows", type=int, default=200, help="rows predicted one by one")
    args = parser.parse_args()

    trips, description = sample_trips(args.data, SAMPLE_ROWS)
    started = time.perf_counter()
    result = train_model(trips, description)
    training_s = time.perf_counter() - started

    pipeline = result.pipeline
    features, regressor = pipeline.named_steps["features"], pipeline.named_steps["regressor"]
    batch = pd.concat([trips] * (BATCH // len(trips) + 1)).head(BATCH)[list(INPUT_COLUMNS)]
    with threadpool_limits(MODEL_THREADS):
        pipeline.predict(batch)  # warm-up
        batch_s = statistics.median(timed(lambda: pipeline.predict(batch), repeat=7))
        engineered = features.transform(batch)
        features_s = statistics.median(timed(lambda: features.transform(batch), repeat=7))
        trees_s = statistics.median(timed(lambda: regressor.predict(engineered), repeat=7))
        rows = [batch.iloc[[i]] for i in range(args.single_rows)]
        single_s = (
            statistics.median(timed(lambda: [pipeline.predict(row) for row in rows], repeat=3))
            / args.single_rows
        )
    batch_per_trip_s = batch_s / BATCH

    print(
        json.dumps(
            {
                "data": description,
                "train_rows": result.card.data.train_rows,
                "training_s": round(training_s, 2),
                "training_target_s": 60,
                "holdout_rmsle": round(result.card.holdout.rmsle or 0.0, 4),
                "batch_size": BATCH,
                "batch_predict_ms": round(batch_s * 1000, 1),
                "batch_predict_target_ms": 100,
                "model_threads": MODEL_THREADS,
                "rounds": regressor.booster_.n_iter_,
                "per_trip_batch_us": round(batch_per_trip_s * 1e6, 2),
                "per_trip_features_us": round(features_s / BATCH * 1e6, 2),
                "per_trip_trees_us": round(trees_s / BATCH * 1e6, 2),
                "per_trip_single_row_us": round(single_s * 1e6, 1),
                "single_row_over_batch_per_trip": round(single_s / batch_per_trip_s, 1),
                "targets_met": training_s < 60 and batch_s < 0.1,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
