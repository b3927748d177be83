"""Training on a fixed split, and evaluating a model on labelled trips."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from taxi_model._artifact import ModelCard, TrainingData, TripDurationModel, library_versions
from taxi_model._estimator import build_pipeline
from taxi_model._features import INPUT_COLUMNS, TripFeatures
from taxi_model._metrics import QualityMetrics, quality_metrics

HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 2016


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


def train_model(
    trips: pd.DataFrame,
    data_description: str,
    data_sha256: str | None = None,
    seed: int = SPLIT_SEED,
    on_rounds: Callable[[int], None] | None = None,
) -> TrainResult:
    """Fit on a fixed 80% of labelled trips and measure on the other 20%."""
    if "trip_duration" not in trips.columns:
        raise ValueError("training needs labelled trips (a train CSV with trip_duration)")
    labelled = trips[trips["trip_duration"] > 0].reset_index(drop=True)
    if len(labelled) < 100:
        raise ValueError(f"training needs at least 100 labelled trips, got {len(labelled)}")
    train_idx, holdout_idx = holdout_split(len(labelled), seed)
    train, holdout = labelled.iloc[train_idx], labelled.iloc[holdout_idx].copy()

    started = time.perf_counter()
    pipeline = build_pipeline(random_state=seed)
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
        ),
        holdout=quality_metrics(holdout["trip_duration"], holdout["predicted_duration"]),
        training_seconds=round(seconds, 3),
        boosting_rounds=int(pipeline.named_steps["regressor"].booster_.n_iter_),
        features=list(TripFeatures().transform(train.head(1)).columns),
        libraries=library_versions(),
    )
    return TrainResult(pipeline, card, holdout)


def evaluate(model: TripDurationModel, trips: pd.DataFrame) -> QualityMetrics:
    """The model's quality on labelled trips."""
    if "trip_duration" not in trips.columns:
        raise ValueError("evaluation needs labelled trips (a train CSV with trip_duration)")
    return quality_metrics(trips["trip_duration"], model.predict(trips))


def holdout_rmsle(model: TripDurationModel, result: TrainResult) -> float | None:
    """RMSLE of another model on the new result's held-out trips, to compare like with like."""
    return evaluate(model, result.holdout).rmsle
