"""Model-quality metrics for trip durations, shared by training, evaluation and the aggregator."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

WITHIN_TOLERANCE = 0.30


@attrs.frozen
class QualityMetrics:
    """Quality of predicted against actual durations (seconds). Values are None when count is 0."""

    count: int
    rmsle: float | None
    mae: float | None
    median_ape: float | None
    within_30: float | None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def quality_metrics(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> QualityMetrics:
    """RMSLE, MAE, median absolute percentage error and the share within ±30%.

    Percentage errors skip trips whose actual duration is 0, where they are undefined.
    """
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"actual has shape {y.shape} but predicted has {p.shape}")
    if y.size == 0:
        return QualityMetrics(0, None, None, None, None)
    if (y < 0).any() or (p < 0).any():
        raise ValueError("durations must not be negative")
    rmsle = math.sqrt(float(np.mean(np.square(np.log1p(p) - np.log1p(y)))))
    abs_err = np.abs(p - y)
    positive = y > 0
    ape = abs_err[positive] / y[positive]
    return QualityMetrics(
        count=int(y.size),
        rmsle=rmsle,
        mae=float(np.mean(abs_err)),
        median_ape=float(np.median(ape)) if ape.size else None,
        within_30=float(np.mean(ape <= WITHIN_TOLERANCE)) if ape.size else None,
    )
