"""What the page draws, computed from a Snapshot: map rows and colours, the records table, the
chart frames and the status figures (pure: no I/O, no Streamlit).

The tables hold text, formatted here, where a figure may be missing: st.dataframe shows a
missing value as "None".
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from taxi_dashboard.health import GroupLag
from taxi_dashboard.model_events import DriftFinding
from taxi_dashboard.quality import (
    Comparison,
    Standing,
    all_trips_windows,
    champion_figures,
    compare,
)
from taxi_dashboard.state import Snapshot
from taxi_dashboard.trips import LiveTrip
from taxi_events import DeploymentDecision, ModelEvent, ModelEventKind, ModelMetrics, Source
from taxi_kafka import FINISHED_TRIPS, ML_PREDICTIONS, NEW_TRIPS

Colour = tuple[int, int, int]
RGBA = list[int]

# Predicted duration (seconds) -> colour, on a log scale: short trips teal, long ones red.
DURATION_STOPS: tuple[tuple[float, Colour], ...] = (
    (120.0, (44, 162, 195)),
    (600.0, (253, 210, 96)),
    (1_800.0, (232, 62, 40)),
    (3_600.0, (150, 20, 90)),
)
# |relative error| -> colour: within ±30% green, then amber, red from 100% on.
ERROR_STOPS: tuple[tuple[float, Colour], ...] = (
    (0.0, (46, 170, 90)),
    (0.3, (120, 200, 80)),
    (0.6, (250, 170, 40)),
    (1.0, (215, 40, 40)),
)
IN_PROGRESS_ALPHA = 200
# Map points stay in the few thousands, whatever the rate: the page must stay fast.
MAX_IN_PROGRESS = 1_500
MAX_FINISHED = 1_500
FADE_S = 20.0
# A trip whose end never came (its producer stopped) leaves the map after this long.
IN_PROGRESS_MAX_AGE_S = 600.0
RECORDS_LIMIT = 200
QUALITY_CHARTS: Mapping[str, str] = {
    "rmsle": "RMSLE",
    "mae": "MAE (s)",
    "within_30": "share within ±30%",
}


def _interpolate(stops: Sequence[tuple[float, Colour]], x: float) -> Colour:
    if x <= stops[0][0]:
        return stops[0][1]
    for (x0, c0), (x1, c1) in itertools.pairwise(stops):
        if x <= x1:
            t = (x - x0) / (x1 - x0)
            return (
                round(c0[0] + (c1[0] - c0[0]) * t),
                round(c0[1] + (c1[1] - c0[1]) * t),
                round(c0[2] + (c1[2] - c0[2]) * t),
            )
    return stops[-1][1]


def duration_colour(seconds: float) -> Colour:
    """The colour of a predicted duration, interpolated on a log scale."""
    log_stops = [(math.log(x), c) for x, c in DURATION_STOPS]
    return _interpolate(log_stops, math.log(max(seconds, 1.0)))


def error_colour(relative_error: float | None) -> Colour:
    """The colour of a prediction's |relative error|; grey when unknown (zero-length trip)."""
    if relative_error is None or math.isnan(relative_error):
        return (140, 140, 140)
    return _interpolate(ERROR_STOPS, relative_error)


def fade_alpha(age_s: float, fade_s: float = FADE_S) -> int:
    """Opacity of a finished trip `age_s` seconds after its end: 255 down to 0 over `fade_s`."""
    if age_s <= 0:
        return 255
    return max(0, round(255 * (1 - age_s / fade_s)))


# A figure not known (yet): an en dash, which cannot be mistaken for a minus sign.
MISSING = "\N{EN DASH}"


def format_figure(value: float | None, spec: str) -> str:
    """`value` formatted by `spec` (as format() does), or MISSING."""
    return MISSING if value is None else format(value, spec)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    total = round(abs(seconds))
    sign = "-" if seconds < 0 and total else ""
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    if minutes:
        return f"{sign}{minutes} min {secs:02d} s"
    return f"{sign}{secs} s"


def format_error(trip: LiveTrip) -> str:
    error = trip.error
    if error is None:
        return MISSING
    text = ("+" if error > 0 else "") + format_duration(error)
    relative = trip.relative_error
    return text if relative is None else f"{text} ({relative:.0%})"


def _actual_text(trip: LiveTrip) -> str:
    text = format_duration(trip.actual_duration)
    return f"{text} (estimate)" if trip.is_estimate and trip.finished else text


def tooltip_text(trip: LiveTrip, status: str) -> str:
    """The hover text of a trip on the map."""
    return (
        f"{trip.trip_id} ({trip.source}, {status})\n"
        f"pickup {trip.pickup_datetime:%Y-%m-%d %H:%M}\n"
        f"predicted {format_duration(trip.predicted_duration)}\n"
        f"actual {_actual_text(trip)}\n"
        f"error {format_error(trip)}"
    )


# deck.gl fills {tip} from the hovered row; "text", not "html", so that nothing read from
# Kafka can inject markup.
TOOLTIP = {"text": "{tip}"}
# Five decimals of a degree are about a metre: enough for a map, and a smaller page update.
_COORDINATE_DECIMALS = 5


def _point(longitude: float, latitude: float) -> list[float]:
    return [round(longitude, _COORDINATE_DECIMALS), round(latitude, _COORDINATE_DECIMALS)]


def _map_row(trip: LiveTrip, colour: RGBA, status: str) -> dict[str, Any]:
    return {
        "pickup": _point(trip.pickup_longitude, trip.pickup_latitude),
        "dropoff": _point(trip.dropoff_longitude, trip.dropoff_latitude),
        "color": colour,
        "tip": tooltip_text(trip, status),
    }


def is_in_progress(trip: LiveTrip, now: datetime, max_age_s: float = IN_PROGRESS_MAX_AGE_S) -> bool:
    """Predicted, not finished, and not so old that its end must have been missed."""
    return not trip.finished and (now - trip.started_at).total_seconds() <= max_age_s


@dataclass(frozen=True)
class MapRows:
    in_progress: list[dict[str, Any]]
    finished: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.in_progress) + len(self.finished)


def map_rows(
    trips: Sequence[LiveTrip],
    now: datetime,
    *,
    max_in_progress: int = MAX_IN_PROGRESS,
    max_finished: int = MAX_FINISHED,
    fade_s: float = FADE_S,
    max_age_s: float = IN_PROGRESS_MAX_AGE_S,
) -> MapRows:
    """Rows for the map layers, newest first: trips in progress coloured by predicted duration,
    and trips finished in the last `fade_s` seconds coloured by error, fading out."""
    in_progress: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []
    for trip in reversed(trips):
        if len(in_progress) >= max_in_progress and len(finished) >= max_finished:
            break
        if trip.finished_at is None:
            if len(in_progress) < max_in_progress and is_in_progress(trip, now, max_age_s):
                colour = [*duration_colour(trip.predicted_duration), IN_PROGRESS_ALPHA]
                in_progress.append(_map_row(trip, colour, "in progress"))
        elif len(finished) < max_finished:
            alpha = fade_alpha((now - trip.finished_at).total_seconds(), fade_s)
            if alpha > 0:
                colour = [*error_colour(trip.relative_error), alpha]
                finished.append(_map_row(trip, colour, "finished"))
    return MapRows(in_progress, finished)


RECORD_COLUMNS = ("trip", "source", "pickup", "predicted", "actual", "error", "status")


def records_frame(
    trips: Sequence[LiveTrip], sources: Collection[Source], limit: int = RECORDS_LIMIT
) -> pd.DataFrame:
    """The latest `limit` trips of `sources`, most recently changed first; durations read as
    on the map's tooltip, and MISSING until the trip ends."""
    rows: list[tuple[str, Source, datetime, str, str, str, str]] = []
    for trip in reversed(trips):
        if len(rows) >= limit:
            break
        if trip.source not in sources:
            continue
        rows.append(
            (
                trip.trip_id,
                trip.source,
                trip.pickup_datetime,
                format_duration(trip.predicted_duration),
                _actual_text(trip),
                format_error(trip),
                "finished" if trip.finished else "in progress",
            )
        )
    return pd.DataFrame.from_records(rows, columns=list(RECORD_COLUMNS))


def quality_frames(windows: Sequence[ModelMetrics]) -> dict[str, pd.DataFrame]:
    """Per metric, a frame indexed by window end with one column per source (for a line chart):
    the champions' figures over all their trips. Windows without matched trips have no figures
    and are left out."""
    scored = [m for m in all_trips_windows(windows) if m.count > 0]
    frames = {}
    for metric in QUALITY_CHARTS:
        columns: dict[str, dict[datetime | None, float]] = {}
        for m in scored:
            columns.setdefault(m.source, {})[m.window_end] = getattr(m, metric)
        frame = pd.DataFrame({source: columns[source] for source in sorted(columns)})
        frames[metric] = frame.sort_index().rename_axis("window end")
    return frames


RATE_LABELS: Mapping[str, str] = {
    NEW_TRIPS: "trips in",
    ML_PREDICTIONS: "predictions out",
    FINISHED_TRIPS: "trip ends",
}
RATE_SMOOTH_S = 5


def rates_frame(snapshot: Snapshot, smooth_s: int = RATE_SMOOTH_S) -> pd.DataFrame:
    """Records per second per topic, each second averaged over the `smooth_s` seconds up to it
    (producers write in batches, so single seconds jump), for a line chart."""
    columns = {
        label: [count for _, count in snapshot.rate_series.get(topic, ())]
        for topic, label in RATE_LABELS.items()
    }
    # Every series covers the same seconds.
    seconds = [second for second, _ in next(iter(snapshot.rate_series.values()), ())]
    zone = snapshot.taken_at.tzinfo
    index = pd.Index([datetime.fromtimestamp(s, zone) for s in seconds], name="time")
    frame = pd.DataFrame(columns, index=index, dtype=float)
    return frame.rolling(smooth_s).mean().iloc[smooth_s - 1 :]


def in_progress_count(trips: Sequence[LiveTrip], now: datetime) -> int:
    return sum(1 for trip in trips if is_in_progress(trip, now))


def lag_frame(groups: Sequence[GroupLag]) -> pd.DataFrame:
    rows = [
        (
            g.group,
            g.lag,
            f"{g.committed}/{g.partitions}",
            g.error or ("running" if g.started else "no commits yet"),
        )
        for g in groups
    ]
    return pd.DataFrame.from_records(
        rows, columns=["consumer group", "lag (records)", "partitions committed", "state"]
    )


def dead_letters_frame(snapshot: Snapshot) -> pd.DataFrame:
    rows = [
        (letter.failed_at, letter.service, letter.source_topic, letter.reason)
        for letter in snapshot.dead_letters
    ]
    return pd.DataFrame.from_records(rows, columns=["failed at", "service", "topic", "reason"])


# The figures of a model's quality, as a person reads them: label, ModelMetrics field, format.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("RMSLE", "rmsle", ".3f"),
    ("MAE (s)", "mae", ".0f"),
    ("median APE", "median_ape", ".1%"),
    ("within ±30%", "within_30", ".1%"),
)
SOURCE_ORDER: tuple[Source, ...] = ("train", "test")


def _figures(m: ModelMetrics | None) -> list[str]:
    return [
        MISSING if m is None else format_figure(getattr(m, field), spec)
        for _, field, spec in FIGURES
    ]


def cumulative_rows(cumulative: Mapping[Source, ModelMetrics]) -> pd.DataFrame:
    """The cumulative figures, one row per source, rounded to what a person reads (MISSING
    before the first matched trip)."""
    rows = [
        (source, m.count, *_figures(m), m.unmatched, m.model_version)
        for source, m in sorted(cumulative.items())
    ]
    return pd.DataFrame.from_records(
        rows,
        columns=["source", "matched", *(label for label, _, _ in FIGURES), "unmatched", "model"],
    )


def champion_cumulative(snapshot: Snapshot) -> dict[Source, ModelMetrics]:
    """The current champion's cumulative figures over all its trips, per source."""
    return champion_figures(snapshot.cumulative, snapshot.model_version)


def roles_caption(snapshot: Snapshot) -> str:
    """Which models are in which role, and where that comes from."""
    if snapshot.roles is None:
        return f"Model version {snapshot.model_version or MISSING} (no deployment decision yet)"
    challenger = snapshot.roles.challenger or "none"
    return f"Champion {snapshot.roles.champion or MISSING} · challenger {challenger}"


def comparisons(snapshot: Snapshot) -> list[Comparison]:
    """The champion beside the challenger, per source that has any figures (train first)."""
    scored = {source for source, *_ in snapshot.cumulative}
    return [
        compare(snapshot.cumulative, snapshot.roles, source)
        for source in SOURCE_ORDER
        if source in scored
    ]


def _trips_text(comparison: Comparison) -> str:
    """Which trips a figure is on: the challenger's, the same for both roles."""
    return "all trips" if comparison.challenger is None else "shadowed trips"


def _standing_column(comparison: Comparison, standing: Standing) -> list[str]:
    m = standing.figures
    return [
        standing.version or MISSING,
        standing.role,
        _trips_text(comparison),
        MISSING if m is None else f"{m.count:,}",
        *_figures(m),
    ]


COMPARISON_ROWS = ("version", "role", "scored on", "matched", *(label for label, _, _ in FIGURES))


def comparison_frame(found: Sequence[Comparison]) -> pd.DataFrame:
    """The models side by side: a row per figure, a column per source and role. With a
    challenger, both roles' figures are on the same trips (the ones it shadowed)."""
    columns = {"figure": list(COMPARISON_ROWS)}
    for comparison in found:
        for standing in comparison.standings():
            columns[f"{comparison.source} · {standing.role}"] = _standing_column(
                comparison, standing
            )
    return pd.DataFrame(columns)


def head_to_head_summary(comparison: Comparison) -> str | None:
    """One sentence on who leads on the same trips; None without a challenger or figures."""
    challenger = comparison.challenger
    if challenger is None:
        return None
    ours, theirs = challenger.figures, comparison.champion.figures
    if ours is None or theirs is None or ours.rmsle is None or theirs.rmsle is None:
        return f"{comparison.source}: no trip scored for both models yet"
    if ours.rmsle < theirs.rmsle:
        verdict = "the challenger leads"
    elif ours.rmsle > theirs.rmsle:
        verdict = "the champion leads"
    else:
        verdict = "even"
    return (
        f"{comparison.source}: RMSLE {ours.rmsle:.3f} (challenger {challenger.version}) vs "
        f"{theirs.rmsle:.3f} (champion {comparison.champion.version}) on the same "
        f"{min(ours.count, theirs.count):,} trips: {verdict}"
    )


def _utc_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


HISTORY_COLUMNS = ("when (UTC)", "action", "version", "champion", "challenger", "who", "why")


def history_frame(decisions: Sequence[DeploymentDecision]) -> pd.DataFrame:
    """The promotion history in the order given (the snapshot's: newest first), with the
    roles each decision left."""
    rows = [
        (
            _utc_time(d.decided_at),
            d.action,
            d.version,
            d.champion or MISSING,
            d.challenger or MISSING,
            d.actor,
            d.reason,
        )
        for d in decisions
    ]
    return pd.DataFrame.from_records(rows, columns=list(HISTORY_COLUMNS))


def format_amount(value: float | None) -> str:
    """A measured figure as a person reads it: whole or large numbers with thousands
    separators, others to four significant digits (MISSING for none)."""
    if value is None:
        return MISSING
    if value.is_integer() or abs(value) >= 1_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def evidence_text(evidence: Mapping[str, float]) -> str:
    """An event's named figures, by name (JSON objects keep no order)."""
    if not evidence:
        return MISSING
    return " · ".join(f"{name} = {format_amount(evidence[name])}" for name in sorted(evidence))


def measurement_text(event: ModelEvent) -> str:
    """What a detector measured against what: MISSING for an event that is no measurement."""
    if event.detector is None and event.statistic is None:
        return MISSING
    return (
        f"{event.detector or MISSING} on {event.statistic or MISSING}: "
        f"{format_amount(event.value)} against the threshold {format_amount(event.threshold)}"
    )


def trips_text(event: ModelEvent) -> str:
    """The window of trips an event was measured on: how many, the first and the last."""
    if not event.trips:
        return MISSING
    if event.first_trip_id is None or event.last_trip_id is None:
        return f"{event.trips:,} trips"
    return f"{event.trips:,} trips ({event.first_trip_id} to {event.last_trip_id})"


DRIFT_LABELS: Mapping[ModelEventKind, str] = {
    "concept-drift": "Concept drift",
    "data-drift": "Data drift",
}
# Every ASCII punctuation character may be backslash-escaped in Markdown: text read from Kafka
# is shown as written, never as links, emphasis, HTML or formulas.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def markdown_escaped(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def drift_text(finding: DriftFinding) -> str:
    """One drift on the banner (Markdown): its kind and source, the measurement, the trips, when,
    the detail sentence and the evidence."""
    event = finding.latest
    facts = [
        f"{measurement_text(event)}, over {trips_text(event)}, at {_utc_time(event.occurred_at)}"
        " UTC.",
        event.detail,
    ]
    if event.evidence:
        facts.append(f"Evidence: {evidence_text(event.evidence)}")
    if finding.detections > 1:
        facts.append(f"Detected {finding.detections} times on this model; the latest is shown.")
    kind = DRIFT_LABELS[event.kind]
    source = f"the {event.source} trips" if event.source else "its trips"
    return "  \n".join([f"**{kind} on {source}**", *map(markdown_escaped, facts)])


@dataclass(frozen=True)
class DriftBanner:
    drifted: bool
    text: str  # Markdown


def drift_banner(snapshot: Snapshot) -> DriftBanner | None:
    """The drift found on the serving champion, newest first, or a calm line saying there is
    none; None while no model serves. Drift on earlier models is history, not shown here."""
    champion = snapshot.model_version
    if champion is None:
        return None
    name = markdown_escaped(champion)
    if not snapshot.champion_drift:
        return DriftBanner(False, f"No drift detected on the champion {name}.")
    findings = "\n\n".join(map(drift_text, snapshot.champion_drift))
    return DriftBanner(True, f"**The champion {name} has drifted.**\n\n{findings}")


MODEL_EVENT_COLUMNS = (
    "when (UTC)",
    "event",
    "version",
    "source",
    "measured",
    "trips",
    "detail",
    "evidence",
)


def model_events_frame(events: Sequence[ModelEvent]) -> pd.DataFrame:
    """The model events in the order given (the snapshot's: newest first), with their
    evidence."""
    rows = [
        (
            _utc_time(e.occurred_at),
            e.kind,
            e.model_version,
            e.source or MISSING,
            measurement_text(e),
            trips_text(e),
            e.detail,
            evidence_text(e.evidence),
        )
        for e in events
    ]
    return pd.DataFrame.from_records(rows, columns=list(MODEL_EVENT_COLUMNS))
