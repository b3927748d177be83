"""The trips the component benchmarks run on: the real Kaggle sample (`TAXI_SAMPLE_DATA`,
default `../shared/data/nyc-taxi/`; or `--data`), else synthetic trips of the same schema."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from taxi_model import generate_trips, read_trips, sample_data_path

REPO = Path(__file__).resolve().parents[1]


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=sample_data_path(REPO),
        help="train CSV (default: the real sample; synthetic trips when it is missing)",
    )


def sample_trips(path: Path, synthetic_rows: int) -> tuple[pd.DataFrame, str]:
    """The trips of `path`, or `synthetic_rows` synthetic ones if there is no such file; and
    which, for the report."""
    if path.is_file():
        return read_trips(path).frame, str(path)
    return generate_trips(rows=synthetic_rows, seed=1), f"synthetic rows={synthetic_rows}"
