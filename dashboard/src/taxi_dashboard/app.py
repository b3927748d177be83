"""The live page, run by Streamlit (start it with `taxi-dashboard`).

A thin edge: the one LiveData per process (st.cache_resource) reads Kafka in the background;
each browser session redraws from its snapshot in fragments that rerun on a timer, so the
page updates in place and is never reloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

import streamlit as st

from taxi_dashboard.health import ClusterHealth, warnings
from taxi_dashboard.live_map import build_deck, legend_html
from taxi_dashboard.reader import LiveData, shared_live_data
from taxi_dashboard.settings import DashboardSettings
from taxi_dashboard.state import Snapshot
from taxi_dashboard.views import (
    QUALITY_CHARTS,
    champion_cumulative,
    comparison_frame,
    comparisons,
    cumulative_rows,
    dead_letters_frame,
    drift_banner,
    head_to_head_summary,
    history_frame,
    in_progress_count,
    lag_frame,
    map_rows,
    model_events_frame,
    quality_frames,
    rates_frame,
    records_frame,
    roles_caption,
)
from taxi_events import Source
from taxi_kafka import ML_PREDICTIONS, NEW_TRIPS

SOURCES: list[Source] = ["train", "test"]
NO_DATA = """**No trips yet.** The dashboard shows what the pipeline writes to Kafka. Start it:

- everything at once: `uv run taxi up`
- or piece by piece: `uv run taxi cluster up`, then `uv run taxi-predictor`,
  `uv run taxi-aggregator` and `uv run taxi-producer --source train` (and `--source test`).

This page updates by itself as soon as trips flow."""
WAITING = "Trips appear here as soon as they are predicted."


@st.cache_resource(show_spinner=False)
def live_data() -> LiveData:
    """The process's one reader, shared by every session (`taxi-dashboard` started it
    already; under a bare `streamlit run` it starts here)."""
    return shared_live_data(DashboardSettings.from_env(os.environ))


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%H:%M:%S")


def _status(snapshot: Snapshot) -> str:
    return (
        f"Updated {_clock(snapshot.taken_at)} · {snapshot.records_read:,} records read · "
        f"last record {_clock(snapshot.last_record_at)} · "
        f"{snapshot.malformed_count:,} malformed records skipped"
    )


def _kpis(snapshot: Snapshot, health: ClusterHealth | None) -> None:
    cells = st.columns(7)
    cells[0].metric("Trips in /s", f"{snapshot.rates.get(NEW_TRIPS, 0.0):,.1f}")
    cells[1].metric("Predictions out /s", f"{snapshot.rates.get(ML_PREDICTIONS, 0.0):,.1f}")
    running = in_progress_count(snapshot.trips, snapshot.taken_at)
    cells[2].metric("Trips in progress", f"{running:,}")
    if health is not None and health.reachable:
        brokers = f"{len(health.brokers_up)} / {health.expected_brokers}"
        under_replicated = f"{health.under_replicated}"
    else:
        brokers = under_replicated = "?"
    cells[3].metric("Brokers up", brokers)
    cells[4].metric("Under-replicated", under_replicated)
    cells[5].metric("Dead letters", f"{snapshot.dead_letter_count:,}")
    cells[6].metric("Malformed skipped", f"{snapshot.malformed_count:,}")


def _status_panel(live: LiveData) -> None:
    snapshot, health = live.snapshot(), live.health()
    for warning in warnings(health, snapshot.taken_at):
        st.warning(warning, icon="⚠️")
    st.container(key="status").caption(_status(snapshot))
    _kpis(snapshot, health)
    if not snapshot.has_data:
        st.info(NO_DATA)
        if live.reader_error:
            st.caption(f"Reader: {live.reader_error}")


def _map_panel(live: LiveData) -> None:
    snapshot = live.snapshot()
    rows = map_rows(snapshot.trips, snapshot.taken_at)
    # Keyed containers get a CSS class (st-key-...), which the browser test looks for. Drawn
    # with no trips too: the boroughs show where they will appear.
    with st.container(key="live-map"):
        st.pydeck_chart(build_deck(rows), height=480)
    if not snapshot.trips:
        st.caption(WAITING)
        return
    st.caption(f"{len(rows.in_progress):,} trips in progress, {len(rows.finished):,} just finished")


def _health_panel(live: LiveData) -> None:
    snapshot, health = live.snapshot(), live.health()
    st.caption("Records per second, by record time")
    st.line_chart(rates_frame(snapshot), height=180, y_label="records/s", x_label="")
    if health is not None and health.groups:
        st.dataframe(lag_frame(health.groups), hide_index=True, width="stretch")
    if snapshot.dead_letters:
        st.caption(f"Latest dead letters (of {snapshot.dead_letter_count:,} read)")
        st.dataframe(dead_letters_frame(snapshot), hide_index=True, height=150)
    if snapshot.problems:
        latest = snapshot.problems[0]
        st.caption(f"Latest malformed record skipped ({latest.topic}): {latest.reason}")


def _records_panel(live: LiveData) -> None:
    snapshot = live.snapshot()
    if not snapshot.trips:
        st.caption(WAITING)
        return
    sources = st.segmented_control(
        "Source", SOURCES, selection_mode="multi", default=SOURCES, key="sources"
    )
    frame = records_frame(snapshot.trips, sources)
    st.container(key="live-records").dataframe(
        frame,
        hide_index=True,
        height=320,
        column_config={
            "pickup": st.column_config.DatetimeColumn("pickup", format="YYYY-MM-DD HH:mm"),
        },
    )
    st.caption(f"{len(frame)} latest trips shown, most recent change first")


def _quality_panel(live: LiveData) -> None:
    snapshot = live.snapshot()
    st.container(key="model-roles").caption(roles_caption(snapshot))
    if not snapshot.windows and not snapshot.cumulative:
        st.caption("No model_metrics yet: the aggregator publishes them every window.")
        return
    st.caption("Window figures per source: the champion over all its trips")
    frames = quality_frames(snapshot.windows)
    for (metric, label), cell in zip(QUALITY_CHARTS.items(), st.columns(3), strict=True):
        with cell:
            st.markdown(f"**{label}**")
            st.line_chart(frames[metric], height=220, x_label="", y_label=label)
    left, right = st.columns(2)
    with left:
        st.markdown("**Champion and challenger (cumulative)**")
        found = comparisons(snapshot)
        for summary in filter(None, map(head_to_head_summary, found)):
            st.caption(summary)
        st.container(key="model-comparison").dataframe(
            comparison_frame(found), hide_index=True, width="stretch"
        )
    with right:
        st.markdown("**The champion since the start, over all its trips (cumulative)**")
        st.container(key="champion-cumulative").dataframe(
            cumulative_rows(champion_cumulative(snapshot)), hide_index=True, width="stretch"
        )


def _drift_panel(live: LiveData) -> None:
    banner = drift_banner(live.snapshot())
    if banner is None:
        return
    with st.container(key="drift-banner"):
        if banner.drifted:
            st.error(banner.text, icon=":material/warning:")
        else:
            st.success(banner.text, icon=":material/check_circle:")


def _history_panel(live: LiveData) -> None:
    snapshot = live.snapshot()
    if snapshot.decisions:
        st.container(key="promotion-history").dataframe(
            history_frame(snapshot.decisions), hide_index=True, width="stretch"
        )
        st.caption(f"{len(snapshot.decisions):,} decisions, newest first")
    else:
        st.caption(
            "No deployment decisions yet: publishing, promoting, rolling back or withdrawing "
            "a model writes one to model_deployments."
        )
    st.markdown("**Model events**")
    if not snapshot.model_events:
        st.caption(
            "No model events yet: drift detected, retrained candidates and automatic "
            "promotions and rollbacks are written to model_events."
        )
        return
    st.container(key="model-events").dataframe(
        model_events_frame(snapshot.model_events), hide_index=True, width="stretch"
    )
    st.caption(f"{len(snapshot.model_events):,} events, newest first")


def main() -> None:
    st.set_page_config(page_title="ML-taxi live", page_icon="🚕", layout="wide")
    live = live_data()
    refresh = live.settings.refresh_s

    def every(seconds: float, panel: Callable[[LiveData], None]) -> None:
        # Each panel reruns on its own timer and redraws in place; the page never reloads.
        st.fragment(run_every=seconds)(panel)(live)

    st.title("ML-taxi live")
    st.caption(f"Kafka {live.settings.kafka.bootstrap_servers} · refreshed every {refresh:g} s")
    every(refresh, _drift_panel)
    every(refresh, _status_panel)
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Live New York")
        every(refresh, _map_panel)
        st.markdown(legend_html(), unsafe_allow_html=True)
    with right:
        st.subheader("Pipeline health")
        every(refresh, _health_panel)
    st.subheader("Live records")
    every(refresh, _records_panel)
    st.subheader("Model quality over time")
    every(2 * refresh, _quality_panel)
    st.subheader("Promotion history")
    every(2 * refresh, _history_panel)


main()
