"""`taxi months`: real trips, January to June in pickup order, from a model trained on January
only; the RMSLE month by month, with retraining and without.

Both runs replay the same trips through the whole system as real processes, on a fresh cluster
each: the train producer, the predictor and the aggregator, and in the second the trainer with
its automatic promotion. The model learns from the earliest 80% of January's trips (the time
split `taxi train` makes); the replay starts at its cutoff, so every trip scored is one it never
saw, its held-out end of January included. A month's RMSLE is worked out from what the topics
hold (read_committed): the champion's prediction of each trip against its real duration. The
chaos checker's verdict on every trip comes with each run.
"""

from __future__ import annotations

import bisect
import logging
import math
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from taxi_events import Source
from taxi_model import (
    TRAIN_COLUMNS,
    ModelCard,
    file_sha256,
    read_trips,
    save_model,
    train_model,
    unseen_trips,
)
from taxi_services.chaos.checker import Bounds, Observed, Timeline, check
from taxi_services.chaos.pipeline import Pipeline, Replayed
from taxi_services.chaos.runner import observe, run_cluster, wait_for
from taxi_services.chaos.scenarios import now_ms
from taxi_services.lifecycle import Loop

log = logging.getLogger("taxi.months")

Mode = Literal["without_retraining", "with_retraining"]
MODES: tuple[Mode, ...] = ("without_retraining", "with_retraining")
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
SAMPLE_SEED = 20
# A window of consecutive pickups spans a few days, never the profile's week (docs/drift.md).
PSI_FEATURES = "distance_km,pickup_area"


@dataclass(frozen=True)
class MonthsOptions:
    data: Path  # a Kaggle train CSV (optionally .gz)
    max_trips: int  # at most this many of its trips, drawn at random
    rate: float  # trips started per second
    keep: bool = False


@dataclass(frozen=True)
class Prepared:
    """The replay's CSV (every trip, in pickup order), the January model and the trips it
    never saw (those the replay scores)."""

    csv: Path
    model_path: Path
    card: ModelCard
    unseen: pd.DataFrame


# Pure: the trips, and the figures from the records.


def in_pickup_order(trips: pd.DataFrame, max_trips: int, seed: int = SAMPLE_SEED) -> pd.DataFrame:
    """At most `max_trips` of the trips (a random draw with a fixed seed when there are more),
    in pickup order (ties in file order)."""
    if len(trips) > max_trips:
        trips = trips.sample(n=max_trips, random_state=seed)
    return trips.sort_values("pickup_datetime", kind="stable").reset_index(drop=True)


def first_month(trips: pd.DataFrame) -> pd.DataFrame:
    """The trips of the earliest calendar month (January in the Kaggle data)."""
    month = trips["pickup_datetime"].dt.strftime("%Y-%m")
    earliest: pd.DataFrame = trips[month == month.min()]
    return earliest.reset_index(drop=True)


@dataclass(frozen=True)
class MonthFigures:
    month: str  # YYYY-MM
    trips: int  # trips of the month scored
    rmsle: float | None
    served_by: dict[str, float]  # share of the month's trips each model version predicted


def monthly_rmsle(trips: pd.DataFrame, observed: Observed) -> list[MonthFigures]:
    """The champion's RMSLE per pickup month, over the trips both predicted and finished with
    a real duration. `trips` has id, pickup_datetime and trip_duration."""
    predicted = {p.key: p for p in observed.predictions if p.duration is not None}
    actual = {e.key: e.duration for e in observed.ends if e.duration is not None}
    squared: dict[str, list[float]] = defaultdict(list)
    served: dict[str, Counter[str]] = defaultdict(Counter)
    months = trips["pickup_datetime"].dt.strftime("%Y-%m")
    for trip_id, month in zip(trips["id"], months, strict=True):
        prediction, duration = predicted.get(trip_id), actual.get(trip_id)
        if prediction is None or prediction.duration is None or duration is None:
            continue
        error = math.log1p(prediction.duration) - math.log1p(duration)
        squared[month].append(error * error)
        served[month][prediction.model_version or "unknown"] += 1
    figures = []
    for month in sorted(squared):
        count = len(squared[month])
        figures.append(
            MonthFigures(
                month=month,
                trips=count,
                rmsle=round(math.sqrt(float(np.mean(squared[month]))), 4),
                served_by={v: round(n / count, 3) for v, n in served[month].most_common()},
            )
        )
    return figures


def replay_reached(
    starts: Sequence[tuple[int, str]], pickups: Mapping[str, datetime], at_ms: int
) -> datetime | None:
    """The pickup time the replay had reached at `at_ms`: that of the last trip started by
    then. `starts` are (start time in epoch ms, trip id), sorted. None before the first."""
    at = bisect.bisect_right(starts, (at_ms, "\uffff"))
    return pickups.get(starts[at - 1][1]) if at else None


def loop_story(
    loop: Loop, starts: Sequence[tuple[int, str]], pickups: Mapping[str, datetime]
) -> list[dict[str, Any]]:
    """What the loop did, in order, each step dated by where the replay was: drift events by
    the last trip of their window, candidates and decisions by the trips started by then."""
    steps: list[tuple[float, dict[str, Any]]] = []
    for event in loop.events:
        if event.kind in ("concept-drift", "data-drift") and event.last_trip_id:
            reached = pickups.get(event.last_trip_id)
        else:
            reached = replay_reached(starts, pickups, _ms(event.occurred_at))
        step: dict[str, Any] = {
            "what": event.kind,
            "model": event.model_version,
            "replay_at": _day(reached),
        }
        if event.statistic:
            step["statistic"] = event.statistic
        if event.kind.startswith("candidate"):
            step["held_out"] = event.evidence
        steps.append((event.occurred_at.timestamp(), step))
    for decision in loop.decisions[1:]:  # the first is the January model made champion
        reached = replay_reached(starts, pickups, _ms(decision.decided_at))
        step = {
            "what": decision.action,
            "model": decision.version,
            "replay_at": _day(reached),
            "actor": decision.actor,
        }
        if decision.evidence:
            step["evidence"] = decision.evidence
        steps.append((decision.decided_at.timestamp(), step))
    return [step for _, step in sorted(steps, key=lambda s: s[0])]


def by_month_table(runs: Mapping[Mode, Iterable[MonthFigures]]) -> list[dict[str, Any]]:
    """One row a month: each run's RMSLE, and which models served with retraining."""
    rows: dict[str, dict[str, Any]] = {}
    for mode, figures in runs.items():
        for f in figures:
            row = rows.setdefault(f.month, {"month": f.month, "trips": f.trips})
            row[mode] = f.rmsle
            if mode == "with_retraining":
                row["served_by_with_retraining"] = f.served_by
    return [rows[month] for month in sorted(rows)]


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _day(at: datetime | None) -> str | None:
    return None if at is None else at.strftime("%Y-%m-%d %H:%M")


# I/O: the data, the runs.


def prepare(data: Path, max_trips: int, folder: Path) -> Prepared:
    """Write the replay's CSV and train the January model on it (time split)."""
    read = read_trips(data, "train")
    log.info("%s: %s", data, read.report.summary())
    trips = in_pickup_order(read.frame, max_trips)
    csv = folder / "trips.csv"
    trips[list(TRAIN_COLUMNS)].to_csv(csv, index=False)
    january = first_month(trips)
    log.info("training on the %d trips of %s", len(january), january.pickup_datetime.min().date())
    # The card names the replay's CSV: the producer then leaves out the trips before the cutoff,
    # as unseen_trips does here.
    sha256 = file_sha256(csv)
    result = train_model(january, f"{data}: the {len(january)} trips of its first month", sha256)
    model_path = folder / "models" / "january.skops"
    card = save_model(result.pipeline, result.card, model_path)
    unseen = unseen_trips(card, trips, sha256)
    log.info(
        "January model %s: held-out RMSLE %s; the replay scores the %d trips from %s on",
        card.version,
        card.holdout.rmsle,
        len(unseen),
        card.data.cutoff,
    )
    return Prepared(csv, model_path, card, unseen)


def run_months(options: MonthsOptions) -> dict[str, Any]:
    """Both runs; the JSON-ready report ("passed": both ran and every trip was exactly once)."""
    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="taxi-months-"))
    try:
        prepared = prepare(options.data, options.max_trips, folder)
        runs: dict[str, dict[str, Any]] = {}
        figures: dict[Mode, list[MonthFigures]] = {}
        problems: list[str] = []
        for mode in MODES:
            runs[mode], figures[mode], missed = _run(mode, prepared, options)
            problems += [f"{mode}: {p}" for p in missed]
    finally:
        if options.keep:
            log.warning("the trips and the January model are kept in %s", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    card = prepared.card
    return {
        "passed": not problems,
        "problems": problems,
        "data": {"file": str(options.data), "trips": len(prepared.unseen)},
        "january_model": {
            "version": card.version,
            "train_rows": card.data.train_rows,
            "cutoff": card.data.cutoff,
            "held_out_rmsle": card.holdout.rmsle,
        },
        "replay": {
            "trips": len(prepared.unseen),
            "from": str(prepared.unseen.pickup_datetime.min()),
            "to": str(prepared.unseen.pickup_datetime.max()),
            "rate_per_s": options.rate,
            "aggregator": ["--psi-features", PSI_FEATURES],
        },
        "by_month": by_month_table(figures),
        "runs": runs,
        "seconds": round(time.monotonic() - began, 1),
    }


def _run(
    mode: Mode, prepared: Prepared, options: MonthsOptions
) -> tuple[dict[str, Any], list[MonthFigures], list[str]]:
    log.info("--- %s", mode.replace("_", " "))
    began = time.monotonic()
    with run_cluster(f"taxi-months-{mode.split('_')[0]}-", keep=options.keep) as cluster:
        runtime = cluster.runtime_dir
        pipeline = Pipeline(
            instance=runtime.name,
            cluster=cluster,
            model_path=prepared.model_path,
            replays={"train": Replayed(prepared.csv, len(prepared.unseen), options.rate)},
            logs=runtime / "logs",
            producer_args={"train": ["--model", str(prepared.model_path)]},
            aggregator_args=["--psi-features", PSI_FEATURES],
            trainer_args=[] if mode == "with_retraining" else None,
            run_by="taxi months",
        )
        problems: list[str] = []
        origin_ms = now_ms()
        try:
            pipeline.start_all(START_TIMEOUT_S)
            problems += wait_for(pipeline, "the producer to finish", pipeline.producers_done)
            problems += wait_for(pipeline, "every trip scored", pipeline.drained)
        finally:
            codes = pipeline.stop(STOP_TIMEOUT_S)
        problems += [f"{name} exited with {code}" for name, code in codes.items() if code]
        trips: dict[str, Source] = dict.fromkeys(prepared.unseen["id"], "train")
        observed = observe(cluster, trips)
        checked = check(observed, Timeline(origin_ms, origin_ms, origin_ms), Bounds())
        problems += checked.problems
        pickups = dict(zip(prepared.unseen["id"], prepared.unseen["pickup_datetime"], strict=True))
        starts = sorted((s.at_ms, s.key) for s in observed.starts)
        story = loop_story(Loop.read(cluster.kafka_config()), starts, pickups)
        figures = monthly_rmsle(prepared.unseen, observed)
    run = {
        "loop": story,
        "exactly_once": checked.figures,
        "exit_codes": codes,
        "seconds": round(time.monotonic() - began, 1),
    }
    return run, figures, problems
