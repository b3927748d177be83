"""How fast `read_trips` reads a Kaggle-sized train.csv, against a bare `pd.read_csv`.

Writes a synthetic train.csv once (cached in the temp directory), then times, best of
--repeat runs each:
- baseline: `pd.read_csv(path)`, no dtypes, no datetime parsing, no validation
- read_trips on the clean file (the one-pass route real Kaggle files take)
- read_trips on a copy with one garbled row appended (the line-by-line route)
and prints one JSON object.

    uv run python benchmarks/bench_read_csv.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from timing import timed

from taxi_model import read_trips, write_synthetic

KAGGLE_TRAIN_ROWS = 1_458_644
GARBLED_ROW = "id9999999,2,2016-03-14 17:24:55,2016-03-14 17:32:30,1,abc,40.7,-73.9,40.7,N,455\n"


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    return min(timed(run, repeat))


def synthetic_files(rows: int, seed: int) -> tuple[Path, Path]:
    """The clean train.csv and its garbled copy, written on first use."""
    folder = Path(tempfile.gettempdir()) / "taxi-bench" / f"train-{rows}-seed{seed}"
    clean, garbled = folder / "train.csv", folder / "train-garbled.csv"
    if not garbled.exists():
        write_synthetic(folder, rows, seed, test_rows=0)
        shutil.copyfile(clean, garbled)
        with garbled.open("a", encoding="utf-8") as f:
            f.write(GARBLED_ROW)
    return clean, garbled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=KAGGLE_TRAIN_ROWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    args = parser.parse_args()

    clean, garbled = synthetic_files(args.rows, args.seed)
    baseline = best_seconds(lambda: pd.read_csv(clean), args.repeat)
    seconds = best_seconds(lambda: read_trips(clean), args.repeat)
    robust = best_seconds(lambda: read_trips(garbled), args.repeat)
    report = read_trips(garbled).report
    assert report.dropped == {"non_numeric": 1}, report.summary()
    print(
        json.dumps(
            {
                "rows": args.rows,
                "file_mb": round(clean.stat().st_size / 1e6, 1),
                "seconds": round(seconds, 3),
                "rows_per_s": round(args.rows / seconds),
                "baseline_seconds": round(baseline, 3),
                "ratio": round(seconds / baseline, 2),
                "one_bad_row_seconds": round(robust, 3),
                "pandas": pd.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
