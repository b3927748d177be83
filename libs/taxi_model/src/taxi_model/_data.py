"""Reading Kaggle's NYC taxi trip CSVs (train.csv, test.csv, or gzipped copies) into typed frames.

Bad rows never stop the reader: each one is dropped and counted under the first reason that
applies, in this order:

- `wrong_field_count`: not exactly one field per header column
- `missing_value`: an empty field
- `non_numeric`: vendor_id, passenger_count, a coordinate or trip_duration is not a finite number
- `bad_datetime`: a datetime is not a real date and time written as 2016-01-31 23:59:59
- `bad_vendor_id`: not 1 or 2, the only vendors Kaggle's data has
- `bad_passenger_count`: not a whole number from 0 to 9
- `bad_store_and_fwd_flag`: not N or Y
- `bad_trip_duration` (train): not a whole number of seconds from 1 to 2**31 - 1
- `duration_mismatch` (train): trip_duration differs from dropoff_datetime - pickup_datetime.
  One of the three fields is corrupt and there is no telling which, so the row is dropped
  rather than repaired; every row of Kaggle's train.csv agrees to the second.
- `duplicate_id`: an id already read on an earlier good row (the first one is kept)

Suspicious but possible rows are kept and flagged in a boolean column `flag_<reason>`:

- `pickup_outside_nyc`, `dropoff_outside_nyc`: outside `geo.NYC_BOX` (GPS glitches, long trips)
- `duration_over_6h`, `duration_under_60s` (train): meters left running, cancelled trips

Speed: a clean file is parsed in one pass of pandas' C parser with explicit dtypes. Only when
that pass cannot vouch for every row (a parse error, an empty or malformed field) is the file
read again line by line, and then only the chunks of lines with a bad field are parsed the
slow way. Both routes give the same frame and the same report.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from taxi_model import _geo as geo

Kind = Literal["train", "test"]

TRAIN_COLUMNS = (
    "id",
    "vendor_id",
    "pickup_datetime",
    "dropoff_datetime",
    "passenger_count",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
    "store_and_fwd_flag",
    "trip_duration",
)
TEST_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c not in ("dropoff_datetime", "trip_duration"))
COLUMNS: dict[Kind, tuple[str, ...]] = {"train": TRAIN_COLUMNS, "test": TEST_COLUMNS}
COORDINATES = ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude")
NUMERIC = ("vendor_id", "passenger_count", *COORDINATES, "trip_duration")
DATETIMES = ("pickup_datetime", "dropoff_datetime")

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
VENDORS = (1, 2)
FLAG_VALUES = ("N", "Y")
MAX_PASSENGERS = 9
MAX_DURATION_S = 2**31 - 1  # the int32 column's range
SHORT_TRIP_S, LONG_TRIP_S = 60, 6 * 3600

DROP_REASONS = (
    "wrong_field_count",
    "missing_value",
    "non_numeric",
    "bad_datetime",
    "bad_vendor_id",
    "bad_passenger_count",
    "bad_store_and_fwd_flag",
    "bad_trip_duration",
    "duration_mismatch",
    "duplicate_id",
)
# Frame dtypes after validation; ids stay str and datetimes become datetime64[s].
FINAL_DTYPES: dict[str, type[np.generic] | pd.CategoricalDtype] = {
    "vendor_id": np.int8,
    "passenger_count": np.int8,
    **dict.fromkeys(COORDINATES, np.float64),
    "store_and_fwd_flag": pd.CategoricalDtype(list(FLAG_VALUES)),
    "trip_duration": np.int32,
}
EXAMPLES_PER_REASON = 5
ROBUST_CHUNK_ROWS = 50_000

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


class CsvSchemaError(ValueError):
    """The file's header is not Kaggle's train or test header (or not the kind asked for)."""


@dataclass(frozen=True)
class LoadReport:
    """What happened to the rows of one file.

    `dropped` and `flagged` map reasons (see the module docstring) to row counts and list only
    reasons that occurred. `examples` holds the first few row numbers dropped for each reason;
    rows count from 1 after the header and skip blank lines, so row n is line n + 1 of a file
    without blank lines.
    """

    path: str
    kind: Kind
    rows_read: int
    rows_kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    examples: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def rows_dropped(self) -> int:
        return self.rows_read - self.rows_kept

    def summary(self) -> str:
        """One line for logs."""

        def counts(reasons: dict[str, int]) -> str:
            return ", ".join(f"{n:,} {reason}" for reason, n in reasons.items()) or "none"

        return (
            f"{self.rows_read:,} {self.kind} rows read, {self.rows_kept:,} kept; "
            f"dropped: {counts(self.dropped)}; flagged: {counts(self.flagged)}"
        )

    def describe(self) -> str:
        """A multi-line report with row numbers of dropped rows, for people."""
        lines = [
            f"{self.path}: Kaggle {self.kind} file",
            f"  rows read     {self.rows_read:>12,}",
            f"  rows kept     {self.rows_kept:>12,}",
            f"  rows dropped  {self.rows_dropped:>12,}",
        ]
        for reason, n in self.dropped.items():
            rows = ", ".join(map(str, self.examples.get(reason, ())))
            more = ", ..." if n > len(self.examples.get(reason, ())) else ""
            lines.append(f"    {reason:<24}{n:>10,}  (rows {rows}{more})")
        lines.append(f"  rows flagged (kept), by reason:{'' if self.flagged else ' none'}")
        lines.extend(f"    {reason:<24}{n:>10,}" for reason, n in self.flagged.items())
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class TripData:
    """Trips read from one file.

    `frame` has the file's Kaggle columns in Kaggle's order: id (str), vendor_id (int8),
    pickup_datetime and, for train, dropoff_datetime (datetime64[s]), passenger_count (int8),
    the four coordinates (float64), store_and_fwd_flag (category N/Y) and, for train,
    trip_duration (int32 seconds); then `source` (category train/test) and one bool column
    `flag_<reason>` per flag reason of the kind. The index is 0..n-1 in file order.
    """

    frame: pd.DataFrame
    kind: Kind
    report: LoadReport


def read_trips(path: str | Path, kind: Literal["auto", "train", "test"] = "auto") -> TripData:
    """Read a Kaggle train or test CSV (gzip is detected from the content), drop and flag bad
    rows, and report on them. `kind="auto"` decides from the header.

    Raises CsvSchemaError for a header that is not the expected one, never for bad rows.
    """
    path = Path(path)
    header = _read_header(path)
    file_kind = _kind_of(header, kind, path)
    columns = COLUMNS[file_kind]
    try:
        parsed = _Parsed.whole(_parse_typed(path, columns, _compression(path), has_header=True))
    except _UnvouchedParseError:
        parsed = _parse_line_by_line(path, columns)
    frame, report = _validate(parsed, file_kind, str(path))
    return TripData(frame=frame, kind=file_kind, report=report)


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    # Undecodable bytes become U+FFFD so that they count against their row instead of raising.
    opener = gzip.open if _compression(path) == "gzip" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        yield f


def _compression(path: Path) -> Literal["gzip"] | None:
    with path.open("rb") as f:
        return "gzip" if f.read(2) == b"\x1f\x8b" else None


def _read_header(path: Path) -> list[str]:
    with _open_text(path) as f:
        first = f.readline()
    if not first.strip():
        raise CsvSchemaError(f"{path} is empty: expected a Kaggle train.csv or test.csv header")
    if first.startswith("PK\x03\x04"):
        raise CsvSchemaError(
            f"{path} is a zip archive; unzip it (Kaggle's train.zip holds train.csv)"
        )
    # Excel and some editors save CSVs with a byte-order mark.
    return first.removeprefix("\ufeff").rstrip("\r\n").split(",")


def _kind_of(header: list[str], wanted: Literal["auto", "train", "test"], path: Path) -> Kind:
    for kind, columns in COLUMNS.items():
        if header == list(columns):
            if wanted not in ("auto", kind):
                raise CsvSchemaError(
                    f"{path} has the header of Kaggle's {kind}.csv, "
                    f"but a {wanted} file was expected"
                )
            return kind

    def mismatch(kind: Kind) -> tuple[list[str], list[str]]:
        missing = [c for c in COLUMNS[kind] if c not in header]
        unexpected = [c for c in header if c not in COLUMNS[kind]]
        return missing, unexpected

    # Explain the difference from the file it most resembles (or the kind asked for).
    closest: Kind = (
        wanted if wanted != "auto" else min(COLUMNS, key=lambda k: sum(map(len, mismatch(k))))
    )
    missing, unexpected = mismatch(closest)
    problems = [f"missing columns {missing}"] if missing else []
    problems += [f"unexpected columns {unexpected}"] if unexpected else []
    if not problems:
        problems = ["the right columns in the wrong order or repeated"]
    raise CsvSchemaError(
        f"{path} does not have the header of Kaggle's {closest}.csv, which it most resembles: "
        f"{'; '.join(problems)}. Expected: {','.join(COLUMNS[closest])}"
    )


class _UnvouchedParseError(Exception):
    """The one-pass parse cannot guarantee that every row was read as written."""


def _parse_typed(
    source: Path | IO[bytes],
    columns: Sequence[str],
    compression: Literal["gzip"] | None,
    *,
    has_header: bool,
) -> pd.DataFrame:
    """Parse with explicit dtypes (numbers as float64, the rest as str) in one C-parser pass."""
    dtypes = {c: np.float64 if c in NUMERIC else str for c in columns}
    try:
        frame = pd.read_csv(
            source,
            header=0 if has_header else None,
            names=list(columns),
            dtype=dtypes,
            engine="c",
            compression=compression,
            quoting=csv.QUOTE_NONE,
            encoding="utf-8",
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _UnvouchedParseError from exc
    # NaN means an empty field, a short row or a word like "NA"; a non-range index means pandas
    # took a first row with too many fields as having an index column. Only the slow path
    # can tell these apart.
    if not isinstance(frame.index, pd.RangeIndex) or frame.isna().any(axis=None):
        raise _UnvouchedParseError
    return frame


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.float64 if c in NUMERIC else str) for c in columns})


# pandas' C parser reads these words as 1 and 0 even into float columns; the coerced parse
# must read them the same way for both routes to agree.
_C_PARSER_BOOLEANS = dict.fromkeys(("True", "TRUE", "true"), 1.0) | dict.fromkeys(
    ("False", "FALSE", "false"), 0.0
)


def _parse_coerced(lines: Sequence[str], columns: Sequence[str]) -> tuple[pd.DataFrame, BoolArray]:
    """Parse lines that have the right number of fields, turning bad numbers into NaN; also
    return which rows have an empty field (the only route by which "" reaches validation)."""
    text = pd.read_csv(
        io.StringIO("\n".join(lines)),
        header=None,
        names=list(columns),
        dtype=str,
        keep_default_na=False,  # keep "" (missing) apart from "abc" (not a number)
        engine="c",
        quoting=csv.QUOTE_NONE,
    )
    missing = (text == "").any(axis=1).to_numpy()
    for column in NUMERIC:
        if column in text:
            words = text[column]
            numbers = pd.to_numeric(words, errors="coerce").astype(np.float64)
            text[column] = numbers.fillna(words.map(_C_PARSER_BOOLEANS))
    return text, missing


@dataclass(frozen=True)
class _Parsed:
    """Parsed rows plus what the parse alone can tell about rows that failed."""

    frame: pd.DataFrame  # numbers as float64 (NaN where unparseable), the rest as str
    row: IntArray  # 1-based row number of each frame row
    missing: BoolArray  # row has an empty field
    wrong_field_count: IntArray  # row numbers of rows that could not be split into fields
    rows_read: int

    @classmethod
    def whole(cls, frame: pd.DataFrame) -> _Parsed:
        n = len(frame)
        return cls(frame, np.arange(1, n + 1), np.zeros(n, bool), np.empty(0, np.int64), n)


def _parse_line_by_line(path: Path, columns: Sequence[str]) -> _Parsed:
    with _open_text(path) as f:
        # the C parser ends lines at \n, \r\n or \r and skips blank ones; so do we
        lines = f.read().replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:]
    lines = [line for line in lines if line.strip()]
    commas = np.fromiter((line.count(",") for line in lines), np.int64, count=len(lines))
    fits = commas == len(columns) - 1
    row = np.arange(1, len(lines) + 1)
    good = [lines[i] for i in np.flatnonzero(fits)]

    frames: list[pd.DataFrame] = []
    missing: list[BoolArray] = [np.zeros(0, bool)]  # so that no good lines concatenate too
    for start in range(0, len(good), ROBUST_CHUNK_ROWS):
        chunk = good[start : start + ROBUST_CHUNK_ROWS]
        try:
            buffer = io.BytesIO("\n".join(chunk).encode("utf-8"))
            frame = _parse_typed(buffer, columns, None, has_header=False)
            chunk_missing = np.zeros(len(chunk), bool)
        except _UnvouchedParseError:
            frame, chunk_missing = _parse_coerced(chunk, columns)
        frames.append(frame)
        missing.append(chunk_missing)
    return _Parsed(
        frame=pd.concat(frames, ignore_index=True) if frames else _empty(columns),
        row=row[fits],
        missing=np.concatenate(missing),
        wrong_field_count=row[~fits],
        rows_read=len(lines),
    )


def _is_whole(x: npt.NDArray[np.float64], low: float, high: float) -> BoolArray:
    whole: BoolArray = (x >= low) & (x <= high) & (np.floor(x) == x)  # numpy types == Any
    return whole


def _validate(parsed: _Parsed, kind: Kind, path: str) -> tuple[pd.DataFrame, LoadReport]:
    raw = parsed.frame
    train = kind == "train"
    num = {c: raw[c].to_numpy(np.float64) for c in NUMERIC if c in raw}
    at = {
        c: pd.to_datetime(raw[c], format=DATETIME_FORMAT, errors="coerce")
        for c in DATETIMES
        if c in raw
    }

    checks: list[tuple[str, BoolArray]] = [
        ("missing_value", parsed.missing),
        ("non_numeric", ~np.isfinite(np.column_stack(list(num.values()))).all(axis=1)),
        ("bad_datetime", np.logical_or.reduce([t.isna().to_numpy() for t in at.values()])),
        ("bad_vendor_id", ~np.isin(num["vendor_id"], VENDORS)),
        ("bad_passenger_count", ~_is_whole(num["passenger_count"], 0, MAX_PASSENGERS)),
        ("bad_store_and_fwd_flag", ~raw["store_and_fwd_flag"].isin(FLAG_VALUES).to_numpy()),
    ]
    if train:
        elapsed = (at["dropoff_datetime"] - at["pickup_datetime"]).dt.total_seconds().to_numpy()
        checks += [
            ("bad_trip_duration", ~_is_whole(num["trip_duration"], 1, MAX_DURATION_S)),
            ("duration_mismatch", elapsed != num["trip_duration"]),
        ]

    dropped: dict[str, int] = {}
    examples: dict[str, tuple[int, ...]] = {}

    def count(reason: str, rows: IntArray) -> None:
        if rows.size:
            dropped[reason] = int(rows.size)
            examples[reason] = tuple(int(r) for r in rows[:EXAMPLES_PER_REASON])

    count("wrong_field_count", parsed.wrong_field_count)
    keep = np.ones(len(raw), bool)
    for reason, bad in checks:
        hit = bad & keep
        count(reason, parsed.row[hit])
        keep &= ~hit
    # Only rows that passed every other check claim their id, so a garbled row cannot
    # push out a good duplicate that follows it.
    duplicate = np.zeros(len(raw), bool)
    duplicate[keep] = raw["id"][keep].duplicated().to_numpy()
    count("duplicate_id", parsed.row[duplicate])
    keep &= ~duplicate

    frame = pd.DataFrame(
        {
            c: (
                at[c][keep].astype("datetime64[s]")
                if c in at
                else raw[c][keep].astype(FINAL_DTYPES.get(c, str))
            )
            for c in COLUMNS[kind]
        }
    ).reset_index(drop=True)
    sources = ["train", "test"]
    codes = np.full(len(frame), sources.index(kind), np.int8)
    frame["source"] = pd.Categorical.from_codes(codes, categories=pd.Index(sources))
    flags = _flags(frame, train)
    for reason, mask in flags.items():
        frame[f"flag_{reason}"] = mask
    report = LoadReport(
        path=path,
        kind=kind,
        rows_read=parsed.rows_read,
        rows_kept=len(frame),
        dropped={r: dropped[r] for r in DROP_REASONS if r in dropped},
        flagged={r: int(m.sum()) for r, m in flags.items() if m.any()},
        examples=examples,
    )
    return frame, report


def _flags(frame: pd.DataFrame, train: bool) -> dict[str, BoolArray]:
    flags = {
        f"{end}_outside_nyc": ~geo.NYC_BOX.contains(
            frame[f"{end}_latitude"], frame[f"{end}_longitude"]
        )
        for end in ("pickup", "dropoff")
    }
    if train:
        seconds = frame["trip_duration"].to_numpy()
        flags["duration_over_6h"] = seconds > LONG_TRIP_S
        flags["duration_under_60s"] = seconds < SHORT_TRIP_S
    return flags


# The real Kaggle rows the tests and the component benchmarks use when they are there: a
# folder holding SAMPLE_FILE, or a train CSV itself. Defined here only, overridable by the variable.
SAMPLE_DATA_VARIABLE = "TAXI_SAMPLE_DATA"
SAMPLE_DATA_DEFAULT = "../shared/data/nyc-taxi/"
SAMPLE_FILE = "train-sample0.05.csv.gz"


def sample_data_path(repo_root: Path) -> Path:
    """The real Kaggle sample: $TAXI_SAMPLE_DATA, else `../shared/data/nyc-taxi/`, a relative
    path being taken from `repo_root`. A folder stands for its `train-sample0.05.csv.gz`. The
    file may not exist: callers fall back to synthetic trips or skip, saying where they looked."""
    path = Path(os.environ.get(SAMPLE_DATA_VARIABLE) or SAMPLE_DATA_DEFAULT).expanduser()
    if not path.is_absolute():
        path = repo_root / path
    return path / SAMPLE_FILE if path.is_dir() else path
