"""`taxi lifecycle`'s report, worked out from the records a run leaves (no I/O), and its
command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taxi_events import DeploymentDecision, ModelEvent, ModelMetrics
from taxi_services.lifecycle import Loop, targets_missed

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DRIFT_AT = T0 + timedelta(seconds=60)
STALE, NEW = "m1", "m2"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def window(
    start_s: float, model: str, rmsle: float, *, role: str = "champion", challenger=None
) -> ModelMetrics:
    return ModelMetrics(
        source="train",
        scope="window",
        window_start=at(start_s),
        window_end=at(start_s + 10),
        count=500,
        rmsle=rmsle,
        mae=100.0,
        median_ape=0.2,
        within_30=0.6,
        unmatched=0,
        model_version=model,
        role=role,
        challenger_version=challenger,
    )


def decision(action: str, champion: str, challenger: str | None, when_s: float, **extra):
    return DeploymentDecision(
        action=action,
        version=champion if action != "publish" or challenger is None else challenger,
        champion=champion,
        challenger=challenger,
        actor=extra.pop("actor", "auto-promotion@host"),
        reason="test",
        decided_at=at(when_s),
        **extra,
    )


def event(kind: str, model: str, when_s: float, **fields) -> ModelEvent:
    return ModelEvent(
        kind=kind, model_version=model, detail="test", occurred_at=at(when_s), **fields
    )


def a_run(*, detected_at_trip: int = 8_300, new_rmsle: float = 0.42) -> Loop:
    """A run as the topics would hold it: m1 serves, the drift at 60 s (train trip 8,000),
    detected, m2 trained, shadowed, promoted at 120 s, probation passed at 160 s."""
    metrics = [window(s, STALE, 0.40) for s in range(0, 60, 10)]  # before the drift
    metrics += [window(s, STALE, 0.58) for s in range(60, 120, 10)]  # stale, after it
    for s in range(120, 160, 10):  # on probation: both on the same trips
        metrics.append(window(s, NEW, new_rmsle, challenger=STALE))
        metrics.append(window(s, STALE, 0.58, role="challenger", challenger=STALE))
    return Loop(
        events=[
            event(
                "concept-drift",
                STALE,
                62,
                source="train",
                value=120.0,
                threshold=100.0,
                last_trip_id=f"t{detected_at_trip}",
            ),
            event("candidate", NEW, 90, evidence={"candidate_rmsle": 0.41}),
            event("promotion", NEW, 120),
        ],
        decisions=[
            decision("publish", STALE, None, 0, actor="someone@host"),
            decision("publish", STALE, NEW, 90, actor="trainer@host"),
            decision("promote", NEW, STALE, 120, evidence={"trips": 2_000}),
            decision("withdraw", NEW, None, 160),
        ],
        metrics=metrics,
    )


def figures_of(loop: Loop) -> dict:
    order = {f"t{n}": n for n in range(20_000)}
    return loop.figures(
        drift_started_ms=int(DRIFT_AT.timestamp() * 1000), train_order=order, drift_from=8_000
    )


def test_the_report_follows_the_loop_from_the_drift_to_the_probation():
    figures = figures_of(a_run())
    assert figures["champion"] == STALE
    assert figures["rmsle_before_drift"] == pytest.approx(0.40)
    assert figures["detection"]["trips_after_drift"] == 301
    assert figures["detection"]["seconds_after_drift"] == 2.0
    assert figures["candidate"]["version"] == NEW
    assert figures["candidate"]["seconds_after_detection"] == 28.0
    assert figures["promotion"]["seconds_after_detection"] == 58.0
    after = figures["after_promotion"]
    assert after["rmsle_promoted"] == pytest.approx(0.42)
    assert after["rmsle_stale_on_the_same_trips"] == pytest.approx(0.58)
    assert after["promoted_over_before"] == pytest.approx(1.05)
    assert after["stale_over_before"] == pytest.approx(1.45)
    assert figures["probation"] == "withdraw"
    assert targets_missed(figures) == []


@pytest.mark.parametrize(
    ("loop", "missed"),
    [
        (a_run(detected_at_trip=10_500), "detected 2501 trips after the drift"),
        (a_run(new_rmsle=0.47), "after promotion RMSLE is 1.175 of the pre-drift level"),
        (Loop([], a_run().decisions[:1], a_run().metrics), "the drift was never detected"),
    ],
)
def test_a_missed_target_is_named(loop: Loop, missed: str):
    assert any(missed in problem for problem in targets_missed(figures_of(loop)))


def test_a_drift_after_the_last_train_trip_is_refused_before_anything_starts(taxi):
    code, _, err = taxi("lifecycle", "--trips", "2000", "--drift-from", "1000")
    assert code == 2
    assert "past the last of the 1,000 train trips" in err
