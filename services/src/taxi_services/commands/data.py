"""`taxi data synth` and `taxi data inspect`: write synthetic trips, check trip CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from taxi_model import MAX_ROWS, CsvSchemaError, read_trips, write_synthetic

# Not data/: that is where users put Kaggle's real train.csv and test.csv.
DEFAULT_SYNTH_DIR = Path("data/synthetic")


@click.group()
def data() -> None:
    """Trip data: write synthetic trips, check Kaggle CSV files."""


@data.command()
@click.option(
    "--rows",
    type=click.IntRange(1, MAX_ROWS),
    default=100_000,
    show_default=True,
    show_envvar=True,
    help="Trips in train.csv (Kaggle's has 1,458,644).",
)
@click.option(
    "--test-rows",
    type=click.IntRange(0, MAX_ROWS),
    default=None,
    show_default="Kaggle's ratio, 625,134 per 1,458,644 train rows",
    show_envvar=True,
    help="Trips in test.csv, other than the train trips.",
)
@click.option(
    "--seed", type=int, default=42, show_default=True, show_envvar=True, help="Random seed."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SYNTH_DIR,
    show_default=True,
    show_envvar=True,
    help="Directory for train.csv and test.csv; created if missing.",
)
@click.option(
    "--force",
    is_flag=True,
    show_envvar=True,
    help="Replace train.csv and test.csv if --out has them.",
)
def synth(rows: int, test_rows: int | None, seed: int, out: Path, force: bool) -> None:
    """Write synthetic New York taxi trips as Kaggle-schema train.csv and test.csv.

    For trying the pipeline without Kaggle's download: trips cluster where real ones do
    (Midtown, Downtown, the Upper East and West Sides, the boroughs, JFK and LaGuardia), in
    2016-01-01..2016-06-30, and their durations follow distance, hour and weekday like the
    real ones. The same --rows, --test-rows and --seed always give byte-identical files.

    The default --out is data/synthetic/, not data/, which is where Kaggle's real files go.
    Existing train.csv or test.csv files are never replaced without --force.
    """
    existing = [p for p in (out / "train.csv", out / "test.csv") if p.exists()]
    if existing and not force:
        names = " and ".join(str(p) for p in existing)
        raise click.ClickException(f"{names}: already there; pass --force to replace.")
    try:
        train_path, test_path = write_synthetic(out, rows, seed, test_rows)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {train_path} and {test_path} (seed {seed})")
    click.echo(f"train on them with: uv run taxi train --data {train_path}")


@data.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(["auto", "train", "test"]),
    default="auto",
    show_default=True,
    show_envvar=True,
    help="Which Kaggle file PATH must be; auto decides from its header.",
)
def inspect(path: Path, kind: Literal["auto", "train", "test"]) -> None:
    """Read a Kaggle-schema trip CSV (optionally .gz) and report the rows that would be
    dropped or flagged, by reason, with the first row numbers of each."""
    try:
        trips = read_trips(path, kind)
    except CsvSchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(trips.report.describe())
