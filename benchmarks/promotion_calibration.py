"""Promotion calibration (issue 20): how far apart two models of equal quality score on the same
live trips, and so which `delta` and `min_trips` the automatic promotion policy defaults to.

    uv run python benchmarks/promotion_calibration.py [--data PATH] [--out FILE]

On the real Kaggle sample, split by time as `taxi train` splits it, it trains the model
`taxi train` makes (the whole training fold), two models of equal quality (each on one half of
the training fold: alternate trips by pickup time) and a worse one (a tenth of it). The live
replay scores models on the held-out trips (the latest fifth by pickup time), so the figures are
taken there, from each trip's squared log error under each model.

- Equal models: the two half models' errors, swapped between them at random block by block, so
  the two are equal by construction and still paired trip by trip. A trial is a moving-block
  bootstrap of the held-out trips in pickup order (blocks of consecutive trips keep the hour and
  the day's traffic together, as a live replay does), looked at as the policy would: from
  `min_trips` on, every `LOOK_EVERY` trips, up to `HORIZON` trips. A false promotion is a trial
  in which the champion's RMSLE is ever `delta` above the challenger's.
- For each `min_trips` of a grid: the spread of the difference at `min_trips`, and the smallest
  `delta` that promotes an equal model in at most 1% of trials.
- At the policy's defaults: the false-promotion rate (also with trips drawn one by one), and how
  often and how soon a really better challenger is promoted: the full model against the tenth
  one, and against the full model made worse by exactly 1, 1.5, 2 and 3 times `delta` (its log
  predictions moved towards the tenth model's).

Prints one JSON object; `--out` also writes it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd
from json_report import add_out_option, emit
from sample_data import add_data_option, sample_trips

from taxi_model import INPUT_COLUMNS, build_pipeline, time_split, train_model
from taxi_services.provenance import provenance
from taxi_stream import DEFAULT_DELTA, DEFAULT_MIN_TRIPS

Array = npt.NDArray[np.float64]

SEED = 20
BLOCK_TRIPS = 50  # about 3 hours of the sample's held-out trips
LOOK_EVERY = 100  # trips between two looks: a window of the aggregator holds more at 50 trips/s
HORIZON = 20_000  # trips a trial runs at most: the length of issue 20's drift-free replay
REPLICATES = 2_000
CHECK_REPLICATES = 10_000  # for the false-promotion rate at the defaults
MIN_TRIPS_GRID = (200, 500, 1_000, 2_000, 4_000)  # each a look: a multiple of LOOK_EVERY
FALSE_PROMOTION_TARGET = 0.01
GAPS_IN_DELTAS = (1.0, 1.5, 2.0, 3.0)
CHUNK = 250  # trials computed at once: 250 x 20,000 trips of float64 is 40 MB an array


@attrs.frozen
class HeldOut:
    """The held-out trips in pickup order: their log durations and each model's log
    predictions."""

    log_actual: Array
    log_predicted: dict[str, Array]

    def errors(self, model: str) -> Array:
        """Each trip's squared log error under `model`."""
        return np.square(self.log_predicted[model] - self.log_actual)

    def worse_by(self, gap: float) -> Array:
        """Squared log errors of the full model made worse by exactly `gap` RMSLE: its log
        predictions moved the fraction w towards the tenth model's (past it for w > 1), with w
        solving mean((r + w d)^2) = (rmsle + gap)^2, r its residuals and d the move."""
        residual = self.log_predicted["full"] - self.log_actual
        towards = self.log_predicted["tenth"] - self.log_predicted["full"]
        a = float(np.mean(residual**2))
        b = float(np.mean(residual * towards))
        c = float(np.mean(towards**2))
        w = (-b + math.sqrt(b * b - c * (a - (math.sqrt(a) + gap) ** 2))) / c
        return np.square(residual + w * towards)


def rmsle(errors: Array) -> float:
    return math.sqrt(float(errors.mean()))


def train_models(trips: pd.DataFrame, description: str) -> tuple[HeldOut, dict[str, Any]]:
    """The four models' predictions of the held-out trips, and what they were trained on."""
    started = time.perf_counter()
    result = train_model(trips, description, split="time")  # the model `taxi train` makes
    labelled = trips[trips["trip_duration"] > 0].reset_index(drop=True)
    train_idx, held_idx, cutoff = time_split(labelled["pickup_datetime"])
    train = labelled.iloc[train_idx].sort_values("pickup_datetime", kind="stable")
    held_out = labelled.iloc[held_idx].sort_values("pickup_datetime", kind="stable")
    full = result.holdout.set_index("id").loc[held_out["id"], "predicted_duration"]
    folds = {"half_a": train.iloc[0::2], "half_b": train.iloc[1::2], "tenth": train.iloc[0::10]}
    predicted = {"full": full.to_numpy(dtype=np.float64)}
    for name, fold in folds.items():
        pipeline = build_pipeline(random_state=SEED)
        pipeline.fit(fold[list(INPUT_COLUMNS)], fold["trip_duration"])
        predicted[name] = pipeline.predict(held_out[list(INPUT_COLUMNS)])
    scored = HeldOut(
        np.log1p(held_out["trip_duration"].to_numpy(dtype=np.float64)),
        {name: np.log1p(np.asarray(p, dtype=np.float64)) for name, p in predicted.items()},
    )
    trained_on = {"full": len(train)} | {name: len(fold) for name, fold in folds.items()}
    summary = {
        "cutoff": cutoff.isoformat(),
        "held_out_trips": len(held_out),
        "held_out_pickups": [
            held_out["pickup_datetime"].min().isoformat(),
            held_out["pickup_datetime"].max().isoformat(),
        ],
        "models": {
            name: {
                "trained_on_trips": rows,
                "held_out_rmsle": round(rmsle(scored.errors(name)), 4),
            }
            for name, rows in trained_on.items()
        },
        "share_of_the_worst_1pct_of_trips": worst_share(scored),
        "training_s": round(time.perf_counter() - started, 1),
    }
    return scored, summary


def worst_share(scored: HeldOut) -> dict[str, float]:
    """How much of the full model's squared log error, and of the variance of the two half
    models' difference, the 1% of trips that contribute most carry."""

    def top(values: Array) -> float:
        ordered = np.sort(values)[::-1]
        return round(float(ordered[: len(values) // 100].sum() / ordered.sum()), 3)

    difference = scored.errors("half_a") - scored.errors("half_b")
    return {
        "full_squared_log_error": top(scored.errors("full")),
        "half_models_squared_difference": top(difference**2),
    }


def resample(
    champion: Array,
    challenger: Array,
    rng: np.random.Generator,
    trials: int,
    *,
    swap: bool,
    block: int,
) -> tuple[Array, Array]:
    """`trials` trials of HORIZON trips each, made of moving blocks of `block` consecutive
    held-out trips; with `swap`, each block's two models swapped at random."""
    count = -(-HORIZON // block)
    starts = rng.integers(0, len(champion) - block + 1, size=(trials, count))
    index = (starts[:, :, None] + np.arange(block)).reshape(trials, -1)[:, :HORIZON]
    first, second = champion[index], challenger[index]
    if swap:
        flip = np.repeat(rng.random((trials, count)) < 0.5, block, axis=1)[:, :HORIZON]
        first, second = np.where(flip, second, first), np.where(flip, first, second)
    return first, second


def looks_from(min_trips: int) -> npt.NDArray[np.int64]:
    return np.arange(min_trips, HORIZON + 1, LOOK_EVERY, dtype=np.int64)


def trials_of(
    champion: Array,
    challenger: Array,
    rng: np.random.Generator,
    replicates: int,
    looks: npt.NDArray[np.int64],
    *,
    swap: bool = True,
    block: int = BLOCK_TRIPS,
) -> Array:
    """The champion's RMSLE minus the challenger's at every look of every trial. By default
    the two are made equal (swapped block by block)."""
    rows = []
    for done in range(0, replicates, CHUNK):
        trials = min(CHUNK, replicates - done)
        first, second = resample(champion, challenger, rng, trials, swap=swap, block=block)
        n = looks.astype(np.float64)
        rows.append(
            np.sqrt(np.cumsum(first, axis=1)[:, looks - 1] / n)
            - np.sqrt(np.cumsum(second, axis=1)[:, looks - 1] / n)
        )
    return np.vstack(rows)


def grid(scored: HeldOut, rng: np.random.Generator) -> list[dict[str, Any]]:
    """For each min_trips: the spread of equal models' difference there, and the delta that
    keeps their false promotions to 1%, looking once or at every look to the horizon."""
    looks = looks_from(min(MIN_TRIPS_GRID))
    equal = trials_of(scored.errors("half_a"), scored.errors("half_b"), rng, REPLICATES, looks)
    rows = []
    for min_trips in MIN_TRIPS_GRID:
        from_here = equal[:, looks >= min_trips]
        rows.append(
            {
                "min_trips": min_trips,
                "equal_sd_at_min_trips": round(float(from_here[:, 0].std()), 5),
                "delta_for_1pct_one_look": round(
                    float(np.quantile(from_here[:, 0], 1 - FALSE_PROMOTION_TARGET)), 4
                ),
                "delta_for_1pct_looking_to_horizon": round(
                    float(np.quantile(from_here.max(axis=1), 1 - FALSE_PROMOTION_TARGET)), 4
                ),
            }
        )
    return rows


def challenge(
    champion: Array,
    challenger: Array,
    rng: np.random.Generator,
    delta: float,
    looks: npt.NDArray[np.int64],
) -> dict[str, Any]:
    """How often and how soon a challenger with these errors is promoted over this champion."""
    crossed = trials_of(champion, challenger, rng, REPLICATES, looks, swap=False) >= delta
    ever = crossed.any(axis=1)
    first = looks[crossed.argmax(axis=1)][ever]
    return {
        "true_gap": round(rmsle(champion) - rmsle(challenger), 4),
        "promoted_at_min_trips": round(float(crossed[:, 0].mean()), 4),
        "promoted_by_horizon": round(float(ever.mean()), 4),
        "median_trips_to_promotion": int(np.median(first)) if ever.any() else None,
    }


def at_defaults(
    scored: HeldOut, rng: np.random.Generator, delta: float, min_trips: int
) -> dict[str, Any]:
    """The false-promotion rate of equal models and the power against better ones."""
    looks = looks_from(min_trips)
    half_a, half_b, full = scored.errors("half_a"), scored.errors("half_b"), scored.errors("full")
    equal = trials_of(half_a, half_b, rng, CHECK_REPLICATES, looks)
    false = int((equal >= delta).any(axis=1).sum())
    one_by_one = trials_of(half_a, half_b, rng, REPLICATES, looks, block=1)
    better = {"tenth_model_as_champion": challenge(scored.errors("tenth"), full, rng, delta, looks)}
    for k in GAPS_IN_DELTAS:
        worse = scored.worse_by(k * delta)
        better[f"champion_worse_by_{k:g}_delta"] = challenge(worse, full, rng, delta, looks)
    return {
        "delta": delta,
        "min_trips": min_trips,
        "equal_models": {
            "trials": CHECK_REPLICATES,
            "false_promotions": false,
            "false_promotion_rate": round(false / CHECK_REPLICATES, 4),
            "false_promotion_rate_95ci": [round(x, 4) for x in wilson(false, CHECK_REPLICATES)],
            "false_promotion_rate_trips_drawn_one_by_one": round(
                float((one_by_one >= delta).any(axis=1).mean()), 4
            ),
            "sd_at_min_trips": round(float(equal[:, 0].std()), 5),
            "sd_at_horizon": round(float(equal[:, -1].std()), 5),
        },
        # The two half models as they are: equal by how they were trained, not by construction.
        "half_b_challenging_half_a": challenge(half_a, half_b, rng, delta, looks),
        "better_challenger": better,
    }


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% confidence interval of a rate."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="delta to check")
    parser.add_argument("--min-trips", type=int, default=DEFAULT_MIN_TRIPS, help="M to check")
    add_out_option(parser)
    args = parser.parse_args()

    started = time.perf_counter()
    trips, description = sample_trips(args.data, synthetic_rows=73_177)
    scored, summary = train_models(trips, description)
    rng = np.random.default_rng(SEED)
    report = {
        "what": (
            "the spread of the RMSLE difference of models of equal quality on the same held-out"
            " trips, and the promotion policy's false promotions and power at its defaults"
        ),
        "command": " ".join(["uv run python benchmarks/promotion_calibration.py", *sys.argv[1:]]),
        "environment": provenance(),
        "data": description,
        **summary,
        "method": {
            "equal_models": "half_a and half_b, swapped at random block by block",
            "block_trips": BLOCK_TRIPS,
            "look_every_trips": LOOK_EVERY,
            "horizon_trips": HORIZON,
            "replicates": REPLICATES,
            "seed": SEED,
        },
        "grid": grid(scored, rng),
        "defaults": at_defaults(scored, rng, args.delta, args.min_trips),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
