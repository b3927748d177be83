"""A trip producer: replays one CSV (train or test rows) as trip starts on `new_trips` and, a
few seconds later, trip ends on `finished_trips`.

Every batch of events and the replay's checkpoint commit in one Kafka transaction, so a killed
and restarted producer resumes exactly: no trip starts twice and every started trip still ends.
`--drift` changes the trips from a given one on in a known way, to prove drift detection.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Never, cast

import click
import pandas as pd
from prometheus_client import Counter, Gauge
from tqdm import tqdm

from taxi_events import Source, encode
from taxi_kafka import (
    FINISHED_TRIPS,
    METRICS_PORTS,
    NEW_TRIPS,
    PRODUCER_CHECKPOINTS,
    KafkaConfig,
    Observer,
    OutputRecord,
    TransactionalProducer,
    instance_id,
    read_table,
    report_outputs,
    stop_on_signals,
)
from taxi_kafka.cli import env_option
from taxi_model import (
    CsvSchemaError,
    InSampleError,
    ModelLoadError,
    file_sha256,
    read_card,
    read_trips,
    synthetic_train_test,
    unseen_trips,
)
from taxi_services.metrics import PrometheusObserver, serve_metrics
from taxi_services.options import model_option, prefixed, service_options, topic_prefix_option
from taxi_stream import (
    DRIFT_SYNTAX,
    CheckpointMismatchError,
    DriftMismatchError,
    DriftSpecError,
    InjectedDrift,
    InjectedDriftKind,
    Replay,
    ReplayCheckpoint,
    ReplayStep,
    parse_drift_kind,
)

log = logging.getLogger("taxi.producer")

SERVICE = "producer"
option = env_option(SERVICE)
# How often the loop wakes when nothing is due: the granularity of the replay's clock.
TICK_S = 0.02
SYNTHETIC_SEED = 2016
SYNTHETIC_ROWS = 100_000

BAD_ROWS = Counter(
    "taxi_producer_bad_rows_total", "CSV rows skipped, by reason.", ["source", "reason"]
)
TRIPS_STARTED = Gauge(
    "taxi_producer_trips_started",
    "Trips this replay has started, over every run and generation (from its checkpoint).",
    ["source"],
)
GENERATION = Gauge(
    "taxi_producer_replay_generation",
    "Which pass over the file the replay is on (1 for the first; --loop starts the next).",
    ["source"],
)
PENDING_ENDS = Gauge(
    "taxi_producer_pending_trip_ends", "Started trips whose end is still to be sent.", ["source"]
)
DRIFT_ACTIVE = Gauge(
    "taxi_producer_drift_active",
    "1 once the trips this replay starts carry its injected drift (--drift), 0 before; `drift` "
    "is its kind.",
    ["source", "drift"],
)


class DriftKindParam(click.ParamType[InjectedDriftKind]):
    """A --drift spec, read strictly (`parse_drift_kind`)."""

    name = "drift"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> InjectedDriftKind:
        if isinstance(value, InjectedDriftKind):  # click's contract: a converted value passes
            return value
        try:
            return parse_drift_kind(str(value))
        except DriftSpecError as exc:
            self.fail(str(exc), param, ctx)


def checkpoint_record(
    name: str, checkpoint: ReplayCheckpoint, topic_prefix: str = ""
) -> OutputRecord:
    value = json.dumps(checkpoint.to_json(), separators=(",", ":")).encode()
    return OutputRecord(topic_prefix + PRODUCER_CHECKPOINTS, value, name.encode())


def step_records(step: ReplayStep, topic_prefix: str = "") -> list[OutputRecord]:
    """A step's events as records keyed by trip id: starts first, then ends."""
    starts, ends = topic_prefix + NEW_TRIPS, topic_prefix + FINISHED_TRIPS
    return [OutputRecord(starts, encode(e), e.trip_id.encode()) for e in step.started] + [
        OutputRecord(ends, encode(e), e.trip_id.encode()) for e in step.finished
    ]


def run_replay(
    replay: Replay,
    producer: TransactionalProducer,
    name: str,
    stop: threading.Event,
    *,
    batch_size: int,
    observer: Observer,
    committed_checkpoint: Callable[[], ReplayCheckpoint | None],
    progress: tqdm[Never] | None = None,  # a bar counted by update(), iterating nothing
    topic_prefix: str = "",
) -> None:
    """Commit due events with the checkpoint, transaction by transaction, until done or stopped.
    A failed transaction rolls the replay back to the checkpoint Kafka holds,
    `committed_checkpoint()` (None: none yet, so back to where this run began)."""
    began = replay.checkpoint()
    while not stop.is_set() and not replay.done:
        generation, drifting = replay.generation, replay.drifting
        step = replay.step(int(time.time() * 1000), batch_size)
        for reason, count in step.bad_rows.items():
            BAD_ROWS.labels(replay.source, reason).inc(count)
        if not step.started and not step.finished:
            stop.wait(TICK_S)
            continue
        records = [
            *step_records(step, topic_prefix),
            checkpoint_record(name, replay.checkpoint(), topic_prefix),
        ]
        if producer.commit(records):
            report_outputs(observer, records)
            observer.batch_processed(len(step.started) + len(step.finished))
            if replay.generation > generation:
                log.info(
                    "%s: every one of the %d rows has started; generation %d begins, its trip "
                    "ids ending in -g%d",
                    name,
                    replay.rows,
                    replay.generation,
                    replay.generation,
                )
            if replay.drift is not None and replay.drifting and not drifting:
                log.info(
                    "%s: the injected drift begins: %s (the first trip is trip 0)",
                    name,
                    replay.drift.describe(),
                )
            if progress is not None:
                progress.update(len(step.started))
        else:
            # Not the checkpoint in memory: a commit whose outcome was unknown (its response
            # lost) may have committed after all, and its replacement producer has settled it.
            replay.restore(committed_checkpoint() or began)
        _report_position(replay)


def _report_position(replay: Replay) -> None:
    TRIPS_STARTED.labels(replay.source).set(replay.started)
    GENERATION.labels(replay.source).set(replay.generation)
    PENDING_ENDS.labels(replay.source).set(replay.pending_ends)
    if replay.drift is not None:
        DRIFT_ACTIVE.labels(replay.source, replay.drift.kind.spec).set(float(replay.drifting))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(
    "--source",
    type=click.Choice(["train", "test"]),
    required=True,
    help="Which rows: train (real durations) or test (estimated durations).",
)
@service_options(SERVICE, metrics_port=METRICS_PORTS["producer-train"])
@option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Kaggle-schema CSV to replay [default: data/<source>.csv; synthetic trips if absent].",
)
@option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Trips started per second [default: as fast as possible].",
)
@option(
    "--time-scale",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="End each trip after its duration divided by this [default: 2-5 s after its start].",
)
@option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="Start at most N more trips (this run), send every end owed, then exit.",
)
@option(
    "--loop/--no-loop",
    default=False,
    help="At the end of the file, start it over as a new generation of trips (their ids end in "
    "-g2, -g3, ...) instead of exiting.",
)
@option(
    "--synthetic-rows",
    type=click.IntRange(1),
    default=SYNTHETIC_ROWS,
    help="Trips to generate when there is no CSV.",
)
@option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=2_000,
    help="Most trip starts per transaction.",
)
@model_option(
    "The model being scored live. Of the file it was trained on, the train replay leaves out "
    "the trips it learnt from (only its card, the .json beside it, is read)."
)
@option(
    "--in-sample",
    is_flag=True,
    help="Replay every trip, those the model learnt from too: its live score is then in-sample.",
)
@option(
    "--drift",
    type=DriftKindParam(),
    default=None,
    metavar="KIND",
    help=f"Inject a known drift into the trips from --drift-from on: {DRIFT_SYNTAX}. A restart "
    "of the replay must repeat it.",
)
@option(
    "--drift-from",
    type=click.IntRange(0),
    default=0,
    metavar="N",
    help="The trip the drift begins with, counting this replay's trips from 0 over every run "
    "(as taxi_producer_trips_started does): the first N are left as they are.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@topic_prefix_option()
def main(
    *,
    source: str,
    kafka: KafkaConfig,
    metrics_port: int,
    metrics_address: str,
    instance: str,
    data: Path | None,
    rate: float | None,
    time_scale: float | None,
    limit: int | None,
    loop: bool,
    synthetic_rows: int,
    batch_size: int,
    model_path: Path,
    in_sample: bool,
    drift: InjectedDriftKind | None,
    drift_from: int,
    progress: bool,
    topic_prefix: str,
) -> None:
    """Replay taxi trips as live events: starts on new_trips, ends on finished_trips.

    Resumes where it stopped: its position commits with its events (producer_checkpoints),
    so a restart neither repeats a start nor loses an end. --instance names the replay (one
    checkpoint each): reuse it to resume, change it to replay the file afresh.
    """
    if drift is None and drift_from:
        raise click.UsageError("--drift-from needs --drift")
    trip_source = cast(Source, source)
    trips = replay_trips(trip_source, data, synthetic_rows, model_path, in_sample=in_sample)
    replay = Replay(
        trips,
        trip_source,
        rate=rate,
        time_scale=time_scale,
        loop=loop,
        drift=None if drift is None else InjectedDrift(drift, drift_from),
    )
    name = replay_name(trip_source, instance)
    serve_metrics(metrics_port, metrics_address)
    observer = PrometheusObserver(
        f"{SERVICE}-{source}",
        outputs=prefixed(topic_prefix, NEW_TRIPS, FINISHED_TRIPS, PRODUCER_CHECKPOINTS),
    )
    producer = TransactionalProducer(
        kafka,
        instance_id(SERVICE, name),
        observer=observer,
        name=f"{SERVICE}-{source}",
    )
    saved = saved_checkpoints(kafka, topic_prefix).get(name)
    if saved is not None:
        try:
            replay.restore(saved)
        except CheckpointMismatchError as exc:
            producer.close()
            resume = (
                "Restart with its --drift and --drift-from to resume it"
                if isinstance(exc, DriftMismatchError)
                else "Replay the same data"
            )
            raise click.ClickException(
                f"{name}: {exc}. {resume}, start over with `taxi reset` (which deletes the "
                "pipeline's topics), or pick another --instance"
            ) from exc
        log.info(
            "resuming %s at generation %d, row %d of %d, with %d trip end(s) owed",
            name,
            replay.generation,
            replay.position % max(replay.rows, 1),
            replay.rows,
            replay.pending_ends,
        )
    if replay.drift is not None:
        log.info(
            "%s injects the drift %s (%s)",
            name,
            replay.drift.describe(),
            "under way" if replay.drifting else f"{replay.started} trips started so far",
        )
    if limit is not None:
        replay.stop_after(limit)
    if replay.done:
        log.info(
            "%s: all %d trips of this data have started and ended; nothing to do (--loop "
            "replays it again under new trip ids)",
            name,
            replay.rows,
        )
    _report_position(replay)
    stop = threading.Event()
    bar = tqdm(
        total=limit if limit is not None else (None if loop else replay.rows),
        initial=0 if limit is not None or loop else replay.started,
        desc=f"{source} trips",
        disable=not progress,
    )
    try:
        with stop_on_signals(stop):
            run_replay(
                replay,
                producer,
                name,
                stop,
                batch_size=batch_size,
                observer=observer,
                committed_checkpoint=lambda: saved_checkpoints(kafka, topic_prefix).get(name),
                progress=bar,
                topic_prefix=topic_prefix,
            )
    finally:
        bar.close()
        producer.close()
    log.info(
        "%s: %d trips started in all (generation %d of a %d-row file), %d ends owed",
        name,
        replay.started,
        replay.generation,
        replay.rows,
        replay.pending_ends,
    )


def replay_name(source: Source, instance: str) -> str:
    """The key of a producer's checkpoint: one replay per source and --instance."""
    return f"{source}-{instance}"


def saved_checkpoints(kafka: KafkaConfig, topic_prefix: str = "") -> dict[str, ReplayCheckpoint]:
    """Every producer's committed checkpoint, by replay name."""
    table = read_table(kafka, topic_prefix + PRODUCER_CHECKPOINTS)
    return {
        key.decode(): ReplayCheckpoint.from_json(json.loads(value)) for key, value in table.items()
    }


def replay_trips(
    source: Source,
    data: Path | None,
    synthetic_rows: int,
    model_path: Path,
    *,
    in_sample: bool = False,
) -> pd.DataFrame:
    """The trips a producer replays: `data`, else data/<source>.csv, else synthetic trips; of
    train rows, only those the model at `model_path` did not learn from, unless `in_sample`."""
    path = data or Path(f"data/{source}.csv")
    if not path.is_file():
        if data is not None:
            raise click.ClickException(f"no trip data at {data}")
        log.info("no %s: %s trips are %d synthetic ones", path, source, synthetic_rows)
        train, test = _synthetic(synthetic_rows)
        return train if source == "train" else test
    try:
        loaded = read_trips(path, source)
    except CsvSchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("%s trips from %s: %s", source, path, loaded.report.summary())
    if source != "train":
        return loaded.frame
    if in_sample:
        log.warning("replaying every trip of %s: the live score is in-sample (--in-sample)", path)
        return loaded.frame
    return _unseen(loaded.frame, path, model_path)


def _unseen(trips: pd.DataFrame, path: Path, model_path: Path) -> pd.DataFrame:
    try:
        card = read_card(model_path)
    except ModelLoadError as exc:
        log.warning(
            "cannot tell which trips of %s the model learnt from (%s): replaying all of them; "
            "a live score of trips it learnt from would be in-sample",
            path,
            exc,
        )
        return trips
    try:
        unseen = unseen_trips(card, trips, file_sha256(path))
    except InSampleError as exc:
        raise click.ClickException(
            f"{exc}. Retrain on the time split (`uv run taxi train --data {path} --force`), "
            "or pass --in-sample to replay every trip anyway"
        ) from exc
    if len(unseen) < len(trips):
        log.info(
            "model %s learnt from %s up to %s: replaying the %d trips from then on, of %d",
            card.version,
            path,
            card.data.cutoff,
            len(unseen),
            len(trips),
        )
    return unseen


@functools.cache
def _synthetic(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Both producers draw from one simulation, so train and test trip ids never collide.
    return synthetic_train_test(rows, SYNTHETIC_SEED, rows)
