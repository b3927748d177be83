"""`taxi months`: real trips month by month, with retraining and without."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click

from taxi_kafka import first_signal_interrupts
from taxi_kafka.cli import env_option
from taxi_model import sample_data_path
from taxi_services.chaos.runner import stop_leftovers
from taxi_services.months import MonthsOptions, run_months
from taxi_services.provenance import provenance

log = logging.getLogger("taxi.months")

option = env_option("months")
INTERRUPTED = 130


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
@option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report to this file.",
)
def months(*, data: Path | None, trips: int, rate: float, keep: bool, report: Path | None) -> None:
    data = data or default_data()
    if data is None:
        raise click.UsageError(
            "no real trips: put Kaggle's train.csv in data/, point $TAXI_SAMPLE_DATA at the"
            " sample, or pass --data (synthetic trips have no seasons to report)"
        )
    options = MonthsOptions(data=data, max_trips=trips, rate=rate, keep=keep)
    load_before = os.getloadavg()
    with first_signal_interrupts():
        try:
            result = run_months(options)
        except KeyboardInterrupt:
            left = stop_leftovers("taxi-months-")
            log.error("interrupted; %s", f"stopped {len(left)}" if left else "nothing left running")
            raise click.exceptions.Exit(INTERRUPTED) from None
    result["environment"] = {
        **provenance(),
        "command": f"uv run taxi months --trips {trips} --rate {rate:g}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(result, indent=2, default=str)
    click.echo(text)
    if report is not None:
        report.write_text(text + "\n")
    if not result["passed"]:
        raise click.exceptions.Exit(1)
