"""The chaos checker's judgement, on hand-made topic contents: no Kafka, no processes."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import POISON_PREFIX, ModelMetrics, Source
from taxi_services.chaos.checker import (
    LATE_END_MS,
    METRIC_TOLERANCE,
    SLOW_MS,
    Bounds,
    MetricsRecord,
    Observed,
    Stamped,
    Timeline,
    caught_up_ms,
    check,
    delivery,
    longest_gap,
    metrics_caught_up_ms,
    source_metrics,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
STEP_MS = 100  # a trip starts every 100 ms
PREDICT_MS = 200  # and is predicted 200 ms later
END_MS = 3_000  # and ends 3 s later
NO_FAULT = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=10_000)

Pair = tuple[float, float]  # (actual, predicted) seconds


def actual_s(i: int) -> float:
    """Trip i's duration: each trip its own."""
    return 300.0 + 37.0 * i


def predicted_s(i: int) -> float:
    """Trip i's prediction: off by -30% to +30%, in steps."""
    return actual_s(i) * (0.7 + 0.05 * (i % 13))


def rmsle_and_mae(pairs: Sequence[Pair]) -> tuple[float, float]:
    """The definitions, written out: RMSLE over log(1 + seconds), mean absolute error."""
    squared = sum((math.log(1 + p) - math.log(1 + y)) ** 2 for y, p in pairs)
    return math.sqrt(squared / len(pairs)), sum(abs(p - y) for y, p in pairs) / len(pairs)


def metrics(
    source: Source,
    count: int,
    *,
    scope: str = "cumulative",
    window: int | None = None,
    unmatched: int = 0,
    pairs: Sequence[Pair] | None = None,
    **key: str | None,
) -> ModelMetrics:
    """A record over `count` trips; its RMSLE and MAE those of `pairs`, if given."""
    rmsle, mae = rmsle_and_mae(pairs) if pairs else (0.4, 300.0)
    start = EPOCH + timedelta(seconds=10 * window) if window is not None else None
    return ModelMetrics(
        source=source,
        scope=scope,
        window_start=start,
        window_end=start + timedelta(seconds=10) if start is not None else None,
        count=count,
        rmsle=rmsle if count else None,
        mae=mae if count else None,
        median_ape=0.2 if count else None,
        within_30=0.7 if count else None,
        unmatched=unmatched,
        **{"model_version": "v1", **key},
    )


def published(
    source: Source,
    window_counts: list[int],
    at_ms: int = 0,
    pairs: Sequence[Pair] | None = None,
    **key: str | None,
) -> list[MetricsRecord]:
    """A source's windows, each followed by its cumulative, as the aggregator publishes them;
    with `pairs` (the source's trips in order), their figures are those of its trips."""
    records, cumulative = [], 0
    for index, count in enumerate(window_counts):
        window = pairs[cumulative : cumulative + count] if pairs is not None else None
        cumulative += count
        so_far = pairs[:cumulative] if pairs is not None else None
        records += [
            MetricsRecord(
                at_ms + index,
                metrics(source, count, scope="window", window=index, pairs=window, **key),
            ),
            MetricsRecord(at_ms + index, metrics(source, cumulative, pairs=so_far, **key)),
        ]
    return records


def clean_run(trips: int = 40) -> Observed:
    """Every trip started, predicted and ended once, each with durations of its own; metrics
    that add up and hold those trips' figures (half train, half test, alternating)."""
    ids = [f"id{i:04d}" for i in range(trips)]
    sources: dict[str, Source] = {t: ("train" if i % 2 == 0 else "test") for i, t in enumerate(ids)}
    per_source = collections.Counter(sources.values())
    half = per_source["train"] // 2
    pairs = {
        source: [(actual_s(i), predicted_s(i)) for i, t in enumerate(ids) if sources[t] == source]
        for source in per_source
    }
    return Observed(
        trips=sources,
        starts=[Stamped(t, i * STEP_MS) for i, t in enumerate(ids)],
        ends=[Stamped(t, i * STEP_MS + END_MS, actual_s(i)) for i, t in enumerate(ids)],
        predictions=[
            Stamped(t, i * STEP_MS + PREDICT_MS, predicted_s(i)) for i, t in enumerate(ids)
        ],
        metrics=[
            *published("train", [half, per_source["train"] - half], pairs=pairs["train"]),
            *published("test", [per_source["test"]], pairs=pairs["test"]),
        ],
        dead_letters=[],
    )


def test_a_clean_run_passes():
    result = check(clean_run(), NO_FAULT, Bounds(max_gap_s=15, max_recovery_s=60))
    assert result.problems == []
    assert result.broken_bounds == []
    assert result.passed
    assert result.figures["predictions"] == {
        "unique": 40,
        "duplicated": 0,
        "missing": 0,
        "unexpected": 0,
    }
    assert result.figures["metrics"]["train"]["consistent"]
    for source in ("train", "test"):
        assert result.figures["metrics"][source]["values_match"]
        assert result.figures["metrics"][source]["recomputed"]["count"] == 20
    # Each replay starts a trip every other step.
    assert result.figures["max_gap_s"] == 2 * STEP_MS / 1000


def test_a_duplicated_prediction_fails_the_report():
    run = clean_run()
    twice = dataclasses.replace(run, predictions=[*run.predictions, run.predictions[7]])
    result = check(twice, NO_FAULT, Bounds())
    assert not result.passed
    assert result.figures["predictions"]["duplicated"] == 1
    assert any(p.startswith("predictions:") and "1 duplicated" in p for p in result.problems)


def test_a_missing_prediction_fails_the_report():
    run = clean_run()
    result = check(dataclasses.replace(run, predictions=run.predictions[1:]), NO_FAULT, Bounds())
    assert not result.passed
    assert result.figures["predictions"]["missing"] == 1
    assert any("1 missing" in p for p in result.problems)


def test_a_missing_trip_end_or_start_fails_the_report():
    run = clean_run()
    assert not check(dataclasses.replace(run, ends=run.ends[:-1]), NO_FAULT, Bounds()).passed
    assert not check(dataclasses.replace(run, starts=run.starts * 2), NO_FAULT, Bounds()).passed


def test_dead_letters_fail_the_report():
    run = dataclasses.replace(clean_run(), dead_letters=["undecodable TripStarted"] * 2)
    result = check(run, NO_FAULT, Bounds())
    assert result.figures["dead_letters"] == {
        "count": 2,
        "reasons": {"undecodable TripStarted": 2},
    }
    assert not result.passed


def poisoned(run: Observed, leaked: int) -> Observed:
    """`run` with the deliberate aborts of five marker trips in the log, `leaked` of them also
    among the predictions read read_committed (as a broken isolation would show them)."""
    markers = run.predictions[:5]
    poison = [f"{POISON_PREFIX}{r.key}" for r in markers]
    visible = [Stamped(f"{POISON_PREFIX}{r.key}", r.at_ms) for r in markers[:leaked]]
    return dataclasses.replace(run, predictions=[*run.predictions, *visible], poison_in_log=poison)


def test_poison_in_the_log_only_passes_and_is_counted():
    result = check(poisoned(clean_run(), 0), NO_FAULT, Bounds())
    assert result.passed
    assert result.figures["aborted_reads"] == {"poison_in_log": 5, "poison_visible": 0}


def test_a_run_without_deliberate_aborts_reads_none():
    result = check(clean_run(), NO_FAULT, Bounds())
    assert result.figures["aborted_reads"] == {"poison_in_log": 0, "poison_visible": 0}


@given(st.integers(1, 5))
def test_any_poison_read_committed_is_an_aborted_read(leaked):
    result = check(poisoned(clean_run(), leaked), NO_FAULT, Bounds())
    assert result.figures["aborted_reads"] == {"poison_in_log": 5, "poison_visible": leaked}
    assert any(p.startswith(f"aborted reads: {leaked} record(s)") for p in result.problems)


@st.composite
def expected_and_keys(draw: st.DrawFn) -> tuple[set[str], dict[str, int]]:
    """Expected trip ids, and how many records each id (expected or not) has."""
    expected = draw(st.sets(st.text("abc", min_size=1, max_size=4), max_size=20))
    extras = draw(st.sets(st.text("xyz", min_size=1, max_size=3), max_size=5))
    counts = {key: draw(st.integers(0, 4)) for key in sorted(expected | extras)}
    return expected, counts


@given(expected_and_keys(), st.randoms())
def test_delivery_counts_are_exact_for_any_multiset(case, rng):
    expected, counts = case
    keys = [key for key, n in counts.items() for _ in range(n)]
    rng.shuffle(keys)
    counted = delivery(expected, keys)
    assert counted.unique == sum(1 for k in expected if counts[k] > 0)
    assert counted.missing == sum(1 for k in expected if counts[k] == 0)
    assert counted.duplicated == sum(n - 1 for n in counts.values() if n > 1)
    assert counted.unexpected == sum(1 for k, n in counts.items() if k not in expected and n)
    assert counted.exact == all(counts[k] == (1 if k in expected else 0) for k in counts)


@given(st.lists(st.integers(0, 10_000_000), max_size=1))
def test_no_gap_without_two_records(times):
    assert longest_gap(times).seconds == 0
    assert longest_gap(times).after_ms is None


@given(st.lists(st.integers(0, 10_000_000), min_size=2, max_size=60), st.randoms())
def test_the_gap_is_the_longest_time_with_no_record_in_between(times, rng):
    shuffled = list(times)
    rng.shuffle(shuffled)
    gap = longest_gap(shuffled)
    gap_ms = round(gap.seconds * 1000)
    # Order does not matter; the gap follows a record and ends at the next one.
    assert gap == longest_gap(sorted(times))
    assert gap.after_ms in times
    assert gap.after_ms + gap_ms in times
    assert not any(gap.after_ms < t < gap.after_ms + gap_ms for t in times)
    # No longer stretch of time is free of records.
    for a in times:
        for b in times:
            if b - a > gap_ms:
                assert any(a < t < b for t in times)


@given(expected_and_keys())
def test_any_duplicate_or_missing_prediction_fails_the_check(case):
    expected, counts = case
    trips: dict[str, Source] = dict.fromkeys(sorted(expected), "train")
    pairs = [(600.0, 500.0)] * len(trips)
    observed = Observed(
        trips=trips,
        starts=[Stamped(k, 0) for k in trips],
        ends=[Stamped(k, 0, 600.0) for k in trips],
        predictions=[Stamped(k, 0, 500.0) for k, n in counts.items() for _ in range(n)],
        metrics=published("train", [len(trips)], pairs=pairs) if trips else [],
        dead_letters=[],
    )
    result = check(observed, Timeline(0, 0, 0), Bounds())
    exact = all(counts[k] == (1 if k in expected else 0) for k in counts)
    assert result.passed == exact


def test_metrics_must_add_up_to_the_trips():
    assert source_metrics(10, [r.metrics for r in published("train", [4, 6])]).consistent
    short = source_metrics(10, [r.metrics for r in published("train", [4, 5])])
    assert not short.consistent
    assert short.count == 9


def test_unmatched_trips_count_towards_the_total():
    records = [
        metrics("test", 7, scope="window", window=0, unmatched=3),
        metrics("test", 7, unmatched=3),
    ]
    figures = source_metrics(10, records)
    assert figures.consistent
    assert (figures.count, figures.unmatched) == (7, 3)


def test_a_window_published_twice_is_double_counting():
    records = [r.metrics for r in published("train", [4, 6])]
    again = [*records[:2], records[0], *records[2:]]  # window 0 repeated
    figures = source_metrics(10, again)
    assert figures.repeated_windows == 1
    assert not figures.consistent


def test_windows_must_add_up_to_the_cumulative_figures():
    records = [
        metrics("train", 4, scope="window", window=0),
        metrics("train", 10),  # says 10, the windows only 4
    ]
    figures = source_metrics(10, records)
    assert not figures.windows_add_up
    assert not figures.consistent


def test_cumulative_figures_must_never_go_back():
    records = [r.metrics for r in published("train", [4, 6])]
    figures = source_metrics(10, [*records, metrics("train", 9), metrics("train", 10)])
    assert not figures.never_decreasing
    assert not figures.consistent


def test_no_metrics_at_all_is_inconsistent():
    figures = source_metrics(10, [])
    assert (figures.count, figures.windows) == (0, 0)
    assert not figures.consistent


def stalled_run(fault: Timeline, resume_ms: int) -> Observed:
    """A clean run whose trips started during the fault are predicted only at `resume_ms`."""
    run = clean_run(400)
    stalled = [
        dataclasses.replace(p, at_ms=resume_ms)
        if fault.fault_started_ms <= s.at_ms <= resume_ms
        else p
        for p, s in zip(run.predictions, run.starts, strict=True)
    ]
    return dataclasses.replace(run, predictions=stalled)


def test_recovery_runs_until_the_held_up_predictions_are_made():
    fault = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=20_000)
    run = stalled_run(fault, resume_ms=25_000)
    assert caught_up_ms(run, fault) == 25_000
    result = check(run, fault, Bounds(max_gap_s=10, max_recovery_s=4))
    assert result.figures["recovery_s"] == 5.0
    # The train trips': their last prediction before the stall was at 10.0 s, the test ones'
    # at 10.1 s.
    assert result.figures["max_gap_s"] == 15.0
    assert result.figures["max_gap_source"] == "train"
    assert result.figures["max_gap_after_s"] == 10.0
    assert any("longest gap" in p for p in result.broken_bounds)
    assert any("caught up 5.0 s" in p for p in result.broken_bounds)
    assert result.problems == []  # every record is there: only the timings fail
    assert not result.passed


def test_recovery_is_the_normal_latency_when_the_fault_held_nothing_up():
    fault = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=20_000)
    run = clean_run(400)
    # The trip started exactly at the fault's end is the last one that counts.
    assert caught_up_ms(run, fault) == 20_000 + PREDICT_MS


def test_a_slow_prediction_long_after_the_fault_counts():
    fault = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=20_000)
    run = clean_run(400)
    slow = Stamped(run.starts[300].key, run.starts[300].at_ms + SLOW_MS + 1)
    predictions = [slow if p.key == slow.key else p for p in run.predictions]
    assert caught_up_ms(dataclasses.replace(run, predictions=predictions), fault) == slow.at_ms


def test_recovery_waits_for_trip_ends_the_fault_held_up():
    fault = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=20_000)
    run = clean_run(400)
    # A producer was down: the ends due meanwhile were sent only at 26 s.
    ends = [
        Stamped(e.key, 26_000) if fault.fault_started_ms <= e.at_ms <= 26_000 else e
        for e in run.ends
    ]
    assert ends[100].at_ms - run.starts[100].at_ms > LATE_END_MS
    assert caught_up_ms(dataclasses.replace(run, ends=ends), fault) == 26_000


def test_metrics_recovery_waits_for_the_cumulative_covering_what_was_matched():
    fault = Timeline(origin_ms=0, fault_started_ms=1_000, fault_ended_ms=2_000)
    run = clean_run(40)  # starts 0-3.9 s, predictions +0.2 s, ends +3 s
    # Matched by 2 s: none (the first end is at 3 s). So nothing is due: caught up at once.
    assert metrics_caught_up_ms(run, fault) == fault.fault_ended_ms
    late = Timeline(origin_ms=0, fault_started_ms=1_000, fault_ended_ms=5_000)
    # Matched by 5 s: trips started by 2 s, 21 of them: 11 train, 10 test.
    covering = [
        MetricsRecord(4_000, metrics("train", 5)),
        MetricsRecord(9_000, metrics("train", 11)),
        MetricsRecord(7_000, metrics("test", 10)),
    ]
    assert metrics_caught_up_ms(dataclasses.replace(run, metrics=covering), late) == 9_000
    assert metrics_caught_up_ms(dataclasses.replace(run, metrics=covering[:1]), late) is None


def test_never_caught_up_metrics_break_a_recovery_bound():
    fault = Timeline(origin_ms=0, fault_started_ms=1_000, fault_ended_ms=5_000)
    run = dataclasses.replace(clean_run(40), metrics=[])
    result = check(run, fault, Bounds(max_recovery_s=60))
    assert result.figures["metrics_recovery_s"] is None
    assert "metrics never caught up after the fault" in result.broken_bounds


def test_predictions_that_stop_for_good_leave_a_gap_until_the_last_trip_start():
    run = clean_run(400)  # starts 0-39.9 s
    stopped = dataclasses.replace(run, predictions=[p for p in run.predictions if p.at_ms < 30_000])
    fault = Timeline(origin_ms=0, fault_started_ms=25_000, fault_ended_ms=26_000)
    result = check(stopped, fault, Bounds(max_gap_s=5, max_recovery_s=60))
    assert result.figures["max_gap_s"] == 10.0  # train: 29.8 s until the last start, 39.8 s
    assert result.figures["recovery_s"] is None  # it never caught up
    assert "predictions and trip ends never caught up after the fault" in result.broken_bounds
    assert any(
        "longest gap without predictions of train trips 10.0 s" in p for p in result.broken_bounds
    )


def test_a_trip_start_inside_a_stall_does_not_split_the_gap():
    fault = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=20_000)
    run = stalled_run(fault, resume_ms=45_000)  # resumes after the last start (39.9 s)
    assert longest_gap(p.at_ms for p in run.predictions).seconds == 34.9
    assert check(run, fault, Bounds()).figures["max_gap_s"] == 35.0  # train: 10.0 s to 45 s


def last_cumulative(run: Observed, source: Source) -> int:
    """The index in run.metrics of the last cumulative record of `source`."""
    return max(
        i
        for i, r in enumerate(run.metrics)
        if r.metrics.source == source and r.metrics.scope == "cumulative"
    )


def with_last_cumulative(run: Observed, source: Source, **changes: object) -> Observed:
    """`run` with fields of its last cumulative record of `source` changed."""
    records = list(run.metrics)
    index = last_cumulative(run, source)
    changed = attrs.evolve(records[index].metrics, **changes)
    records[index] = dataclasses.replace(records[index], metrics=changed)
    return dataclasses.replace(run, metrics=records)


@pytest.mark.parametrize("source", ["train", "test"])
@pytest.mark.parametrize(("name", "factor"), [("rmsle", 1 + 1e-7), ("mae", 1 - 1e-7)])
def test_a_cumulative_figure_off_from_the_trips_fails_the_report(source, name, factor):
    run = clean_run()
    last = run.metrics[last_cumulative(run, source)].metrics
    off = with_last_cumulative(run, source, **{name: getattr(last, name) * factor})
    result = check(off, NO_FAULT, Bounds())
    assert not result.passed
    assert result.figures["metrics"][source]["consistent"]  # the counts alone add up
    assert not result.figures["metrics"][source]["values_match"]
    other = "test" if source == "train" else "train"
    assert result.figures["metrics"][other]["values_match"]
    assert [p for p in result.problems if "recomputed" in p] == [
        p for p in result.problems if p.startswith(f"{source} cumulative metrics")
    ]
    assert len(result.problems) == 1


def test_a_cumulative_figure_within_the_tolerance_passes():
    run = clean_run()
    last = run.metrics[last_cumulative(run, "train")].metrics
    assert last.rmsle is not None
    assert last.mae is not None
    close = with_last_cumulative(
        run,
        "train",
        rmsle=last.rmsle * (1 + METRIC_TOLERANCE / 10),
        mae=last.mae * (1 - METRIC_TOLERANCE / 10),
    )
    assert check(close, NO_FAULT, Bounds()).passed


def two_trips(rmsle: float, mae: float) -> Observed:
    """Two train trips whose log(1 + seconds) errors are 1 and -2, with one cumulative record
    of theirs saying `rmsle` and `mae`."""
    e = math.e
    record = attrs.evolve(metrics("train", 2), rmsle=rmsle, mae=mae)
    return Observed(
        trips={"a": "train", "b": "train"},
        starts=[Stamped("a", 0), Stamped("b", 0)],
        ends=[Stamped("a", END_MS, 0.0), Stamped("b", END_MS, e**3 - 1)],
        predictions=[Stamped("a", PREDICT_MS, e - 1), Stamped("b", PREDICT_MS, e - 1)],
        metrics=[
            MetricsRecord(0, metrics("train", 2, scope="window", window=0)),
            MetricsRecord(0, record),
        ],
        dead_letters=[],
    )


E = math.e


@pytest.mark.parametrize(
    ("rmsle", "mae", "right"),
    [
        (math.sqrt((1 + 4) / 2), ((E - 1) + (E**3 - E)) / 2, True),
        ((1 + 2) / 2, ((E - 1) + (E**3 - E)) / 2, False),  # the mean, not the root mean square
        (math.sqrt((1 + 4) / 2), math.sqrt(((E - 1) ** 2 + (E**3 - E) ** 2) / 2), False),  # RMSE
        (math.sqrt((1 + 4) / 2), (E - 1) + (E**3 - E), False),  # a sum, not a mean
    ],
)
def test_the_figures_are_the_rmsle_over_log1p_and_the_mae_in_seconds(rmsle, mae, right):
    result = check(two_trips(rmsle, mae), NO_FAULT, Bounds())
    assert result.figures["metrics"]["train"]["recomputed"]["count"] == 2
    assert result.figures["metrics"]["train"]["values_match"] == right
    assert result.passed == right


def test_metrics_of_wrongly_paired_trips_fail_the_report():
    # What an aggregator that matched each prediction with the next trip's end would publish:
    # the counts all add up, the values do not.
    run = clean_run()
    train = [i for i, t in enumerate(run.trips) if run.trips[t] == "train"]
    shifted = [
        (actual_s(j), predicted_s(i)) for i, j in zip(train, [*train[1:], train[0]], strict=True)
    ]
    metrics_records = [r for r in run.metrics if r.metrics.source != "train"]
    wrong = published("train", [10, 10], pairs=shifted)
    result = check(dataclasses.replace(run, metrics=[*wrong, *metrics_records]), NO_FAULT, Bounds())
    assert result.figures["metrics"]["train"]["consistent"]
    assert not result.figures["metrics"]["train"]["values_match"]
    assert result.figures["metrics"]["test"]["values_match"]
    assert not result.passed


def test_a_trip_whose_prediction_states_no_duration_cannot_match_the_metrics():
    run = clean_run()
    unreadable = dataclasses.replace(run.predictions[4], duration=None)  # a train trip's
    result = check(
        dataclasses.replace(
            run, predictions=[unreadable, *run.predictions[:4], *run.predictions[5:]]
        ),
        NO_FAULT,
        Bounds(),
    )
    assert result.figures["metrics"]["train"]["recomputed"]["count"] == 19
    assert not result.figures["metrics"]["train"]["values_match"]
    assert not result.passed


def test_matched_trips_without_a_cumulative_record_fail_the_report():
    run = clean_run()
    windows_only = [r for r in run.metrics if r.metrics.scope == "window"]
    result = check(dataclasses.replace(run, metrics=windows_only), NO_FAULT, Bounds())
    assert not result.figures["metrics"]["test"]["values_match"]
    assert any(
        p.startswith("test cumulative metrics (no cumulative record)") for p in result.problems
    )


# -- a challenger in the shadow, and a champion of two versions -------------------------------


def shadow_s(i: int) -> float:
    """The challenger's prediction of trip i: off by other amounts than the champion's."""
    return actual_s(i) * (0.8 + 0.03 * (i % 11))


def shadowed(i: int) -> bool:
    return i % 3 != 0


def challenged_run(trips: int = 60, versions: bool = True) -> Observed:
    """A clean run while challenger c2 shadowed champion v1 on two trips in three: the
    champion's predictions name it (with `versions`, as a runner that reads them says), its
    predictions are on shadow_predictions, and the metrics hold the champion's figures over
    all trips and both roles' head to head, over the shadowed trips."""
    run = clean_run(trips)
    ids = list(run.trips)
    predictions = [
        dataclasses.replace(
            p,
            model_version="v1" if versions else None,
            challenger_version="c2" if versions and shadowed(i) else None,
        )
        for i, p in enumerate(run.predictions)
    ]
    shadow = [
        Stamped(t, i * STEP_MS + PREDICT_MS, shadow_s(i), "c2" if versions else None)
        for i, t in enumerate(ids)
        if shadowed(i)
    ]
    head_to_head = []
    for source in ("train", "test"):
        mine = [i for i, t in enumerate(ids) if run.trips[t] == source and shadowed(i)]
        for role, predicted, version in (
            ("champion", predicted_s, "v1"),
            ("challenger", shadow_s, "c2"),
        ):
            head_to_head += published(
                source,
                [len(mine) // 2, len(mine) - len(mine) // 2],
                at_ms=100,
                pairs=[(actual_s(i), predicted(i)) for i in mine],
                role=role,
                model_version=version,
                challenger_version="c2",
            )
    return dataclasses.replace(
        run,
        predictions=predictions,
        shadow_predictions=shadow,
        metrics=[*run.metrics, *head_to_head],
    )


def test_a_clean_run_with_a_challenger_passes():
    result = check(challenged_run(), NO_FAULT, Bounds())
    assert result.problems == []
    assert result.figures["shadow_predictions"] == {
        "unique": 40,
        "duplicated": 0,
        "missing": 0,
        "unexpected": 0,
    }
    for source in ("train", "test"):
        figures = result.figures["metrics"][source]
        assert figures["values_match"]
        assert figures["recomputed"]["count"] == 30
        [(version, h2h)] = figures["head_to_head"].items()
        assert version == "c2"
        assert h2h["trips"] == 20
        assert h2h["same_trips"]
        for role in ("champion", "challenger"):
            assert h2h[role]["consistent"]
            assert h2h[role]["values_match"]
            assert h2h[role]["recomputed"]["count"] == 20


def test_shadow_predictions_without_the_versions_fail_the_report():
    # A runner that does not say which challenger each trip had: its shadow cannot be checked.
    result = check(challenged_run(versions=False), NO_FAULT, Bounds())
    assert any(
        p.startswith("shadow_predictions:") and "40 unexpected" in p for p in result.problems
    )
    assert not result.passed


def test_a_champion_only_run_has_no_head_to_head_figures():
    result = check(clean_run(), NO_FAULT, Bounds())
    assert "shadow_predictions" not in result.figures
    assert "head_to_head" not in result.figures["metrics"]["train"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda shadow: [*shadow, shadow[3]], "1 duplicated"),
        (lambda shadow: shadow[1:], "1 missing"),
        (lambda shadow: [*shadow, Stamped("id0000", 0, 1.0, "c2")], "1 unexpected"),  # unnamed
    ],
)
def test_shadow_predictions_must_be_there_exactly_once(change, problem):
    run = challenged_run()
    result = check(
        dataclasses.replace(run, shadow_predictions=change(list(run.shadow_predictions))),
        NO_FAULT,
        Bounds(),
    )
    assert any(p.startswith("shadow_predictions:") and problem in p for p in result.problems)
    assert not result.passed


def with_last(run: Observed, role: str, source: Source, **changes: object) -> Observed:
    """`run` with fields of the last head-to-head cumulative record of `role` changed."""
    records = list(run.metrics)
    index = max(
        i
        for i, r in enumerate(records)
        if r.metrics.role == role
        and r.metrics.challenger_version == "c2"
        and r.metrics.source == source
        and r.metrics.scope == "cumulative"
    )
    records[index] = dataclasses.replace(
        records[index], metrics=attrs.evolve(records[index].metrics, **changes)
    )
    return dataclasses.replace(run, metrics=records)


@pytest.mark.parametrize("role", ["champion", "challenger"])
def test_a_head_to_head_figure_off_from_the_trips_fails_the_report(role):
    run = challenged_run()
    last = [
        r.metrics
        for r in run.metrics
        if r.metrics.role == role and r.metrics.challenger_version and r.metrics.source == "test"
    ][-1]
    result = check(with_last(run, role, "test", rmsle=last.rmsle * (1 + 1e-7)), NO_FAULT, Bounds())
    h2h = result.figures["metrics"]["test"]["head_to_head"]["c2"]
    assert not h2h[role]["values_match"]
    assert h2h["champion" if role == "challenger" else "challenger"]["values_match"]
    assert result.figures["metrics"]["test"]["values_match"]  # the champion's over all trips
    assert [p for p in result.problems if "recomputed" in p] == [
        p for p in result.problems if p.startswith(f"test {role} head to head with c2 cumulative")
    ]
    assert len(result.problems) == 1


def test_the_challenger_scored_on_other_trips_than_the_champion_fails_the_report():
    # Its figures are those of every trip, not only of those both predicted.
    run = challenged_run()
    ids = list(run.trips)
    mine = [i for i, t in enumerate(ids) if run.trips[t] == "train" and shadowed(i)]
    others = [i for i, t in enumerate(ids) if run.trips[t] == "train"][: len(mine)]
    wrong = published(
        "train",
        [len(mine)],
        at_ms=100,
        pairs=[(actual_s(i), shadow_s(i)) for i in others],
        role="challenger",
        model_version="c2",
        challenger_version="c2",
    )
    kept = [
        r
        for r in run.metrics
        if not (r.metrics.source == "train" and r.metrics.role == "challenger")
    ]
    result = check(dataclasses.replace(run, metrics=[*kept, *wrong]), NO_FAULT, Bounds())
    assert not result.figures["metrics"]["train"]["head_to_head"]["c2"]["challenger"][
        "values_match"
    ]
    assert not result.passed


def test_both_roles_must_count_the_same_trips():
    run = challenged_run()
    # One trip more for the challenger, one fewer matched and one unmatched for the champion:
    # each adds up to the trips on its own, but not the same ones.
    last = [r.metrics for r in run.metrics if r.metrics.role == "challenger"][-1]
    off = with_last(run, "champion", last.source, count=last.count - 1, unmatched=1)
    result = check(off, NO_FAULT, Bounds())
    assert not result.figures["metrics"][last.source]["head_to_head"]["c2"]["same_trips"]
    assert any("scored on different numbers of trips" in p for p in result.problems)


def promoted_run(versions: bool = True) -> Observed:
    """A clean champion-only run whose champion changed from v1 to v2 halfway: each version's
    figures over its own trips (the unmatched end of no version under `unknown`)."""
    run = clean_run(40)
    ids = list(run.trips)
    version = {t: "v1" if i < 20 else "v2" for i, t in enumerate(ids)}
    predictions = [
        dataclasses.replace(p, model_version=version[p.key] if versions else None)
        for p in run.predictions
    ]
    records = []
    for source in ("train", "test"):
        for v in ("v1", "v2"):
            mine = [i for i, t in enumerate(ids) if run.trips[t] == source and version[t] == v]
            records += published(
                source,
                [len(mine)],
                pairs=[(actual_s(i), predicted_s(i)) for i in mine],
                model_version=v,
            )
    return dataclasses.replace(run, predictions=predictions, metrics=records)


@pytest.mark.parametrize("versions", [True, False], ids=["versions-read", "versions-unknown"])
def test_a_champion_of_two_versions_is_checked_version_by_version(versions):
    run = promoted_run(versions)
    result = check(run, NO_FAULT, Bounds())
    assert result.problems == []
    assert result.figures["metrics"]["train"]["count"] == 20
    assert result.figures["metrics"]["train"]["recomputed"]["count"] == 20
    # The two versions' figures swapped: the same trips in all, each version's wrong.
    swapped = [
        dataclasses.replace(
            r,
            metrics=attrs.evolve(
                r.metrics, model_version={"v1": "v2", "v2": "v1"}[r.metrics.model_version]
            ),
        )
        for r in run.metrics
    ]
    result = check(dataclasses.replace(run, metrics=swapped), NO_FAULT, Bounds())
    assert result.passed == (not versions)  # without versions, only their merge can be checked


def test_metrics_recovery_sums_the_champions_versions():
    fault = Timeline(origin_ms=0, fault_started_ms=1_000, fault_ended_ms=5_000)
    run = clean_run(40)  # 11 train trips matched by 5 s
    covering = [
        MetricsRecord(4_000, metrics("train", 5)),
        MetricsRecord(6_000, metrics("train", 6, model_version="v2")),  # 5 + 6 from here on
        MetricsRecord(7_000, metrics("test", 10)),
        MetricsRecord(
            7_500,
            metrics("test", 10, role="challenger", model_version="c2", challenger_version="c2"),
        ),
    ]
    assert metrics_caught_up_ms(dataclasses.replace(run, metrics=covering), fault) == 7_000
    # Head-to-head figures are not the champion's over all trips.
    no_test = [covering[0], covering[1], covering[3]]
    assert metrics_caught_up_ms(dataclasses.replace(run, metrics=no_test), fault) is None


def test_one_replay_stalled_while_the_other_goes_on_is_a_gap():
    # The test producer's transaction hangs from 10 s to 35 s; the train trips flow on, so the
    # predictions as a whole never pause for more than a step or two.
    fault = Timeline(origin_ms=0, fault_started_ms=10_000, fault_ended_ms=20_000)
    run = clean_run(400)
    held = [
        dataclasses.replace(p, at_ms=35_000)
        if run.trips[p.key] == "test" and 10_000 <= s.at_ms <= 35_000
        else p
        for p, s in zip(run.predictions, run.starts, strict=True)
    ]
    assert longest_gap(p.at_ms for p in held).seconds <= 2 * STEP_MS / 1000
    result = check(dataclasses.replace(run, predictions=held), fault, Bounds(max_gap_s=20))
    assert result.figures["max_gap_s"] == 24.9  # from the test trip predicted at 10.1 s
    assert result.figures["max_gap_source"] == "test"
    assert result.figures["max_gap_after_s"] == 10.1
    assert result.broken_bounds == ["longest gap without predictions of test trips 24.9 s > 20 s"]
    assert result.problems == []
