"""`taxi lifecycle`'s report, worked out from the records a run leaves (no I/O), its command
line, and a small run for real with the dashboard watching it in Chromium."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from taxi_dashboard.testing import (
    assert_no_exception,
    chromium,
    grid_texts,
    open_page,
    screenshot,
)
from taxi_events import DeploymentDecision, ModelEvent, ModelMetrics
from taxi_model import read_card
from taxi_services.lifecycle import Loop, dashboard_url, targets_missed
from taxi_services.supervisor import BIN, free_port

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
        (
            # A late start sent the trips before the drift in a burst: no window ends before it.
            Loop(
                a_run().events,
                a_run().decisions,
                [m for m in a_run().metrics if m.window_end is None or m.window_end > DRIFT_AT],
            ),
            "no RMSLE to compare: no window of the champion before the drift",
        ),
    ],
)
def test_a_missed_target_is_named(loop: Loop, missed: str):
    assert any(missed in problem for problem in targets_missed(figures_of(loop)))


def test_a_drift_after_the_last_train_trip_is_refused_before_anything_starts(taxi):
    code, _, err = taxi("lifecycle", "--trips", "2000", "--drift-from", "1000")
    assert code == 2
    assert "past the last of the 1,000 train trips" in err


# A small run. The drift starts 2,000 train trips in (Page-Hinkley needs about 1,000 steady ones,
# docs/drift.md). A candidate trains on 2,000 trips after it, about as many as the first
# champion (trained_model_path: 2,400 of 3,000 synthetic trips), so it is as good; 1,000 live
# trips with a margin of 0.05 suit the slowdown's gap of about 0.15 (docs/lifecycle.md). The
# replay's trips are fixed (seed 2016); at 19,000 of them, 200 a second, the probation starts
# some 60 s after the drift, with about 1,500 train trips left.
SMALL_RUN = {
    "--trips": "19000",
    # At 300, a CI run ran out of trips before the promoted model's first probation window.
    "--rate": "200",
    "--drift-from": "2000",
    "--post-drift-trips": "2000",
    "--live-trips": "1000",
    "--delta": "0.05",
}
# At this size the two RMSLE-ratio targets (within 10% of the pre-drift level, the stale
# model at least 30% worse) are within the trips' own variation: a model's RMSLE over 1,000 of
# these synthetic trips varies 6-8% from stretch to stretch (a few trips with huge errors), and
# the ratios compare one stretch (before the drift) with another (the probation). Runs here
# measured 1.018, 1.106 and 1.108 (promoted), 1.32, 1.313 and 1.408 (stale; the third at 300
# trips/s). So, as test_chaos does with its timing bounds, a missed ratio target is measured and
# warned about, not a failure; what they guard is asserted with the margins below. `taxi
# lifecycle` at its defaults asserts them all.
RATIO_TARGETS = ("after promotion RMSLE is", "the stale model is only")
RATIO_SLACK = {"promoted_over_before": 1.25, "stale_over_before": 1.15}
RUN_TIMEOUT_S = 600
# From the drift to the candidate's promotion: half a minute or more, on a busy machine more.
LOOP_TIMEOUT_MS = 300_000
# The rest of the page follows within a few refreshes.
SHOWN_TIMEOUT_MS = 30_000
PAGE_HEIGHT = 3400  # the page scrolls inside: tall enough for the promotion history
FIGURES = ("rmsle_before_drift", "detection", "after_promotion", "probation", "seconds")


@pytest.mark.kafka
@pytest.mark.slow
def test_the_loop_closes_by_itself_while_the_dashboard_shows_it(trained_model_path, tmp_path):
    stale = read_card(trained_model_path).version
    port = free_port()
    report_file = tmp_path / "report.json"
    command = [
        str(BIN / "taxi"),
        "lifecycle",
        *(arg for pair in SMALL_RUN.items() for arg in pair),
        *("--model", str(trained_model_path), "--report", str(report_file)),
        *("--dashboard", "--dashboard-port", str(port)),
    ]
    stderr = tmp_path / "stderr.log"
    with (
        chromium() as browser,
        stderr.open("w") as err,
        subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True
        ) as run,
    ):
        try:
            # Tall from the start: the screenshot is taken as soon as the probation shows,
            # without laying the page out again.
            page = open_page(
                browser, dashboard_url(port), offline=True, wait_s=300, height=PAGE_HEIGHT
            )
            promoted = watch_the_loop(page, stale)
            page.close()
            output, _ = run.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if run.poll() is None:
                # As Ctrl+C: the run stops its services and its scratch cluster (SIGKILL would
                # leave three brokers running).
                run.send_signal(signal.SIGINT)
                try:
                    run.wait(120)
                except subprocess.TimeoutExpired:
                    run.kill()
    log = stderr.read_text()[-5000:]
    report = json.loads(output)
    print({key: report.get(key) for key in FIGURES})
    assert json.loads(report_file.read_text()) == report
    # Every target but the two RMSLE ratios must hold, and decides the exit code with them.
    missed = [p for p in report["problems"] if p.startswith(RATIO_TARGETS)]
    assert [p for p in report["problems"] if p not in missed] == [], log
    if missed:
        warnings.warn(f"the small lifecycle run missed {missed}", stacklevel=1)
    assert report["passed"] == (not missed)
    assert run.returncode == (1 if missed else 0)
    # What the ratios guard, with margins this size keeps: the promoted model near the pre-drift
    # level, the stale one far from it, and on the same probation trips the stale one worse by
    # at least the policy's margin.
    after = report["after_promotion"]
    assert after["promoted_over_before"] <= RATIO_SLACK["promoted_over_before"], after
    assert after["stale_over_before"] >= RATIO_SLACK["stale_over_before"], after
    assert after["rmsle_stale_on_the_same_trips"] - after["rmsle_promoted"] >= 0.05, after
    # The models the page showed are the report's.
    assert report["champion"] == stale
    assert report["candidate"]["version"] == promoted
    assert report["promotion"]["actor"].startswith("auto-promotion@")
    once = {"duplicated": 0, "missing": 0, "unexpected": 0}
    for topic in ("started", "finished", "predictions"):
        assert report["exactly_once"][topic] == {"unique": 19_000, **once}
    assert report["exactly_once"]["shadow_predictions"] == {
        "unique": report["exactly_once"]["shadow_predictions"]["unique"],
        **once,
    }
    assert set(report["exit_codes"].values()) == {0}


def watch_the_loop(page: Page, stale: str) -> str:
    """Follow the run on the page: the drift banner on `stale`, then the promoted candidate
    beside it on probation; screenshots of both. The promoted version."""
    banner = page.locator(".st-key-drift-banner")
    roles = page.locator(".st-key-model-roles")
    # The slowdown, detected on the serving champion: the red banner.
    expect(banner).to_contain_text(f"The champion {stale} has drifted.", timeout=LOOP_TIMEOUT_MS)
    expect(banner).to_contain_text("Concept drift on the train trips")
    expect(banner).to_contain_text("page-hinkley on log_error")
    assert_no_exception(page)
    screenshot(page, "lifecycle-drift.png", full_page=False)

    # Promoted: the candidate serves, and the stale model shadows it on probation.
    on_probation = re.compile(rf"Champion (\w+) · challenger {stale}")
    expect(roles).to_contain_text(on_probation, timeout=LOOP_TIMEOUT_MS)
    found = on_probation.search(roles.inner_text())
    assert found, roles.inner_text()
    promoted = found[1]
    assert promoted != stale
    # The new champion has not drifted: the banner calms down.
    expect(banner).to_contain_text(
        f"No drift detected on the champion {promoted}.", timeout=SHOWN_TIMEOUT_MS
    )
    # Both models in the comparison, and the promotion in the history, by the policy.
    comparison = page.locator(".st-key-model-comparison [role=gridcell]")
    expect(comparison.filter(has_text=promoted).first).to_be_attached(timeout=SHOWN_TIMEOUT_MS)
    expect(comparison.filter(has_text=stale).first).to_be_attached(timeout=SHOWN_TIMEOUT_MS)
    history = page.locator(".st-key-promotion-history [role=gridcell]")
    expect(history.filter(has_text=re.compile("^promote$")).first).to_be_attached(
        timeout=SHOWN_TIMEOUT_MS
    )
    expect(history.filter(has_text=re.compile("^auto-promotion@")).first).to_be_attached(
        timeout=SHOWN_TIMEOUT_MS
    )
    events = grid_texts(page, "model-events")
    assert {"concept-drift", "candidate"} <= set(events), events
    assert_no_exception(page)
    screenshot(page, "lifecycle-dashboard.png")
    # The page showed the probation above. Whether the picture still does depends on the
    # machine: the probation ends after --live-trips more trips, about 20 s here, and a busy CI
    # machine took longer than that to check the page (CI run 14). So a picture taken after it
    # is warned about, as the ratio targets are, not failed.
    if not on_probation.search(roles.inner_text()):
        warnings.warn("lifecycle-dashboard.png was taken after the probation ended", stacklevel=1)
    return promoted
