"""`taxi train` (and publish) and `taxi evaluate`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from tqdm import tqdm

from taxi_events import Role
from taxi_kafka import KafkaConfig
from taxi_model import (
    SPLITS,
    BetterModelExistsError,
    CsvSchemaError,
    LogDurationRegressor,
    ModelCard,
    ModelLoadError,
    Split,
    TripData,
    ensure_model,
    file_sha256,
    load_model,
    read_trips,
    train_and_save,
)
from taxi_model import evaluate as evaluate_model
from taxi_services import options
from taxi_services.commands.registry import (
    open_registry,
    publish_and_report,
    registry_options,
    role_option,
)

log = logging.getLogger("taxi.train")

FC = TypeVar("FC", bound=Callable[..., object])

DEFAULT_TRAIN_DATA = Path("data/train.csv")
NO_DATA_HINT = (
    "Put Kaggle's train.csv in data/, or write synthetic trips with `uv run taxi data synth` "
    "and pass --data to the train.csv it writes."
)

model_option = options.model_option(
    "The pipeline file; its card is the .json beside it.", name="model", show_envvar=True
)


def data_option(help_text: str) -> Callable[[FC], FC]:
    return click.option(
        "--data",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_TRAIN_DATA,
        show_default=True,
        show_envvar=True,
        help=help_text,
    )


def _read_labelled(path: Path) -> TripData:
    if not path.is_file():
        raise click.ClickException(f"no trip data at {path}. {NO_DATA_HINT}")
    try:
        trips = read_trips(path)
    except CsvSchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("read %s: %s", path, trips.report.summary())
    if trips.kind != "train":
        raise click.ClickException(
            f"{path} has no trip durations (it looks like Kaggle's test.csv); "
            "training and evaluation need the train file."
        )
    return trips


@click.command()
@data_option("Kaggle-schema train CSV (optionally .gz) to learn from.")
@model_option
@click.option(
    "--force",
    is_flag=True,
    show_envvar=True,
    help="Replace the model in place even if it is better.",
)
@click.option(
    "--if-missing",
    is_flag=True,
    show_envvar=True,
    help="Keep the model at --model if there is one. Train only if there is none, as `taxi up` "
    "does: on --data (which must be a train.csv), or on synthetic trips if it does not exist.",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="time",
    show_default=True,
    show_envvar=True,
    help="time: learn from the earliest 80% of trips by pickup time and hold out the rest, "
    "as the model will meet later trips; random: hold out a fixed random fifth.",
)
@click.option(
    "--publish",
    is_flag=True,
    show_envvar=True,
    help="Then publish the model to the registry on Kafka, as `taxi model publish` does "
    "(the Kafka options and --topic-prefix say where).",
)
@role_option("With --publish: give the model this role too (none by default).")
@registry_options
def train(
    *,
    data: Path,
    model: Path,
    force: bool,
    if_missing: bool,
    split: Split,
    publish: bool,
    role: Role | None,
    kafka: KafkaConfig,
    topic_prefix: str,
) -> None:
    """Train the trip-duration model and write the model, its card and a PNG report.

    Fits on 80% of the trips and reports RMSLE, MAE, median absolute percentage error and the
    share within ±30% on the other 20%: by default the latest fifth by pickup time, whose
    start (the cutoff) the card records. With --publish the model then goes to the registry
    (with --if-missing, the model in place does).
    """
    if role is not None and not publish:
        raise click.UsageError("--as needs --publish.")
    _train(data, model, force=force, if_missing=if_missing, split=split)
    if publish:
        publish_and_report(
            open_registry(kafka, topic_prefix), model, role, how=f"taxi train --data {data}"
        )


def _train(data: Path, model: Path, *, force: bool, if_missing: bool, split: Split) -> None:
    if if_missing:
        _train_if_missing(data, model, force)
        return
    trips = _read_labelled(data)
    max_rounds = LogDurationRegressor().max_rounds
    with tqdm(total=max_rounds, desc="boosting rounds", unit="round") as bar:

        def on_rounds(done: int) -> None:
            bar.update(done - bar.n)

        try:
            saved = train_and_save(
                trips.frame,
                str(data),
                model,
                data_sha256=file_sha256(data),
                force=force,
                on_rounds=on_rounds,
                split=split,
            )
        except BetterModelExistsError as exc:
            raise click.ClickException(str(exc)) from exc
        bar.set_postfix_str("early stop" if bar.n < max_rounds else "done")
    card = saved.card
    m = card.holdout
    click.echo(
        f"model {card.version} trained on {card.data.train_rows:,} trips in "
        f"{card.training_seconds:.1f} s\n"
        f"held-out {m.count:,} trips ({held_out(card)}): RMSLE {m.rmsle:.4f}, MAE {m.mae:.0f} s, "
        f"median APE {m.median_ape:.1%}, within ±30% {m.within_30:.1%}"
    )
    if saved.replaced_rmsle is not None:
        click.echo(f"replaced a model scoring RMSLE {saved.replaced_rmsle:.4f} on the same trips")
    click.echo(f"wrote {saved.model_path}, its card and the report {saved.report_path}")


def held_out(card: ModelCard) -> str:
    """Which trips a card's held-out figures are on, in words."""
    if card.data.cutoff is None:
        return "a random fifth"
    return f"picked up from {card.data.cutoff} on"


def _train_if_missing(data: Path, model: Path, force: bool) -> None:
    if force:
        raise click.UsageError("--force and --if-missing contradict each other.")
    # ensure_model looks for train.csv in a folder, as `taxi up --data-dir` does.
    if data.name != DEFAULT_TRAIN_DATA.name:
        raise click.UsageError(f"with --if-missing, --data must be a file named train.csv: {data}")
    try:
        version = ensure_model(model, data.parent, click.echo)
    except (ModelLoadError, CsvSchemaError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model {version} is at {model}")


@click.command()
@model_option
@data_option("Kaggle-schema train CSV (optionally .gz) with true durations.")
def evaluate(model: Path, data: Path) -> None:
    """Evaluate a model on labelled trips and print its metrics as JSON."""
    try:
        loaded = load_model(model)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    trips = _read_labelled(data)
    metrics = evaluate_model(loaded, trips.frame)
    report = {"model_version": loaded.version, "data": str(data), **metrics.to_dict()}
    click.echo(json.dumps(report, indent=2))
