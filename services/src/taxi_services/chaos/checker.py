"""The chaos checker: what a run left on the topics, judged. Pure: no I/O.

The runner reads every topic with read_committed once the services have stopped and hands the
records over as plain values (trip id, Kafka timestamp and stated duration, for a prediction
its model version and the challenger it names, decoded metrics); this module counts them
against the trips replayed, times them against the fault, recomputes the RMSLE and MAE from the
predictions and trip ends to hold the published cumulative figures to, and lists every problem.

The metrics are checked per source, role, model version and challenger, as the aggregator
publishes them: the champion's over all its trips (challenger None; summed over its versions, a
source's must account for each of its trips), and, while a challenger shadowed the champion,
both roles head to head on the trips it predicted (`shadow_predictions`, each of them exactly
once: every trip whose champion prediction names a challenger, and no other).

Aborted reads (a Jepsen anomaly): with --deliberate-aborts, the predictor writes poison records
(keys starting with POISON_PREFIX) to ml_predictions only in transactions it aborts. The runner
also reads ml_predictions read_uncommitted, where they are, and the checker counts them there
and among the committed predictions, where none may be.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from taxi_events import POISON_PREFIX, ModelMetrics, Role, Source
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
    the duration it states in seconds: predicted (ml_predictions, shadow_predictions) or actual
    (finished_trips); None for a trip start, or a record that did not decode. A prediction
    also states its model's version and, the champion's, the challenger that shadowed it
    (None: not known, or none)."""

    key: str
    at_ms: int
    duration: float | None = None
    model_version: str | None = None
    challenger_version: str | None = None


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
    shadow_predictions: Sequence[Stamped] = ()  # a challenger's, of the same trips
    # The keys starting with POISON_PREFIX in ml_predictions read read_uncommitted: what the
    # predictor's deliberate aborts left in the log.
    poison_in_log: Sequence[str] = ()


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
        # The champion's figures over all trips, summed over its versions as they are published.
        so_far: dict[str, int] = {}
        covering = []
        for r in observed.metrics:
            m = r.metrics
            if m.source == source and m.scope == "cumulative" and _all_trips(m):
                so_far[m.model_version] = m.count + m.unmatched
                if sum(so_far.values()) >= due[source]:
                    covering.append(r.at_ms)
        if not covering:
            return None
        latest = max(latest, min(covering))
    return latest


MetricsKey = tuple[Source, Role, str, str | None]  # source, role, model version, challenger


def metrics_key(m: ModelMetrics) -> MetricsKey:
    return (m.source, m.role, m.model_version, m.challenger_version)


def _all_trips(m: ModelMetrics) -> bool:
    """Whether a record holds the champion's figures over all its trips."""
    return m.role == "champion" and m.challenger_version is None


@dataclass(frozen=True)
class SourceMetrics:
    """The model_metrics of one set of figures (one source's, of one role, summed over model
    versions) against its trips."""

    trips: int
    count: int  # matched trips in the last cumulative record of each key (0 with none)
    unmatched: int
    windows: int
    repeated_windows: int  # window records beyond the first for the same key and window
    windows_add_up: bool  # each key's windows' counts and unmatched sum to its last cumulative's
    never_decreasing: bool  # no key's cumulative count or unmatched ever went back

    @property
    def consistent(self) -> bool:
        return (
            self.count + self.unmatched == self.trips
            and self.repeated_windows == 0
            and self.windows_add_up
            and self.never_decreasing
        )


def source_metrics(trips: int, records: Sequence[ModelMetrics]) -> SourceMetrics:
    """`records`: one source's metrics of one role and challenger, in the order they were
    published; each model version's are checked on their own and their figures summed."""
    by_key: dict[MetricsKey, list[ModelMetrics]] = {}
    for m in records:
        by_key.setdefault(metrics_key(m), []).append(m)
    count = unmatched = windows = repeated = 0
    add_up = never_decreasing = True
    for mine in by_key.values():
        cumulative = [m for m in mine if m.scope == "cumulative"]
        windowed = [m for m in mine if m.scope == "window"]
        last = cumulative[-1] if cumulative else None
        last_count, last_unmatched = (last.count, last.unmatched) if last is not None else (0, 0)
        count += last_count
        unmatched += last_unmatched
        windows += len(windowed)
        repeated += len(windowed) - len({(m.window_start, m.window_end) for m in windowed})
        add_up = add_up and (
            sum(m.count for m in windowed) == last_count
            and sum(m.unmatched for m in windowed) == last_unmatched
        )
        never_decreasing = never_decreasing and all(
            b.count >= a.count and b.unmatched >= a.unmatched
            for a, b in itertools.pairwise(cumulative)
        )
    return SourceMetrics(
        trips=trips,
        count=count,
        unmatched=unmatched,
        windows=windows,
        repeated_windows=repeated,
        windows_add_up=add_up,
        never_decreasing=never_decreasing,
    )


@dataclass(frozen=True)
class Quality:
    """RMSLE and MAE over `count` trips; None with none."""

    count: int
    rmsle: float | None
    mae: float | None


def first_records(records: Iterable[Stamped]) -> dict[str, Stamped]:
    """Each key's first record."""
    first: dict[str, Stamped] = {}
    for record in records:
        first.setdefault(record.key, record)
    return first


def first_durations(records: Iterable[Stamped]) -> dict[str, float | None]:
    """Each key's duration, from its first record."""
    return {key: record.duration for key, record in first_records(records).items()}


def recomputed_quality(
    keys: Iterable[str], predictions: Iterable[Stamped], ends: Iterable[Stamped]
) -> Quality:
    """The quality of the trips `keys` that have both a prediction and an end, recomputed from
    the durations those records state (the first of each trip's), as
    taxi_model.quality_metrics defines it (the aggregator sums the same per window): RMSLE over
    log1p of the durations (no clipping: events never carry a negative one; the model clips
    its own predictions at 0 before they are published), MAE in seconds. Computed afresh
    here, so a bug in the aggregator shows."""
    return _quality(keys, first_durations(predictions), first_durations(ends))


def _quality(
    keys: Iterable[str],
    predicted: Mapping[str, float | None],
    actual: Mapping[str, float | None],
) -> Quality:
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


def merged_quality(records: Sequence[ModelMetrics]) -> Quality | None:
    """The figures of several cumulative records (of different model versions) together: the
    RMSLE and MAE are means over trips, so they merge weighted by count. None with none."""
    if not records:
        return None
    count = sum(m.count for m in records)
    scored = [m for m in records if m.count and m.rmsle is not None and m.mae is not None]
    if not count or not scored:
        return Quality(count, None, None)
    return Quality(
        count=count,
        rmsle=math.sqrt(sum(m.count * (m.rmsle or 0.0) ** 2 for m in scored) / count),
        mae=sum(m.count * (m.mae or 0.0) for m in scored) / count,
    )


def same_quality(published: ModelMetrics | Quality | None, recomputed: Quality) -> bool:
    """Whether a cumulative record (or the merge of several; None: there is none) holds the
    recomputed figures: the same count of matched trips, RMSLE and MAE within
    METRIC_TOLERANCE."""
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

    _check_shadow(observed, result)
    _check_aborted_reads(observed, result)
    result.figures["metrics"] = _checked_metrics(observed, result)

    reasons = collections.Counter(observed.dead_letters)
    result.figures["dead_letters"] = {"count": sum(reasons.values()), "reasons": dict(reasons)}
    if reasons:
        result.problems.append(f"{sum(reasons.values())} dead letter(s): {dict(reasons)}")

    # Per replay: one producer stalled while the other goes on must not hide behind its trips.
    gaps = {source: longest_gap(_prediction_times(observed, source)) for source in SOURCES}
    source, gap = max(gaps.items(), key=lambda item: item[1].seconds)
    result.figures["max_gap_s"] = round(gap.seconds, 2)
    result.figures["max_gap_source"] = source
    result.figures["max_gap_after_s"] = (
        timeline.relative_s(gap.after_ms) if gap.after_ms is not None else None
    )
    if bounds.max_gap_s is not None and gap.seconds > bounds.max_gap_s:
        result.broken_bounds.append(
            f"longest gap without predictions of {source} trips {gap.seconds:.1f} s "
            f"> {bounds.max_gap_s:g} s"
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


def _check_shadow(observed: Observed, result: Checked) -> None:
    """shadow_predictions, when there are any or a champion prediction names a challenger."""
    champion_first = first_records(observed.predictions)
    named = {key for key, r in champion_first.items() if r.challenger_version is not None}
    if named or observed.shadow_predictions:
        # Exactly the trips whose champion prediction names a challenger have its prediction.
        counted = delivery(named, (r.key for r in observed.shadow_predictions))
        result.figures["shadow_predictions"] = asdict(counted)
        if not counted.exact:
            result.problems.append(
                f"shadow_predictions: {counted.missing} missing, {counted.duplicated} "
                f"duplicated, {counted.unexpected} unexpected"
            )


def _check_aborted_reads(observed: Observed, result: Checked) -> None:
    """No poison record, written only in aborted transactions, may be read read_committed."""
    visible = sum(1 for r in observed.predictions if r.key.startswith(POISON_PREFIX))
    result.figures["aborted_reads"] = {
        "poison_in_log": len(observed.poison_in_log),
        "poison_visible": visible,
    }
    if visible:
        result.problems.append(
            f"aborted reads: {visible} record(s) of aborted transactions read read_committed"
        )


def _checked_metrics(observed: Observed, result: Checked) -> dict[str, Any]:
    """Each source's figures: the champion's over all trips, and any head-to-head ones."""
    champion_first = first_records(observed.predictions)
    shadow_first = first_records(observed.shadow_predictions)
    ends = first_durations(observed.ends)
    roles = {"champion": champion_first, "challenger": shadow_first}
    stray = [m for r in observed.metrics if (m := r.metrics).role == "challenger"]
    if any(m.challenger_version is None for m in stray):
        result.problems.append("model_metrics of a challenger that name no challenger_version")

    metrics: dict[str, Any] = {}
    for source in SOURCES:
        trips = {key for key, of in observed.trips.items() if of == source}
        if not trips:
            continue
        reported = [r.metrics for r in observed.metrics if r.metrics.source == source]
        # The champion on every trip of the source.
        metrics[source] = _judged(
            result,
            source,
            trips=len(trips),
            records=[m for m in reported if _all_trips(m)],
            scored=trips,
            predictions=champion_first,
            ends=ends,
        )
        # Each challenger head to head with it, both roles on the same trips: those it
        # predicted (or that the champion's prediction says it did).
        of_trip = {key: _challenger_of(key, champion_first, shadow_first) for key in trips}
        versions = {m.challenger_version for m in reported} | set(of_trip.values())
        head_to_head: dict[str, Any] = {}
        for version in sorted(v for v in versions if v is not None):
            shadowed = {key for key, v in of_trip.items() if v == version}
            both = {
                key
                for key in shadowed
                if all(key in first and first[key].duration is not None for first in roles.values())
            }
            figures: dict[str, Any] = {"trips": len(shadowed)}
            for role, first in roles.items():
                figures[role] = _judged(
                    result,
                    f"{source} {role} head to head with {version}",
                    trips=len(shadowed),
                    records=[
                        m for m in reported if m.challenger_version == version and m.role == role
                    ],
                    scored=both,
                    predictions=first,
                    ends=ends,
                )
            figures["same_trips"] = (
                figures["champion"]["count"] == figures["challenger"]["count"]
                and figures["champion"]["unmatched"] == figures["challenger"]["unmatched"]
            )
            if not figures["same_trips"]:
                result.problems.append(
                    f"{source} head to head with {version}: the champion and the challenger "
                    "were scored on different numbers of trips"
                )
            head_to_head[version] = figures
        if head_to_head:
            metrics[source]["head_to_head"] = head_to_head
    return metrics


def _challenger_of(
    key: str, champion: Mapping[str, Stamped], shadow: Mapping[str, Stamped]
) -> str | None:
    """The challenger that shadowed a trip: the version of its shadow prediction, else the one
    its champion prediction names; None if neither says."""
    predicted = shadow.get(key)
    if predicted is not None and predicted.model_version is not None:
        return predicted.model_version
    named = champion.get(key)
    return named.challenger_version if named is not None else None


def _judged(
    result: Checked,
    what: str,
    *,
    trips: int,
    records: Sequence[ModelMetrics],
    scored: Collection[str],
    predictions: Mapping[str, Stamped],
    ends: Mapping[str, float | None],
) -> dict[str, Any]:
    """One set of figures' report (`records`: its metrics of every model version, over
    `trips` trips), its problems added to `result`: counts that do not add up, and cumulative
    figures other than those recomputed over the trips `scored` from their first `predictions`
    and `ends`. Per model version when every prediction says which, else all versions merged."""
    figures = source_metrics(trips, records)
    judged: dict[str, Any] = {**asdict(figures), "consistent": figures.consistent}
    if not figures.consistent:
        result.problems.append(f"{what} metrics inconsistent with the trips: {figures}")
    last = {metrics_key(m): m for m in records if m.scope == "cumulative"}
    durations = {key: predictions[key].duration for key in scored if key in predictions}
    recomputed = _quality(scored, durations, ends)
    versions = {key: predictions[key].model_version for key in durations}
    if all(v is not None for v in versions.values()):
        published = {key[2]: m for key, m in last.items()}
        matches = all(
            same_quality(
                published.get(version),
                _quality([k for k, v in versions.items() if v == version], durations, ends),
            )
            for version in set(published) | {v for v in versions.values() if v is not None}
        )
    else:
        matches = same_quality(merged_quality(list(last.values())), recomputed)
    judged["recomputed"] = asdict(recomputed)
    judged["values_match"] = matches
    if not matches:
        said = (
            ", ".join(
                f"{m.model_version}: count {m.count}, RMSLE {m.rmsle}, MAE {m.mae}"
                for m in last.values()
            )
            or "no cumulative record"
        )
        result.problems.append(
            f"{what} cumulative metrics ({said}) differ from those recomputed from "
            f"its predictions and trip ends (count {recomputed.count}, "
            f"RMSLE {recomputed.rmsle}, MAE {recomputed.mae})"
        )
    return judged


def _prediction_times(observed: Observed, source: Source) -> list[int]:
    """The times of the predictions of `source`'s trips: from the first prediction until the
    last, or until the replay's last trip start if predictions stopped before its trips did."""
    times = [r.at_ms for r in observed.predictions if observed.trips.get(r.key) == source]
    starts = (r.at_ms for r in observed.starts if observed.trips.get(r.key) == source)
    last_start = max(starts, default=None)
    if last_start is not None and times and last_start > max(times):
        times.append(last_start)
    return times
