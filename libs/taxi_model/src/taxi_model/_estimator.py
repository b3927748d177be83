"""The trip-duration estimator: gradient boosting on log1p(duration), answering in seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from taxi_model._features import TripFeatures

# Boosting rounds between two progress callbacks.
ROUNDS_PER_STEP = 25
# The parameters added since the first saved models, with the values those were trained with.
ADDED_PARAMS: dict[str, Any] = {"max_depth": None, "max_bins": 255}


class LogDurationRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped: bases are Any
    """HistGradientBoosting fitted on log1p(seconds), so squared error is RMSLE's loss.

    It grows the ensemble in steps of ROUNDS_PER_STEP with warm starts, so training can report
    progress; early stopping on a held-back tenth decides when to stop.
    """

    def __init__(
        self,
        *,
        # 200 rounds of 63 leaves: the cheapest shape within 0.002 held-out RMSLE of the most
        # accurate one measured by time, and of the old default (31 leaves) at random; 150
        # rounds were 0.0027 worse at random (benchmarks/model_frontier.py;
        # docs/performance.md). Early stopping may end it sooner.
        max_rounds: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 63,
        max_depth: int | None = None,
        max_bins: int = 255,
        min_samples_leaf: int = 50,
        l2_regularization: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.max_rounds = max_rounds
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.max_bins = max_bins
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    def fit(
        self,
        features: pd.DataFrame,
        duration_s: npt.ArrayLike,
        on_rounds: Callable[[int], None] | None = None,
    ) -> LogDurationRegressor:
        target = np.log1p(np.asarray(duration_s, dtype=np.float64))
        booster = HistGradientBoostingRegressor(
            learning_rate=self.learning_rate,
            max_iter=0,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            max_bins=self.max_bins,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=50,
            random_state=self.random_state,
            warm_start=True,
        )
        while booster.max_iter < self.max_rounds:
            booster.max_iter = min(booster.max_iter + ROUNDS_PER_STEP, self.max_rounds)
            booster.fit(features, target)
            if on_rounds is not None:
                on_rounds(booster.n_iter_)
            if booster.n_iter_ < booster.max_iter:  # early stopping fired
                break
        self.booster_ = booster
        self.n_features_in_ = booster.n_features_in_
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A model saved before a parameter existed has no value for it: it was trained with
        # what is now its default (get_params, and so repr and clone, need every one).
        super().__setstate__({**ADDED_PARAMS, **state})

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return seconds_from_log(self.booster_.predict(features))


def seconds_from_log(log_durations: np.ndarray) -> np.ndarray:
    """Seconds from the trees' log1p(seconds), as LogDurationRegressor.predict answers (and
    TripDurationModel with compiled trees)."""
    # Clip so that a duration is never negative, whatever the trees extrapolate.
    seconds: np.ndarray = np.clip(np.expm1(log_durations), 0.0, None)
    return seconds


# A saved model (skops) records this class by module and name, and loading trusts it by that
# name: the public package's, so that saved models stay loadable when it moves between modules.
LogDurationRegressor.__module__ = "taxi_model"


class RegressorParams(TypedDict, total=False):
    """LogDurationRegressor's parameters, for build_pipeline."""

    max_rounds: int
    learning_rate: float
    max_leaf_nodes: int
    max_depth: int | None
    max_bins: int
    min_samples_leaf: int
    l2_regularization: float
    random_state: int


def build_pipeline(**regressor_params: Unpack[RegressorParams]) -> Pipeline:
    """The unfitted pipeline `taxi train` saves: raw trip columns in, seconds out."""
    return Pipeline(
        [("features", TripFeatures()), ("regressor", LogDurationRegressor(**regressor_params))]
    )
