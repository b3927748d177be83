"""The model events in the order read, and the drift found on each model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taxi_dashboard.model_events import ModelEventLog
from taxi_events import ModelEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(kind: str, version: str, source: str | None = "train", **fields: Any) -> ModelEvent:
    return ModelEvent(
        kind=kind, model_version=version, source=source, detail=f"{kind} on {version}", **fields
    )


def test_before_any_event_there_is_no_history_and_no_drift():
    log = ModelEventLog()
    assert log.history() == []
    assert log.drift_on("m1") == []
    assert log.drift_on(None) == []
    assert len(log) == 0


def test_the_history_is_every_kind_of_event_newest_first():
    steps = [
        event("concept-drift", "m1"),
        event("candidate", "m2", source=None),
        event("promotion", "m2", source=None),
        event("rollback", "m1", source=None),
        event("candidate-rejected", "m3", source=None),
    ]
    log = ModelEventLog()
    for step in steps:
        log.add(step)
    assert log.history() == steps[::-1]


def test_drift_is_the_latest_of_each_kind_and_source_on_the_model_asked_for():
    log = ModelEventLog()
    first = event("concept-drift", "m1", value=11.0, occurred_at=T0)
    later = event("concept-drift", "m1", value=12.0, occurred_at=T0 + timedelta(minutes=5))
    data = event("data-drift", "m1", source="test", statistic="psi:distance_km")
    for step in (first, data, later, event("data-drift", "m2"), event("candidate", "m1")):
        log.add(step)
    found = log.drift_on("m1")
    # Newest first: the concept drift was detected again after the data drift.
    assert [(f.latest, f.detections) for f in found] == [(later, 2), (data, 1)]
    assert [f.latest.model_version for f in log.drift_on("m2")] == ["m2"]
    assert log.drift_on("m3") == []


def test_drift_outlives_the_history_it_was_pushed_out_of():
    log = ModelEventLog(capacity=3)
    drift = event("data-drift", "m1")
    log.add(drift)
    for n in range(10):
        log.add(event("candidate-rejected", f"c{n}", source=None))
    assert drift not in log.history()
    assert len(log) == 3
    assert [f.latest for f in log.drift_on("m1")] == [drift]
    with pytest.raises(ValueError, match="at least 1"):
        ModelEventLog(capacity=0)
