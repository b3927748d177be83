"""The chaos checker: what a run left on the topics, judged. Pure: no I/O.

The runner reads every topic with read_committed once the services have stopped and hands the
records over as plain values (trip id, Kafka timestamp and stated duration, decoded metrics);
this module counts them against the trips replayed, times them against the fault, recomputes
each source's RMSLE and MAE from the predictions and trip ends to hold the published cumulative
figures to, and lists every problem.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from taxi_events import ModelMetrics, Source
from taxi_stream import END_DELAY_RANGE_S

# A prediction this much later than its trip's start was held up by the fault. Normal
# end-to-end latency here is well under a second (two transactions and a 0.1 s batch wait).
SLOW_MS = 2_000
# A trip end this much later than its start was held up (ends are due 2-5 s after the start).
LATE_END_MS = int(END_DELAY_RANGE_S[1] * 1000) + SLOW_MS
SOURCES: tuple[Source, ...] = ("train", "test")
# How far a published cumulative RMSLE or MAE may be from the recomputed one, relative or
# absolute: the aggregator sums window by window, the checker all at once.
METRIC_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Stamped:
    """One record of a per-trip topic: its key (the trip id), Kafka timestamp (epoch ms) and
    the duration it states in seconds: predicted (ml_predictions) or actual (finished_trips);
    None for a trip start, or a record that did not decode."""

    key: str
    at_ms: int
    duration: float | None = None


@dataclass(frozen=True)
class MetricsRecord:
    at_ms: int
    metrics: ModelMetrics


@dataclass(frozen=True)
class Observed:
    """Everything the checker looks at: the trips replayed and what the topics hold."""

    trips: Mapping[str, Source]  # every trip replayed, by id
    starts: Sequence[Stamped]  # new_trips
    ends: Sequence[Stamped]  # finished_trips
    predictions: Sequence[Stamped]  # ml_predictions
    metrics: Sequence[MetricsRecord]  # model_metrics, in offset order per source
    dead_letters: Sequence[str]  # the reason of each dead letter


@dataclass(frozen=True)
class Timeline:
    """Epoch ms: when the services were started (the origin of the report's times), when the
    fault began and when it ended (the broker serving again, the restarted process spawned)."""

    origin_ms: int
    fault_started_ms: int
    fault_ended_ms: int

    def relative_s(self, at_ms: int) -> float:
        return round((at_ms - self.origin_ms) / 1000, 2)


@dataclass(frozen=True)
class Bounds:
    """Acceptance bounds beyond "nothing lost, nothing duplicated"; None: not bounded."""

    max_gap_s: float | None = None
    max_recovery_s: float | None = None


@dataclass(frozen=True)
class Delivery:
    """How the records of one per-trip topic compare with the trips replayed."""

    unique: int  # replayed trips with at least one record
    duplicated: int  # records beyond the first of their trip
    missing: int  # replayed trips without a record
    unexpected: int  # trips with records that were never replayed

    @property
    def exact(self) -> bool:
        return self.duplicated == self.missing == self.unexpected == 0


def delivery(expected: Collection[str], keys: Iterable[str]) -> Delivery:
    counts = collections.Counter(keys)
    unique = sum(1 for key in counts if key in expected)
    return Delivery(
        unique=unique,
        duplicated=sum(counts.values()) - len(counts),
        missing=len(expected) - unique,
        unexpected=len(counts) - unique,
    )


@dataclass(frozen=True)
class Gap:
    seconds: float
    after_ms: int | None  # the record the gap follows


def longest_gap(times_ms: Iterable[int]) -> Gap:
    """The longest time between consecutive records (in time order); 0 with fewer than two."""
    ordered = sorted(times_ms)
    if len(ordered) < 2:
        return Gap(0.0, None)
    before, after = max(itertools.pairwise(ordered), key=lambda pair: pair[1] - pair[0])
    return Gap((after - before) / 1000, before)


def first_times(records: Iterable[Stamped]) -> dict[str, int]:
    """Each key's earliest timestamp."""
    first: dict[str, int] = {}
    for record in records:
        first[record.key] = min(record.at_ms, first.get(record.key, record.at_ms))
    return first


def caught_up_ms(observed: Observed, timeline: Timeline) -> int | None:
    """When the pipeline had caught up after the fault: the latest of the predictions of
    trips started before the fault ended, and of every prediction or trip end the fault
    held up (one written after the fault began, but SLOW_MS later than it should have been).
    Never before the fault's end; None if a started trip never got its prediction or end."""
    started = first_times(observed.starts)
    predicted, ended = first_times(observed.predictions), first_times(observed.ends)
    if not started.keys() <= predicted.keys() & ended.keys():
        return None
    caught_up = timeline.fault_ended_ms
    for key, start in started.items():
        held_up = predicted[key] >= timeline.fault_started_ms and predicted[key] - start > SLOW_MS
        if start <= timeline.fault_ended_ms or held_up:
            caught_up = max(caught_up, predicted[key])
        if ended[key] >= timeline.fault_started_ms and ended[key] - start > LATE_END_MS:
            caught_up = max(caught_up, ended[key])
    return caught_up


def metrics_caught_up_ms(observed: Observed, timeline: Timeline) -> int | None:
    """When the published cumulative metrics first covered, for every source, each trip whose
    prediction and end had both been written by the fault's end (the aggregator matches on
    record timestamps); None if they never did. A window closes only after its end plus the
    grace period, so this lags by up to that much even without a fault."""
    predicted, ended = first_times(observed.predictions), first_times(observed.ends)
    due = collections.Counter(
        observed.trips[key]
        for key, at in predicted.items()
        if key in observed.trips and key in ended and max(at, ended[key]) <= timeline.fault_ended_ms
    )
    latest = timeline.fault_ended_ms
    for source in SOURCES:
        if not due[source]:
            continue
        covering = [
            r.at_ms
            for r in observed.metrics
            if r.metrics.source == source
            and r.metrics.scope == "cumulative"
            and r.metrics.count + r.metrics.unmatched >= due[source]
        ]
        if not covering:
            return None
        latest = max(latest, min(covering))
    return latest


@dataclass(frozen=True)
class SourceMetrics:
    """The model_metrics of one source against its trips."""

    trips: int
    count: int  # matched trips in the last cumulative record (0 with none)
    unmatched: int
    windows: int
    repeated_windows: int  # window records beyond the first for the same window
    windows_add_up: bool  # the windows' counts and unmatched sum to the last cumulative's
    never_decreasing: bool  # cumulative count and unmatched never went back

    @property
    def consistent(self) -> bool:
        return (
            self.count + self.unmatched == self.trips
            and self.repeated_windows == 0
            and self.windows_add_up
            and self.never_decreasing
        )


def source_metrics(trips: int, records: Sequence[ModelMetrics]) -> SourceMetrics:
    """`records`: one source's metrics in the order they were published."""
    cumulative = [m for m in records if m.scope == "cumulative"]
    windows = [m for m in records if m.scope == "window"]
    last = cumulative[-1] if cumulative else None
    count, unmatched = (last.count, last.unmatched) if last is not None else (0, 0)
    pairs = list(itertools.pairwise(cumulative))
    return SourceMetrics(
        trips=trips,
        count=count,
        unmatched=unmatched,
        windows=len(windows),
        repeated_windows=len(windows) - len({(m.window_start, m.window_end) for m in windows}),
        windows_add_up=sum(m.count for m in windows) == count
        and sum(m.unmatched for m in windows) == unmatched,
        never_decreasing=all(b.count >= a.count and b.unmatched >= a.unmatched for a, b in pairs),
    )


@dataclass(frozen=True)
class Quality:
    """RMSLE and MAE over `count` trips; None with none."""

    count: int
    rmsle: float | None
    mae: float | None


def first_durations(records: Iterable[Stamped]) -> dict[str, float | None]:
    """Each key's duration, from its first record."""
    durations: dict[str, float | None] = {}
    for record in records:
        durations.setdefault(record.key, record.duration)
    return durations


def recomputed_quality(
    keys: Iterable[str], predictions: Iterable[Stamped], ends: Iterable[Stamped]
) -> Quality:
    """The quality of the trips `keys` that have both a prediction and an end, recomputed from
    the durations those records state, as taxi_model.quality_metrics defines it (the
    aggregator sums the same per window): RMSLE over log1p of the durations (no clipping:
    events never carry a negative one; the model clips its own predictions at 0 before they are
    published), MAE in seconds. Computed afresh here, so a bug in the aggregator shows."""
    predicted, actual = first_durations(predictions), first_durations(ends)
    pairs = [
        (p, y)
        for key in sorted(set(keys))
        if (p := predicted.get(key)) is not None and (y := actual.get(key)) is not None
    ]
    if not pairs:
        return Quality(0, None, None)
    p, y = np.array(pairs, dtype=np.float64).T
    return Quality(
        count=len(pairs),
        rmsle=float(np.sqrt(np.mean(np.square(np.log1p(p) - np.log1p(y))))),
        mae=float(np.mean(np.abs(p - y))),
    )


def same_quality(published: ModelMetrics | None, recomputed: Quality) -> bool:
    """Whether a cumulative record (None: there is none) holds the recomputed figures: the same
    count of matched trips, RMSLE and MAE within METRIC_TOLERANCE."""
    if published is None:
        return recomputed.count == 0
    return (
        published.count == recomputed.count
        and _close(published.rmsle, recomputed.rmsle)
        and _close(published.mae, recomputed.mae)
    )


def _close(published: float | None, recomputed: float | None) -> bool:
    if published is None or recomputed is None:
        return published is None and recomputed is None
    return math.isclose(published, recomputed, rel_tol=METRIC_TOLERANCE, abs_tol=METRIC_TOLERANCE)


@dataclass
class Checked:
    """The report's figures (JSON-ready) and what is wrong: `problems` with the records
    themselves (lost, duplicated, inconsistent), `broken_bounds` with the timings."""

    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    broken_bounds: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and not self.broken_bounds


def check(observed: Observed, timeline: Timeline, bounds: Bounds) -> Checked:
    result = Checked()
    expected = observed.trips.keys()
    for name, records in (
        ("started", observed.starts),
        ("finished", observed.ends),
        ("predictions", observed.predictions),
    ):
        counted = delivery(expected, (r.key for r in records))
        result.figures[name] = asdict(counted)
        if not counted.exact:
            result.problems.append(
                f"{name}: {counted.missing} missing, {counted.duplicated} duplicated, "
                f"{counted.unexpected} unexpected"
            )

    trips_by_source = collections.Counter(observed.trips.values())
    metrics: dict[str, Any] = {}
    for source in SOURCES:
        if not trips_by_source[source]:
            continue
        reported = [r.metrics for r in observed.metrics if r.metrics.source == source]
        figures = source_metrics(trips_by_source[source], reported)
        metrics[source] = {**asdict(figures), "consistent": figures.consistent}
        if not figures.consistent:
            result.problems.append(f"{source} metrics inconsistent with the trips: {figures}")
        last = next((m for m in reversed(reported) if m.scope == "cumulative"), None)
        recomputed = recomputed_quality(
            (key for key, of in observed.trips.items() if of == source),
            observed.predictions,
            observed.ends,
        )
        matches = same_quality(last, recomputed)
        metrics[source]["recomputed"] = asdict(recomputed)
        metrics[source]["values_match"] = matches
        if not matches:
            published = (
                f"count {last.count}, RMSLE {last.rmsle}, MAE {last.mae}"
                if last is not None
                else "no cumulative record"
            )
            result.problems.append(
                f"{source} cumulative metrics ({published}) differ from those recomputed from "
                f"its predictions and trip ends (count {recomputed.count}, "
                f"RMSLE {recomputed.rmsle}, MAE {recomputed.mae})"
            )
    result.figures["metrics"] = metrics

    reasons = collections.Counter(observed.dead_letters)
    result.figures["dead_letters"] = {"count": sum(reasons.values()), "reasons": dict(reasons)}
    if reasons:
        result.problems.append(f"{sum(reasons.values())} dead letter(s): {dict(reasons)}")

    gap = longest_gap(_prediction_times(observed))
    result.figures["max_gap_s"] = round(gap.seconds, 2)
    result.figures["max_gap_after_s"] = (
        timeline.relative_s(gap.after_ms) if gap.after_ms is not None else None
    )
    if bounds.max_gap_s is not None and gap.seconds > bounds.max_gap_s:
        result.broken_bounds.append(
            f"longest gap without predictions {gap.seconds:.1f} s > {bounds.max_gap_s:g} s"
        )

    for name, at_ms in (
        ("recovery_s", caught_up_ms(observed, timeline)),
        ("metrics_recovery_s", metrics_caught_up_ms(observed, timeline)),
    ):
        seconds = None if at_ms is None else round((at_ms - timeline.fault_ended_ms) / 1000, 2)
        result.figures[name] = seconds
        limit = bounds.max_recovery_s
        what = "predictions and trip ends" if name == "recovery_s" else "metrics"
        if limit is not None and seconds is None:
            result.broken_bounds.append(f"{what} never caught up after the fault")
        elif limit is not None and seconds is not None and seconds > limit:
            result.broken_bounds.append(
                f"{what} caught up {seconds:.1f} s after the fault ended > {limit:g} s"
            )
    return result


def _prediction_times(observed: Observed) -> list[int]:
    """The predictions' times within the run: from the first prediction until the last, or
    until the last trip start if predictions stopped before the trips did."""
    times = [r.at_ms for r in observed.predictions]
    last_start = max((r.at_ms for r in observed.starts), default=None)
    if last_start is not None and times and last_start > max(times):
        times.append(last_start)
    return times
