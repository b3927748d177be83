"""Mergeable model-quality accumulators: what the aggregator keeps per window and per source.

Every figure is a sum or a count, except the median absolute percentage error, which comes from
a histogram of log-spaced buckets (relative resolution about 1.2%). So an accumulator fed trip by
trip, one fed in batches, and the merge of several all hold the same state, and the state is
small enough to write to a changelog after every batch.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from taxi_model import WITHIN_TOLERANCE, QualityMetrics

BUCKETS_PER_DECADE = 200
# Exact predictions have an error of 0, which has no logarithm: they get a bucket of their own.
ZERO_BUCKET = -(10**9)


def ape_bucket(ape: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The histogram bucket of each absolute percentage error."""
    with np.errstate(divide="ignore"):
        buckets = np.floor(np.log10(ape) * BUCKETS_PER_DECADE)
    return np.where(ape > 0, buckets, ZERO_BUCKET).astype(np.int64)


def bucket_value(bucket: int) -> float:
    """The representative error of a bucket: its geometric midpoint."""
    return 0.0 if bucket == ZERO_BUCKET else 10 ** ((bucket + 0.5) / BUCKETS_PER_DECADE)


@attrs.define
class QualityAccumulator:
    count: int = 0
    sum_squared_log_error: float = 0.0
    sum_absolute_error: float = 0.0
    within_30: int = 0
    ape_histogram: Counter[int] = attrs.field(factory=Counter)

    def add(self, actual: npt.ArrayLike, predicted: npt.ArrayLike) -> None:
        """Add matched trips: actual and predicted durations in seconds."""
        y = np.asarray(actual, dtype=np.float64)
        p = np.asarray(predicted, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError(f"actual has shape {y.shape} but predicted has {p.shape}")
        if (y < 0).any() or (p < 0).any():
            raise ValueError("durations must not be negative")
        abs_err = np.abs(p - y)
        self.count += int(y.size)
        self.sum_squared_log_error += float(np.sum(np.square(np.log1p(p) - np.log1p(y))))
        self.sum_absolute_error += float(np.sum(abs_err))
        positive = y > 0
        ape = abs_err[positive] / y[positive]
        self.within_30 += int(np.count_nonzero(ape <= WITHIN_TOLERANCE))
        self.ape_histogram.update(ape_bucket(ape).tolist())

    def merge(self, other: QualityAccumulator) -> None:
        self.count += other.count
        self.sum_squared_log_error += other.sum_squared_log_error
        self.sum_absolute_error += other.sum_absolute_error
        self.within_30 += other.within_30
        self.ape_histogram.update(other.ape_histogram)

    def metrics(self) -> QualityMetrics:
        if self.count == 0:
            return QualityMetrics(0, None, None, None, None)
        with_ape = sum(self.ape_histogram.values())
        return QualityMetrics(
            count=self.count,
            rmsle=math.sqrt(self.sum_squared_log_error / self.count),
            mae=self.sum_absolute_error / self.count,
            median_ape=self._median_ape(with_ape) if with_ape else None,
            within_30=self.within_30 / with_ape if with_ape else None,
        )

    def _median_ape(self, total: int) -> float:
        # The lower median: the value at rank ceil(total / 2).
        rank, seen = (total + 1) // 2, 0
        for bucket in sorted(self.ape_histogram):
            seen += self.ape_histogram[bucket]
            if seen >= rank:
                return bucket_value(bucket)
        raise AssertionError("unreachable: the histogram holds `total` errors")

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum_squared_log_error": self.sum_squared_log_error,
            "sum_absolute_error": self.sum_absolute_error,
            "within_30": self.within_30,
            "ape_histogram": {str(k): v for k, v in sorted(self.ape_histogram.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QualityAccumulator:
        return cls(
            count=int(data["count"]),
            sum_squared_log_error=float(data["sum_squared_log_error"]),
            sum_absolute_error=float(data["sum_absolute_error"]),
            within_30=int(data["within_30"]),
            ape_histogram=Counter({int(k): int(v) for k, v in data["ape_histogram"].items()}),
        )
