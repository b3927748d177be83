"""Model quality history (windows by start, the newest cumulative figures per series) and the
champion compared with the challenger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from taxi_dashboard.deployments import Roles
from taxi_dashboard.quality import (
    QualityHistory,
    all_trips_windows,
    champion_figures,
    champion_version,
    compare,
    quality_key,
)
from taxi_events import ModelMetrics, decode, encode

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


def cumulative(**fields: Any) -> ModelMetrics:
    return metrics("cumulative", **fields)


def head_to_head(champion: str, challenger: str, **fields: Any) -> list[ModelMetrics]:
    """The aggregator's pair: both roles on the trips `challenger` shadowed, equal counts."""
    return [
        cumulative(model_version=champion, challenger_version=challenger, **fields),
        cumulative(
            role="challenger", model_version=challenger, challenger_version=challenger, **fields
        ),
    ]


def history_of(*records: ModelMetrics) -> QualityHistory:
    history = QualityHistory()
    for record in records:
        history.add(record)
    return history


def test_windows_are_ordered_by_start_and_a_republished_window_replaces_the_old():
    history = history_of(
        metrics(start_s=20),
        metrics(start_s=0, rmsle=0.9),
        metrics(start_s=10, source="test"),
        metrics(start_s=0, rmsle=0.5),
    )
    windows = history.windows()
    assert [(m.window_start, m.source) for m in windows] == [
        (T0, "train"),
        (T0 + timedelta(seconds=10), "test"),
        (T0 + timedelta(seconds=20), "train"),
    ]
    assert windows[0].rmsle == 0.5


def test_the_same_window_of_other_roles_and_versions_is_kept_beside_it():
    history = history_of(
        metrics(rmsle=0.5),
        metrics(rmsle=0.6, challenger_version="v2"),
        metrics(rmsle=0.3, role="challenger", model_version="v2", challenger_version="v2"),
        metrics(rmsle=0.7, model_version="v0"),
    )
    assert sorted(m.rmsle for m in history.windows()) == [0.3, 0.5, 0.6, 0.7]


def test_the_newest_cumulative_figures_of_each_series_win_whatever_the_reading_order():
    history = history_of(
        cumulative(count=50, produced_at=T0 + timedelta(seconds=20)),
        cumulative(count=40, produced_at=T0 + timedelta(seconds=10)),
        cumulative(source="test", model_version="v2", produced_at=T0 + timedelta(seconds=30)),
        *head_to_head("v1", "v3", count=7, produced_at=T0 + timedelta(seconds=40)),
    )
    found = history.cumulative()
    assert found["train", "champion", "v1", None].count == 50
    assert found["train", "champion", "v1", "v3"].count == 7
    assert found["train", "challenger", "v3", "v3"].count == 7
    # Head-to-head figures are no champion's figures over all its trips.
    assert history.model_version() == "v2"


def test_no_figures_no_model_version():
    history = history_of(metrics(start_s=0))
    assert history.model_version() is None
    assert history.cumulative() == {}


def test_window_history_is_bounded():
    history = QualityHistory(capacity=5)
    for i in range(20):
        history.add(metrics(start_s=10 * i))
    assert len(history.windows()) == 5
    assert history.windows()[0].window_start == T0 + timedelta(seconds=150)


def test_cumulative_series_are_bounded_the_longest_silent_one_forgotten():
    history = QualityHistory(series=3)
    for i in range(5):
        history.add(cumulative(model_version=f"v{i}", produced_at=T0 + timedelta(seconds=i)))
    history.add(cumulative(model_version="v2", produced_at=T0 + timedelta(seconds=9)))
    assert {version for _, _, version, _ in history.cumulative()} == {"v2", "v3", "v4"}


def test_a_record_written_before_roles_counts_as_the_champion_over_all_its_trips():
    document = json.loads(encode(cumulative(model_version="old", count=3)))
    for added in ("role", "challenger_version"):
        del document[added]
    document["schema_version"] = "1.0"
    old = decode(json.dumps(document).encode(), ModelMetrics)
    history = history_of(old)
    assert quality_key(old) == ("train", "champion", "old", None)
    assert history.model_version() == "old"
    comparison = compare(history.cumulative(), Roles("old", None), "train")
    assert comparison.champion.figures == old


def test_the_champion_is_the_last_decisions_else_the_newest_figures():
    found = history_of(
        cumulative(model_version="v1", produced_at=T0),
        cumulative(model_version="v2", produced_at=T0 + timedelta(seconds=5)),
    ).cumulative()
    assert champion_version(found, None) == "v2"
    assert champion_version(found, Roles("v1", "v3")) == "v1"
    assert champion_version(found, Roles(None, None)) is None
    assert champion_figures(found, "v1")["train"].model_version == "v1"
    assert champion_figures(found, None)["train"].model_version == "v2"
    assert champion_figures(found, "v9") == {}


def test_without_a_challenger_the_champion_stands_alone_over_all_its_trips():
    found = history_of(
        cumulative(model_version="v1", rmsle=0.41),
        # An earlier challenger's head-to-head figures are not today's.
        *head_to_head("v1", "v0", rmsle=0.2),
    ).cumulative()
    comparison = compare(found, Roles("v1", None), "train")
    assert not comparison.head_to_head
    assert comparison.challenger is None
    assert (comparison.champion.role, comparison.champion.version) == ("champion", "v1")
    assert comparison.champion.figures is not None
    assert comparison.champion.figures.rmsle == 0.41
    assert compare(found, Roles("v1", None), "test").champion.figures is None


def test_with_a_challenger_both_stand_on_the_trips_it_shadowed():
    found = history_of(
        cumulative(model_version="v1", rmsle=0.41, count=900),
        *head_to_head("v1", "v2", count=120),
        # Another challenger beside the same champion: another comparison.
        *head_to_head("v1", "v0", count=50),
    ).cumulative()
    comparison = compare(found, Roles("v1", "v2"), "train")
    assert comparison.head_to_head
    champion, challenger = comparison.standings()
    assert (champion.role, champion.version, challenger.role, challenger.version) == (
        "champion",
        "v1",
        "challenger",
        "v2",
    )
    assert champion.figures is not None
    assert challenger.figures is not None
    assert (champion.figures.count, challenger.figures.count) == (120, 120)
    assert champion.figures.challenger_version == challenger.figures.challenger_version == "v2"
    # Just published: the challenger has shadowed nothing yet.
    fresh = compare(found, Roles("v1", "v5"), "train")
    assert fresh.challenger is not None
    assert (fresh.champion.figures, fresh.challenger.figures) == (None, None)


def test_the_charts_take_the_champions_all_trip_windows_one_per_source_and_window():
    windows = [
        metrics(start_s=0, model_version="v1", count=8),
        metrics(start_s=0, model_version="v2", count=3),  # promoted within the window
        metrics(start_s=0, challenger_version="v3"),
        metrics(start_s=0, role="challenger", model_version="v3", challenger_version="v3"),
        metrics(start_s=0, source="test", model_version="v2"),
        metrics(start_s=10, model_version="v2"),
    ]
    chosen = all_trips_windows(windows)
    assert sorted((m.source, m.window_start, m.model_version) for m in chosen) == [
        ("test", T0, "v2"),
        ("train", T0, "v1"),
        ("train", T0 + timedelta(seconds=10), "v2"),
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["train", "test"]),
            st.sampled_from(["v1", "v2", "v3"]),
            st.sampled_from([None, "v2", "v3"]),
            st.integers(0, 100),
        ),
        max_size=30,
    ),
    st.sampled_from([None, "v1", "v2"]),
    st.sampled_from([None, "v2", "v3"]),
)
def test_a_comparison_only_ever_shows_figures_of_the_current_roles(records, champion, rival):
    history = QualityHistory()
    for source, version, challenger, seconds in records:
        role = "challenger" if challenger == version else "champion"
        history.add(
            cumulative(
                source=source,
                role=role,
                model_version=version,
                challenger_version=challenger,
                produced_at=T0 + timedelta(seconds=seconds),
            )
        )
    for source in ("train", "test"):
        comparison = compare(history.cumulative(), Roles(champion, rival), source)
        for standing in comparison.standings():
            figures = standing.figures
            if figures is not None:
                assert figures.source == source
                assert (figures.role, figures.model_version) == (standing.role, standing.version)
                assert figures.challenger_version == rival
