"""What the page draws: colours, fading, map rows, the records table and the chart frames."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import attrs
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_dashboard.deployments import Roles
from taxi_dashboard.health import GroupLag
from taxi_dashboard.quality import compare
from taxi_dashboard.state import DashboardState, RawRecord
from taxi_dashboard.trips import LiveTrip
from taxi_dashboard.views import (
    DURATION_STOPS,
    ERROR_STOPS,
    MISSING,
    RATE_LABELS,
    champion_cumulative,
    comparison_frame,
    comparisons,
    cumulative_rows,
    dead_letters_frame,
    drift_banner,
    duration_colour,
    error_colour,
    fade_alpha,
    format_amount,
    format_duration,
    format_error,
    format_figure,
    head_to_head_summary,
    history_frame,
    in_progress_count,
    lag_frame,
    map_rows,
    markdown_escaped,
    model_events_frame,
    quality_frames,
    rates_frame,
    records_frame,
    roles_caption,
    tooltip_text,
)
from taxi_events import DeadLetter, DeploymentDecision, ModelEvent, ModelMetrics, encode
from taxi_events.testing import prediction, trip_finished, trip_started

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def trip(trip_id: str, *, started_s_ago: float = 1.0, **fields) -> LiveTrip:
    return LiveTrip.of(
        prediction(trip_id, trip_started_at=NOW - timedelta(seconds=started_s_ago), **fields)
    )


def ended(live: LiveTrip, *, ago_s: float, duration: float = 500.0, **fields) -> LiveTrip:
    finish = trip_finished(
        live.trip_id, trip_duration=duration, produced_at=NOW - timedelta(seconds=ago_s), **fields
    )
    return live.ended(finish)


def test_colour_scales_run_from_their_first_to_their_last_stop():
    assert duration_colour(1) == DURATION_STOPS[0][1]
    assert duration_colour(DURATION_STOPS[-1][0] * 10) == DURATION_STOPS[-1][1]
    assert duration_colour(600) == DURATION_STOPS[1][1]
    assert error_colour(0.0) == ERROR_STOPS[0][1]
    assert error_colour(5.0) == ERROR_STOPS[-1][1]
    assert error_colour(None) == (140, 140, 140)


@given(st.floats(0, 1e6, allow_nan=False), st.floats(0, 1e6, allow_nan=False))
def test_colours_are_valid_rgb_for_any_value(a, b):
    for colour in (duration_colour(a), error_colour(b)):
        assert len(colour) == 3
        assert all(0 <= c <= 255 for c in colour)


def test_a_finished_trip_fades_out_over_the_fade_time():
    assert fade_alpha(-1, 20) == 255
    assert fade_alpha(0, 20) == 255
    assert fade_alpha(10, 20) == 128
    assert fade_alpha(20, 20) == 0
    assert fade_alpha(99, 20) == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, MISSING),
        (0, "0 s"),
        (45.4, "45 s"),
        (125, "2 min 05 s"),
        (3_900, "1 h 05 min"),
        (-125, "-2 min 05 s"),
    ],
)
def test_durations_read_like_durations(seconds, text):
    assert format_duration(seconds) == text


def test_errors_show_sign_and_share():
    done = ended(trip("t1", predicted_duration=600.0), ago_s=1, duration=500.0)
    assert format_error(done) == "+1 min 40 s (20%)"
    assert format_error(trip("t2")) == MISSING


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (None, ".3f", MISSING),
        (0.41256, ".3f", "0.413"),
        (61.7, ".0f", "62"),
        (0.7012, ".1%", "70.1%"),
    ],
)
def test_figures_are_rounded_or_missing(value, spec, text):
    assert format_figure(value, spec) == text


def test_the_tooltip_shows_the_details_as_plain_text():
    done = ended(trip("<b>x</b>", predicted_duration=600.0), ago_s=1, duration=500.0)
    text = tooltip_text(done, "finished")
    assert text.splitlines() == [
        "<b>x</b> (train, finished)",
        "pickup 2016-03-01 08:00",
        "predicted 10 min 00 s",
        "actual 8 min 20 s",
        "error +1 min 40 s (20%)",
    ]


def test_map_rows_split_trips_in_progress_from_fading_finished_ones():
    running = trip("run", predicted_duration=120.0)
    fresh = ended(trip("fresh"), ago_s=0.0, duration=600.0)  # exact prediction
    fading = ended(trip("fading"), ago_s=10.0)
    gone = ended(trip("gone"), ago_s=60.0)
    stale = trip("stale", started_s_ago=3_600)  # its end never came
    rows = map_rows([stale, gone, fading, fresh, running], NOW, fade_s=20)
    assert [r["tip"].split()[0] for r in rows.in_progress] == ["run"]
    assert [r["tip"].split()[0] for r in rows.finished] == ["fresh", "fading"]
    assert rows.in_progress[0]["color"] == [*DURATION_STOPS[0][1], 200]
    assert rows.finished[0]["color"] == [*ERROR_STOPS[0][1], 255]
    assert rows.finished[1]["color"][3] == 128
    assert rows.in_progress[0]["pickup"] == [-73.98, 40.75]
    assert rows.in_progress[0]["dropoff"] == [-73.96, 40.77]
    assert len(rows) == 3
    assert in_progress_count([stale, gone, running], NOW) == 1


def test_map_rows_are_capped_newest_first():
    trips = [trip(f"r{i}") for i in range(50)] + [ended(trip(f"f{i}"), ago_s=1) for i in range(50)]
    rows = map_rows(trips, NOW, max_in_progress=5, max_finished=3)
    assert [r["tip"].split()[0] for r in rows.in_progress] == [
        f"r{i}" for i in (49, 48, 47, 46, 45)
    ]
    assert [r["tip"].split()[0] for r in rows.finished] == ["f49", "f48", "f47"]


def test_records_are_the_latest_first_filtered_by_source():
    trips = [
        ended(trip("a", source="train", predicted_duration=600.0), ago_s=1, duration=500.0),
        trip("b", source="test", predicted_duration=90.0),
        ended(trip("c", source="test"), ago_s=1, duration=610.0, is_estimate=True, source="test"),
    ]
    both = records_frame(trips, ["train", "test"])
    assert list(both["trip"]) == ["c", "b", "a"]
    assert list(both["status"]) == ["finished", "in progress", "finished"]
    assert both[["predicted", "actual", "error"]].to_numpy().tolist() == [
        ["10 min 00 s", "10 min 10 s (estimate)", "-10 s (2%)"],
        ["1 min 30 s", MISSING, MISSING],
        ["10 min 00 s", "8 min 20 s", "+1 min 40 s (20%)"],
    ]
    # No cell is missing: st.dataframe would print it as "None".
    assert not both.isna().to_numpy().any()
    assert list(records_frame(trips, ["test"], limit=1)["trip"]) == ["c"]
    assert records_frame(trips, []).empty


def window(source: str, start_s: int, **fields) -> ModelMetrics:
    start = NOW + timedelta(seconds=start_s)
    values = {
        "count": 5,
        "rmsle": 0.4,
        "mae": 60.0,
        "median_ape": 0.2,
        "within_30": 0.7,
        "unmatched": 0,
        "model_version": "m1",
    }
    return ModelMetrics(
        source=source,
        scope="window",
        window_start=start,
        window_end=start + timedelta(seconds=10),
        **{**values, **fields},
    )


def test_quality_frames_have_a_column_per_source_and_skip_empty_windows():
    empty = {"count": 0, "rmsle": None, "mae": None, "median_ape": None, "within_30": None}
    windows = [
        # Head-to-head figures are not the champion's over all its trips.
        window("train", 0, rmsle=0.1, challenger_version="m2", count=9),
        window(
            "train", 0, rmsle=0.1, role="challenger", model_version="m2", challenger_version="m2"
        ),
        window("train", 0, rmsle=0.5),
        window("test", 0, rmsle=0.3),
        window("train", 10, rmsle=0.6),
        window("test", 10, **empty),
    ]
    frames = quality_frames(windows)
    assert set(frames) == {"rmsle", "mae", "within_30"}
    rmsle = frames["rmsle"]
    assert list(rmsle.columns) == ["test", "train"]
    assert rmsle.index.name == "window end"
    assert rmsle["train"].tolist() == [0.5, 0.6]
    assert rmsle["test"].iloc[0] == 0.3
    assert pd.isna(rmsle["test"].iloc[1])
    assert quality_frames([])["mae"].empty


def test_the_rates_frame_smooths_each_topic_per_second():
    state = DashboardState()
    now_ms = int(NOW.timestamp() * 1000)
    for age_s in range(1, 11):
        stamp = now_ms - age_s * 1000
        for i in range(age_s % 2 * 4):  # 4 trips every other second: 2 per second on average
            state.ingest(RawRecord("new_trips", encode(trip_started(f"{age_s}-{i}")), stamp), NOW)
    frame = rates_frame(state.snapshot(NOW), smooth_s=2)
    assert list(frame.columns) == list(RATE_LABELS.values())
    assert frame["trips in"].iloc[-4:].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert frame["predictions out"].max() == 0


def test_tables_of_lag_and_dead_letters():
    lags = lag_frame(
        [
            GroupLag("taxi-predictor", 3, partitions=6, committed=6),
            GroupLag("taxi-aggregator", None, error="end offsets: timed out"),
            GroupLag("new-group", 0, partitions=6, committed=0),
        ]
    )
    assert lags["state"].tolist() == ["running", "end offsets: timed out", "no commits yet"]
    assert lags["partitions committed"].tolist() == ["6/6", "0/0", "0/6"]

    state = DashboardState()
    letter = DeadLetter(source_topic="t", partition=0, offset=1, service="s", reason="why")
    state.ingest(RawRecord("dead_letters", b"", 1, letter.to_headers()), NOW)
    assert dead_letters_frame(state.snapshot(NOW))["reason"].tolist() == ["why"]


def test_the_cumulative_table_is_rounded_and_shows_missing_figures_as_a_dash():
    matched = ModelMetrics(
        source="train",
        scope="cumulative",
        window_start=None,
        window_end=None,
        count=9,
        rmsle=0.41234,
        mae=61.7,
        median_ape=0.25,
        within_30=0.70123,
        unmatched=1,
        model_version="m1",
    )
    # Figures are null until a source's first matched trip.
    none = {"count": 0, "rmsle": None, "mae": None, "median_ape": None, "within_30": None}
    rows = cumulative_rows({"train": matched, "test": attrs.evolve(matched, source="test", **none)})
    figures = ["RMSLE", "MAE (s)", "median APE", "within ±30%"]
    assert rows["source"].tolist() == ["test", "train"]
    assert rows[figures].to_numpy().tolist() == [
        [MISSING] * 4,
        ["0.412", "62", "25.0%", "70.1%"],
    ]


def cumulative(source: str = "train", **fields) -> ModelMetrics:
    values = {
        "count": 120,
        "rmsle": 0.41234,
        "mae": 61.7,
        "median_ape": 0.25,
        "within_30": 0.70123,
        "unmatched": 0,
        "model_version": "m1",
        "produced_at": NOW,
    }
    return ModelMetrics(
        source=source,
        scope="cumulative",
        window_start=None,
        window_end=None,
        **{**values, **fields},
    )


def decision(action: str, version: str, champion: str | None, challenger: str | None, **fields):
    values = {"actor": "ana@host", "reason": f"{action} {version}", "decided_at": NOW, **fields}
    return DeploymentDecision(
        action=action, version=version, champion=champion, challenger=challenger, **values
    )


def snapshot_of(
    metrics: list[ModelMetrics],
    decisions: list[DeploymentDecision],
    events: list[ModelEvent] | None = None,
):
    state = DashboardState()
    for m in metrics:
        state.ingest(RawRecord("model_metrics", encode(m), 1), NOW)
    for d in decisions:
        state.ingest(RawRecord("model_deployments", encode(d), 1), NOW)
    for e in events or []:
        state.ingest(RawRecord("model_events", encode(e), 1), NOW)
    return state.snapshot(NOW)


HEAD_TO_HEAD = [
    cumulative(model_version="m1", count=900, rmsle=0.45),
    cumulative(model_version="m1", challenger_version="m2", rmsle=0.41234),
    cumulative(
        role="challenger", model_version="m2", challenger_version="m2", rmsle=0.39, mae=55.2
    ),
    cumulative("test", model_version="m1", count=300),
]
DECISIONS = [
    decision("publish", "m1", "m1", None, decided_at=NOW - timedelta(hours=2)),
    decision("publish", "m2", "m1", "m2", reason="retrained on March"),
]


def test_the_champion_and_the_challenger_stand_side_by_side_on_the_same_trips():
    snapshot = snapshot_of(HEAD_TO_HEAD, DECISIONS)
    frame = comparison_frame(comparisons(snapshot))
    assert list(frame.columns) == [
        "figure",
        "train · champion",
        "train · challenger",
        "test · champion",
        "test · challenger",
    ]
    table = frame.set_index("figure")
    assert table["train · champion"].tolist() == [
        "m1",
        "champion",
        "shadowed trips",
        "120",
        "0.412",
        "62",
        "25.0%",
        "70.1%",
    ]
    assert table.loc["RMSLE", "train · challenger"] == "0.390"
    assert table.loc["MAE (s)", "train · challenger"] == "55"
    assert table.loc["role", "train · challenger"] == "challenger"
    # No figures of the test source on the challenger's trips yet: dashes, not the champion's
    # all-trips figures (those are on other trips).
    assert table.loc["version", "test · challenger"] == "m2"
    assert table.loc["matched", "test · champion"] == MISSING
    assert table.loc["RMSLE", "test · challenger"] == MISSING
    assert not frame.isna().to_numpy().any()
    assert roles_caption(snapshot) == "Champion m1 · challenger m2"
    summaries = [head_to_head_summary(c) for c in comparisons(snapshot)]
    assert summaries == [
        "train: RMSLE 0.390 (challenger m2) vs 0.412 (champion m1) on the same 120 trips: "
        "the challenger leads",
        "test: no trip scored for both models yet",
    ]


def test_without_a_challenger_the_champion_shows_its_figures_over_all_its_trips():
    withdrawn = [*DECISIONS, decision("withdraw", "m2", "m1", None)]
    snapshot = snapshot_of(HEAD_TO_HEAD, withdrawn)
    found = comparisons(snapshot)
    frame = comparison_frame(found).set_index("figure")
    assert list(frame.columns) == ["train · champion", "test · champion"]
    assert frame.loc["scored on"].tolist() == ["all trips", "all trips"]
    assert frame.loc["matched"].tolist() == ["900", "300"]
    assert [head_to_head_summary(c) for c in found] == [None, None]
    assert roles_caption(snapshot) == "Champion m1 · challenger none"
    assert champion_cumulative(snapshot)["train"].count == 900


def test_a_pipeline_without_decisions_shows_the_model_behind_its_figures():
    snapshot = snapshot_of([cumulative(model_version="m7")], [])
    assert roles_caption(snapshot) == "Model version m7 (no deployment decision yet)"
    frame = comparison_frame(comparisons(snapshot)).set_index("figure")
    assert frame["train · champion"]["version"] == "m7"
    assert comparison_frame([]).columns.tolist() == ["figure"]


def test_the_summary_says_who_leads_on_the_same_trips():
    found = snapshot_of(HEAD_TO_HEAD, DECISIONS).cumulative
    worse = {
        **found,
        ("train", "challenger", "m2", "m2"): cumulative(
            role="challenger", model_version="m2", challenger_version="m2", rmsle=0.5
        ),
    }
    summary = head_to_head_summary(compare(worse, Roles("m1", "m2"), "train"))
    assert summary is not None
    assert summary.endswith("the champion leads")


def test_the_promotion_history_is_newest_first_with_who_why_and_the_roles_left():
    snapshot = snapshot_of([], [*DECISIONS, decision("promote", "m2", "m2", None, actor="bo")])
    frame = history_frame(snapshot.decisions)
    assert frame.columns.tolist() == [
        "when (UTC)",
        "action",
        "version",
        "champion",
        "challenger",
        "who",
        "why",
    ]
    assert frame.to_numpy().tolist() == [
        ["2026-01-01 12:00:00", "promote", "m2", "m2", MISSING, "bo", "promote m2"],
        ["2026-01-01 12:00:00", "publish", "m2", "m1", "m2", "ana@host", "retrained on March"],
        ["2026-01-01 10:00:00", "publish", "m1", "m1", MISSING, "ana@host", "publish m1"],
    ]
    assert history_frame([]).empty


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, MISSING),
        (1_850.0, "1,850"),
        (12_345.6, "12,346"),
        (0.312345, "0.3123"),
        (-0.5, "-0.5"),
        (3e-05, "3e-05"),
    ],
)
def test_measured_figures_read_as_amounts(value, text):
    assert format_amount(value) == text


def concept_drift(version: str = "m1", **fields) -> ModelEvent:
    values = {
        "kind": "concept-drift",
        "model_version": version,
        "source": "train",
        "detector": "page-hinkley",
        "statistic": "log_error",
        "value": 12.5,
        "threshold": 10.0,
        "trips": 1_850,
        "first_trip_id": "id0001000",
        "last_trip_id": "id0002849",
        "evidence": {"mean_log_error_before": 0.31, "mean_log_error_after": 0.52},
        "detail": "Trips take longer than m1 predicts.",
        "occurred_at": NOW - timedelta(minutes=3),
    }
    return ModelEvent(**{**values, **fields})


def data_drift() -> ModelEvent:
    return concept_drift(
        kind="data-drift",
        source="test",
        detector="psi",
        statistic="psi:pickup_area",
        value=0.41,
        threshold=0.25,
        trips=2_000,
        first_trip_id=None,
        last_trip_id=None,
        evidence={"psi:pickup_area": 0.41, "psi:distance_km": 0.05},
        detail="Pickups moved to another borough.",
        occurred_at=NOW,
    )


def unescaped(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def test_the_banner_shows_each_drift_on_the_champion_with_its_evidence():
    events = [
        concept_drift(value=11.0),
        concept_drift(),
        data_drift(),
        # On the challenger: not the model serving.
        concept_drift("m2", detail="The challenger drifted."),
    ]
    banner = drift_banner(snapshot_of([], DECISIONS, events))
    assert banner is not None
    assert banner.drifted
    header, data, concept = banner.text.split("\n\n")
    assert header == "**The champion m1 has drifted.**"
    # Newest first: the data drift was detected last.
    assert unescaped(data).split("  \n") == [
        "**Data drift on the test trips**",
        "psi on psi:pickup_area: 0.41 against the threshold 0.25, over 2,000 trips, "
        "at 2026-01-01 12:00:00 UTC.",
        "Pickups moved to another borough.",
        "Evidence: psi:distance_km = 0.05 · psi:pickup_area = 0.41",
    ]
    assert unescaped(concept).split("  \n") == [
        "**Concept drift on the train trips**",
        "page-hinkley on log_error: 12.5 against the threshold 10, over 1,850 trips "
        "(id0001000 to id0002849), at 2026-01-01 11:57:00 UTC.",
        "Trips take longer than m1 predicts.",
        "Evidence: mean_log_error_after = 0.52 · mean_log_error_before = 0.31",
        "Detected 2 times on this model; the latest is shown.",
    ]
    assert "challenger" not in banner.text


def test_the_banner_is_calm_once_the_drifted_model_no_longer_serves():
    promoted = [*DECISIONS, decision("promote", "m2", "m2", None)]
    banner = drift_banner(snapshot_of([], promoted, [concept_drift(), data_drift()]))
    assert banner is not None
    assert not banner.drifted
    assert banner.text == "No drift detected on the champion m2."
    # No model serves yet: nothing to say.
    assert drift_banner(snapshot_of([], [], [concept_drift()])) is None


def test_text_from_kafka_cannot_format_the_banner():
    assert markdown_escaped("[x](http://e.vil) **b** <i>$x$</i> :red[y]") == (
        r"\[x\]\(http\:\/\/e\.vil\) \*\*b\*\* \<i\>\$x\$\<\/i\> \:red\[y\]"
    )
    banner = drift_banner(snapshot_of([], DECISIONS, [concept_drift(detail="**[click](x)**")]))
    assert banner is not None
    assert "\\*\\*\\[click\\]\\(x\\)\\*\\*" in banner.text


@given(st.text())
def test_escaped_text_reads_back_as_written(text):
    assert unescaped(markdown_escaped(text)) == text


def test_the_model_events_are_listed_newest_first_with_their_evidence():
    candidate = ModelEvent(
        kind="candidate",
        model_version="m2",
        detail="Retrained on the newest 20,000 trips.",
        evidence={"candidate_rmsle": 0.38, "champion_rmsle": 0.45, "trips": 4_000.0},
        occurred_at=NOW + timedelta(minutes=1),
    )
    snapshot = snapshot_of([], DECISIONS, [concept_drift(), candidate])
    frame = model_events_frame(snapshot.model_events)
    assert frame.columns.tolist() == [
        "when (UTC)",
        "event",
        "version",
        "source",
        "measured",
        "trips",
        "detail",
        "evidence",
    ]
    assert frame.to_numpy().tolist() == [
        [
            "2026-01-01 12:01:00",
            "candidate",
            "m2",
            MISSING,
            MISSING,
            MISSING,
            "Retrained on the newest 20,000 trips.",
            "candidate_rmsle = 0.38 · champion_rmsle = 0.45 · trips = 4,000",
        ],
        [
            "2026-01-01 11:57:00",
            "concept-drift",
            "m1",
            "train",
            "page-hinkley on log_error: 12.5 against the threshold 10",
            "1,850 trips (id0001000 to id0002849)",
            "Trips take longer than m1 predicts.",
            "mean_log_error_after = 0.52 · mean_log_error_before = 0.31",
        ],
    ]
    assert model_events_frame([]).empty
