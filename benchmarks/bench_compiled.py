"""Compiled trees (issue 22) against scikit-learn's: cost per trip, exactness, compile time.

Trains the served shape as `taxi train` does (time split of the real sample), compiles its trees
with treelite and tl2cgen into a fresh directory (so the compile is timed, not the cache), runs
the exactness check every load runs (boundary probe, sample trips, here the whole holdout too),
then times both on the holdout on the predictor's one model thread, interleaved round by round
so that a busy machine slows both alike: the trees alone, and the whole model (features too).

    uv run python benchmarks/bench_compiled.py [--data PATH] [--rounds 5] [--out FILE]

Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tl2cgen
import treelite
from json_report import add_out_option, emit
from sample_data import add_data_option, sample_trips
from threadpoolctl import threadpool_limits
from timing import per_trip_us

from taxi_model import INPUT_COLUMNS, TripDurationModel, train_model, with_compiled_trees
from taxi_services.predictor import MODEL_THREADS
from taxi_services.provenance import provenance

TOLERANCE = 1e-6  # log space: what any compiled path must meet on the whole holdout (issue 22)

SAMPLE_ROWS = 73_177  # the real sample's rows: the synthetic stand-in has as many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    add_out_option(parser)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()

    trips, description = sample_trips(args.data, SAMPLE_ROWS)
    result = train_model(trips, description)
    model = TripDurationModel(result.pipeline, result.card)
    booster = result.pipeline.named_steps["regressor"].booster_
    holdout = result.holdout[list(INPUT_COLUMNS)]
    features = result.pipeline.named_steps["features"].transform(holdout)

    with tempfile.TemporaryDirectory() as cache:
        # A first load compiles, checks and caches; a second (a restart) loads and checks.
        started = time.perf_counter()
        compiled = with_compiled_trees(model, rows=holdout, cache_dir=Path(cache))
        first_load_s = time.perf_counter() - started
        started = time.perf_counter()
        compiled = with_compiled_trees(model, rows=holdout, cache_dir=Path(cache))
        cached_load_s = time.perf_counter() - started
        trees = compiled.trees
        if trees is None:
            raise SystemExit("the compiled trees were refused: see the warning above")

        expected = booster.predict(features)
        holdout_difference = float(np.max(np.abs(trees.predict_log(features) - expected)))
        rows = features.to_numpy(dtype=np.float64)
        timings: dict[str, list[float]] = {
            name: [] for name in ("sklearn_trees", "compiled_trees", "sklearn_model", "compiled")
        }
        with threadpool_limits(MODEL_THREADS):
            for _ in range(args.rounds):
                timings["sklearn_trees"].append(
                    per_trip_us(lambda: booster.predict(features), len(rows), repeat=3)
                )
                timings["compiled_trees"].append(
                    per_trip_us(lambda: trees.predict_log(features), len(rows), repeat=3)
                )
                timings["sklearn_model"].append(
                    per_trip_us(lambda: model.predict(holdout), len(rows), repeat=3)
                )
                timings["compiled"].append(
                    per_trip_us(lambda: compiled.predict(holdout), len(rows), repeat=3)
                )
    us = {name: statistics.median(values) for name, values in timings.items()}
    emit(
        {
            "environment": {
                **provenance(),
                "command": "uv run python benchmarks/bench_compiled.py",
                "model_threads": MODEL_THREADS,
                "treelite": treelite.__version__,
                "tl2cgen": tl2cgen.__version__,
            },
            "data": description,
            "holdout_trips": len(rows),
            "rounds": int(booster.n_iter_),
            "max_leaf_nodes": int(booster.max_leaf_nodes),
            # Compiling is the difference: both loads run the same exactness check.
            "first_load_s": round(first_load_s, 1),
            "cached_load_s": round(cached_load_s, 2),
            "compile_s": round(first_load_s - cached_load_s, 1),
            "tolerance_log": TOLERANCE,
            "max_abs_diff_log_holdout": holdout_difference,
            "exact": holdout_difference <= TOLERANCE,
            "us_per_trip": {name: round(value, 2) for name, value in us.items()},
            # The fastest round of each: the least disturbed by whatever else runs.
            "us_per_trip_min": {name: round(min(values), 2) for name, values in timings.items()},
            "us_per_trip_rounds": {
                name: [round(v, 2) for v in values] for name, values in timings.items()
            },
            "trees_sklearn_over_compiled": round(us["sklearn_trees"] / us["compiled_trees"], 2),
            "model_sklearn_over_compiled": round(us["sklearn_model"] / us["compiled"], 2),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
