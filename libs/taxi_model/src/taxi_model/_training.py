"""Training on a split of labelled trips, and evaluating a model on labelled trips.

The default split is by time: the model learns from the earliest 80% of trips by pickup time
and is measured on the rest, as it will meet trips that start after its training data. The card
records the cutoff, so a replay can start there and score the model out of sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, get_args

import attrs
import numpy as np
import pandas as pd

from taxi_model._artifact import ModelCard, TrainingData, TripDurationModel, library_versions
from taxi_model._metrics import QualityMetrics, quality_metrics
from taxi_model._profile import training_profile

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from taxi_model._estimator import RegressorParams

HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 2016
Split = Literal["time", "random"]
SPLITS: tuple[Split, ...] = get_args(Split)


@attrs.frozen
class TrainResult:
    """A fitted pipeline with its (not yet versioned) card and its held-out predictions."""

    pipeline: Pipeline
    card: ModelCard
    holdout: pd.DataFrame  # the held-out trips, with a `predicted_duration` column added


def holdout_split(rows: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Fixed row positions for training and for the held-out fifth; the same for the same seed."""
    order = np.random.default_rng(seed).permutation(rows)
    cut = rows - round(rows * HOLDOUT_FRACTION)
    return np.sort(order[:cut]), np.sort(order[cut:])


def time_split(pickups: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Timestamp]:
    """Row positions of the trips before the cutoff and of those from it on, and the cutoff: the
    pickup time of the first trip past the earliest 80%. Trips picked up at the cutoff itself all
    go to the held-out side, so no moment is on both."""
    times = pickups.to_numpy(dtype="datetime64[ns]")
    order = np.argsort(times, kind="stable")
    cutoff = times[order[len(times) - round(len(times) * HOLDOUT_FRACTION)]]
    return np.flatnonzero(times < cutoff), np.flatnonzero(times >= cutoff), pd.Timestamp(cutoff)


def train_model(
    trips: pd.DataFrame,
    data_description: str,
    data_sha256: str | None = None,
    *,
    seed: int = SPLIT_SEED,
    on_rounds: Callable[[int], None] | None = None,
    split: Split = "time",
    regressor_params: RegressorParams | None = None,
) -> TrainResult:
    """Fit on 80% of labelled trips and measure on the other 20%: by default the earliest 80%
    by pickup time against the rest (`split="time"`), else a fixed random fifth held out.
    `regressor_params` change the estimator's defaults (benchmarks/model_frontier.py)."""
    # scikit-learn only where a model is trained: the split and the replay's filter need none.
    from taxi_model._estimator import build_pipeline  # noqa: PLC0415
    from taxi_model._features import INPUT_COLUMNS, TripFeatures  # noqa: PLC0415

    if "trip_duration" not in trips.columns:
        raise ValueError("training needs labelled trips (a train CSV with trip_duration)")
    labelled = trips[trips["trip_duration"] > 0].reset_index(drop=True)
    if len(labelled) < 100:
        raise ValueError(f"training needs at least 100 labelled trips, got {len(labelled)}")
    cutoff = None
    if split == "time":
        train_idx, holdout_idx, at = time_split(labelled["pickup_datetime"])
        cutoff = at.isoformat()
        if len(train_idx) < len(labelled) // 2:
            raise ValueError(
                f"too few trips start before the time-split cutoff {cutoff} "
                f"({len(train_idx)} of {len(labelled)}); use the random split"
            )
    else:
        train_idx, holdout_idx = holdout_split(len(labelled), seed)
    train, holdout = labelled.iloc[train_idx], labelled.iloc[holdout_idx].copy()

    started = time.perf_counter()
    params: RegressorParams = {"random_state": seed, **(regressor_params or {})}
    pipeline = build_pipeline(**params)
    pipeline.fit(train[list(INPUT_COLUMNS)], train["trip_duration"], regressor__on_rounds=on_rounds)
    seconds = time.perf_counter() - started

    holdout["predicted_duration"] = pipeline.predict(holdout[list(INPUT_COLUMNS)])
    card = ModelCard(
        version="",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        data=TrainingData(
            description=data_description,
            sha256=data_sha256,
            rows=len(trips),
            train_rows=len(train),
            holdout_rows=len(holdout),
            split=split,
            cutoff=cutoff,
        ),
        holdout=quality_metrics(holdout["trip_duration"], holdout["predicted_duration"]),
        training_seconds=round(seconds, 3),
        boosting_rounds=int(pipeline.named_steps["regressor"].booster_.n_iter_),
        features=list(TripFeatures().transform(train.head(1)).columns),
        libraries=library_versions(),
        profile=training_profile(train),
    )
    return TrainResult(pipeline, card, holdout)


class InSampleError(ValueError):
    """A replay would score a model on trips it learnt from, and no cutoff says which."""


def unseen_trips(card: ModelCard, trips: pd.DataFrame, data_sha256: str | None) -> pd.DataFrame:
    """The trips of a replay that the model of `card` did not learn from. From the very data it
    trained on (same sha256), those picked up at its time-split cutoff or later; from other data,
    all of them. Raises InSampleError for the data it trained on with a random split: most of
    those trips are in its training fifths, with no time to tell them apart."""
    if data_sha256 is None or card.data.sha256 != data_sha256:
        return trips
    if card.data.cutoff is None:
        raise InSampleError(
            f"model {card.version} learnt from a random 80% of this data "
            f"({card.data.description}), so a replay of it scores the model in-sample"
        )
    unseen = trips["pickup_datetime"] >= pd.Timestamp(card.data.cutoff)
    return trips[unseen].reset_index(drop=True)


def evaluate(model: TripDurationModel, trips: pd.DataFrame) -> QualityMetrics:
    """The model's quality on labelled trips."""
    if "trip_duration" not in trips.columns:
        raise ValueError("evaluation needs labelled trips (a train CSV with trip_duration)")
    return quality_metrics(trips["trip_duration"], model.predict(trips))


def holdout_rmsle(model: TripDurationModel, result: TrainResult) -> float | None:
    """RMSLE of another model on the new result's held-out trips, to compare like with like."""
    return evaluate(model, result.holdout).rmsle
