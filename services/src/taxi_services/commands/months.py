"""`taxi months`: real trips month by month, with retraining and without."""

from __future__ import annotations

from pathlib import Path

import click

from taxi_kafka.cli import env_option
from taxi_model import sample_data_path
from taxi_services.commands._report import REPORT_OPTION, run_and_report
from taxi_services.months import MonthsOptions, run_months

option = env_option("months")


def default_data() -> Path | None:
    """data/train.csv, else the real Kaggle sample; None if neither is there. Relative paths
    are taken from where the command runs, as data/ is."""
    for path in (Path("data/train.csv"), sample_data_path(Path.cwd())):
        if path.is_file():
            return path
    return None


@click.command(
    help="""Replay real trips, January to June in pickup order, from a model trained on January
only, with retraining and without; report the RMSLE month by month.

The model learns from the earliest 80% of January's trips; the replay starts where it stopped,
so every trip scored is one it never saw. Each run is on a fresh 3-broker cluster in a temporary
folder, the services as real processes: first the producer, the predictor and the aggregator
alone (the January model serves every month), then with the trainer and its automatic
promotion at their defaults. The aggregator leaves week_hour out of its data-drift check: in
pickup order a window of trips spans days, not the profile's week.

Prints one JSON object: the January model, each month's RMSLE in both runs and which models
served it, what the loop did and when (in replay time), and every trip counted exactly once.
Exits 1 if a run failed or a trip was lost or doubled. Needs real trips: data/train.csv, or
the Kaggle sample ($TAXI_SAMPLE_DATA).
"""
)
@option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Kaggle train CSV (optionally .gz) [default: data/train.csv, else the Kaggle sample].",
)
@option(
    "--trips",
    type=click.IntRange(1_000),
    default=75_000,
    help="At most this many of the file's trips, drawn at random (seeded): the sample's size.",
)
@option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=300.0,
    help="Trips started per second.",
)
@option("--keep", is_flag=True, help="Keep the runs' folders: clusters, trips, service logs.")
@option("--report", **REPORT_OPTION)
def months(*, data: Path | None, trips: int, rate: float, keep: bool, report: Path | None) -> None:
    data = data or default_data()
    if data is None:
        raise click.UsageError(
            "no real trips: put Kaggle's train.csv in data/, point $TAXI_SAMPLE_DATA at the"
            " sample, or pass --data (synthetic trips have no seasons to report)"
        )
    options = MonthsOptions(data=data, max_trips=trips, rate=rate, keep=keep)
    run_and_report(
        lambda: run_months(options),
        marker="taxi-months-",
        command=f"uv run taxi months --trips {trips} --rate {rate:g}",
        report=report,
    )
