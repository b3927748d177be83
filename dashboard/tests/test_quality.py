"""Model quality history: windows by start, the newest cumulative figures per source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from taxi_dashboard.quality import QualityHistory
from taxi_events import ModelMetrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def metrics(scope: str = "window", start_s: int = 0, **fields: Any) -> ModelMetrics:
    window = (
        {
            "window_start": T0 + timedelta(seconds=start_s),
            "window_end": T0 + timedelta(seconds=start_s + 10),
        }
        if scope == "window"
        else {"window_start": None, "window_end": None}
    )
    values: dict[str, Any] = {
        "source": "train",
        "count": 10,
        "rmsle": 0.4,
        "mae": 100.0,
        "median_ape": 0.2,
        "within_30": 0.7,
        "unmatched": 0,
        "model_version": "v1",
        "produced_at": T0,
        **window,
    }
    return ModelMetrics(scope=scope, **{**values, **fields})


def test_windows_are_ordered_by_start_and_a_republished_window_replaces_the_old():
    history = QualityHistory()
    history.add(metrics(start_s=20))
    history.add(metrics(start_s=0, rmsle=0.9))
    history.add(metrics(start_s=10, source="test"))
    history.add(metrics(start_s=0, rmsle=0.5))
    windows = history.windows()
    assert [(m.window_start, m.source) for m in windows] == [
        (T0, "train"),
        (T0 + timedelta(seconds=10), "test"),
        (T0 + timedelta(seconds=20), "train"),
    ]
    assert windows[0].rmsle == 0.5


def test_the_newest_cumulative_figures_win_whatever_the_reading_order():
    history = QualityHistory()
    history.add(metrics("cumulative", count=50, produced_at=T0 + timedelta(seconds=20)))
    history.add(metrics("cumulative", count=40, produced_at=T0 + timedelta(seconds=10)))
    history.add(
        metrics(
            "cumulative", source="test", model_version="v2", produced_at=T0 + timedelta(seconds=30)
        )
    )
    cumulative = history.cumulative()
    assert cumulative["train"].count == 50
    assert history.model_version() == "v2"


def test_no_figures_no_model_version():
    history = QualityHistory()
    history.add(metrics(start_s=0))
    assert history.model_version() is None
    assert history.cumulative() == {}


def test_window_history_is_bounded():
    history = QualityHistory(capacity=5)
    for i in range(20):
        history.add(metrics(start_s=10 * i))
    assert len(history.windows()) == 5
    assert history.windows()[0].window_start == T0 + timedelta(seconds=150)
