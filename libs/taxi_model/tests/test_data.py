import gzip
import itertools
import re
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxi_model import _data as data
from taxi_model._data import TEST_COLUMNS, TRAIN_COLUMNS, CsvSchemaError, read_trips
from taxi_model._synth import generate_trips

GOOD = generate_trips(rows=40, seed=3)
HEADER = ",".join(TRAIN_COLUMNS)
_fresh_ids = itertools.count(9_000_000)


def good_lines(frame: pd.DataFrame = GOOD) -> list[str]:
    text = frame.to_csv(index=False, header=False, float_format="%.17g", lineterminator="\n")
    return text.splitlines()


def fields(line: str) -> dict[str, str]:
    return dict(zip(TRAIN_COLUMNS, line.split(","), strict=True))


def bad_line(reason: str, template: str) -> str:
    """A row that fails in exactly one way, with an id of its own (except duplicates)."""
    if reason == "duplicate_id":
        return template
    row = fields(template) | {"id": f"id{next(_fresh_ids)}"}
    mismatch = str(int(row["trip_duration"]) + 1)
    edits = {
        "non_numeric": {"pickup_latitude": "abc"},
        "non_numeric_nan": {"dropoff_longitude": "nan"},
        "missing_value": {"passenger_count": ""},
        "bad_datetime": {"pickup_datetime": "2016-02-30 08:00:00"},
        "bad_vendor_id": {"vendor_id": "3"},
        "bad_passenger_count": {"passenger_count": "12"},
        "bad_store_and_fwd_flag": {"store_and_fwd_flag": "X"},
        "bad_trip_duration": {"trip_duration": "0"},
        "duration_mismatch": {"trip_duration": mismatch},
    }
    if reason in edits:
        return ",".join((row | edits[reason]).values())
    if reason == "too_many_fields":
        return ",".join(row.values()) + ",extra"
    assert reason == "too_few_fields"
    return ",".join(list(row.values())[:-1])


BAD_KINDS = (
    "non_numeric",
    "non_numeric_nan",
    "missing_value",
    "bad_datetime",
    "bad_vendor_id",
    "bad_passenger_count",
    "bad_store_and_fwd_flag",
    "bad_trip_duration",
    "duration_mismatch",
    "too_many_fields",
    "too_few_fields",
    "duplicate_id",
)
REASON = {
    "non_numeric_nan": "non_numeric",
    "too_many_fields": "wrong_field_count",
    "too_few_fields": "wrong_field_count",
}


def write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    text = "\n".join([header, *lines]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def core(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(TRAIN_COLUMNS)].sort_values("id").reset_index(drop=True)


def test_reads_the_real_sample(real_sample_path):
    trips = read_trips(real_sample_path)
    report, frame = trips.report, trips.frame
    assert trips.kind == report.kind == "train"
    assert (report.rows_read, report.rows_kept, report.dropped) == (73_177, 73_177, {})
    # Kaggle's raw outliers are kept, but flagged
    assert report.flagged == {
        "pickup_outside_nyc": 6,
        "dropoff_outside_nyc": 26,
        "duration_over_6h": 111,
        "duration_under_60s": 434,
    }
    for reason, n in report.flagged.items():
        assert frame[f"flag_{reason}"].sum() == n
    assert list(frame.columns[:11]) == list(TRAIN_COLUMNS)
    assert frame.dtypes.astype(str).to_dict() == {
        "id": "str",
        "vendor_id": "int8",
        "pickup_datetime": "datetime64[s]",
        "dropoff_datetime": "datetime64[s]",
        "passenger_count": "int8",
        "pickup_longitude": "float64",
        "pickup_latitude": "float64",
        "dropoff_longitude": "float64",
        "dropoff_latitude": "float64",
        "store_and_fwd_flag": "category",
        "trip_duration": "int32",
        "source": "category",
        "flag_pickup_outside_nyc": "bool",
        "flag_dropoff_outside_nyc": "bool",
        "flag_duration_over_6h": "bool",
        "flag_duration_under_60s": "bool",
    }
    assert frame["id"].iloc[0] == "id2070428"
    assert frame["pickup_latitude"].iloc[0] == np.float32(40.742420196533203)
    assert (frame["source"] == "train").all()
    assert frame["trip_duration"].median() == 661
    assert report.summary().startswith("73,177 train rows read, 73,177 kept; dropped: none;")


def test_test_file_has_no_dropoff_or_duration(tmp_path):
    lines = [",".join(fields(line)[c] for c in TEST_COLUMNS) for line in good_lines()]
    path = write(tmp_path / "test.csv", lines, header=",".join(TEST_COLUMNS))
    trips = read_trips(path)
    assert trips.kind == "test"
    assert list(trips.frame.columns) == [
        *TEST_COLUMNS,
        "source",
        "flag_pickup_outside_nyc",
        "flag_dropoff_outside_nyc",
    ]
    assert (trips.frame["source"] == "test").all()
    assert trips.report.rows_kept == len(GOOD)
    pd.testing.assert_frame_equal(trips.frame[list(TEST_COLUMNS)], GOOD[list(TEST_COLUMNS)])


@pytest.mark.parametrize(
    ("header", "kind", "message"),
    [
        (HEADER.replace(",trip_duration", ""), "auto", "missing columns ['trip_duration']"),
        (HEADER.replace("vendor_id", "vendor"), "auto", "unexpected columns ['vendor']"),
        (HEADER + ",fare", "auto", "Kaggle's train.csv"),
        (",".join(TEST_COLUMNS) + ",extra", "auto", "Kaggle's test.csv"),
        (",".join(TEST_COLUMNS), "train", "header of Kaggle's test.csv, but a train file"),
        (HEADER, "test", "header of Kaggle's train.csv, but a test file"),
        (",".join(reversed(TRAIN_COLUMNS)), "auto", "wrong order"),
        ("a;b;c", "auto", "missing columns"),
    ],
)
def test_a_wrong_header_is_a_schema_error(tmp_path, header, kind, message):
    path = write(tmp_path / "trips.csv", good_lines()[:2], header=header)
    with pytest.raises(CsvSchemaError, match=re.escape(message)):
        read_trips(path, kind)


def test_an_empty_file_is_a_schema_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(CsvSchemaError, match="empty"):
        read_trips(path)


def test_a_zip_archive_is_a_schema_error_with_a_hint(tmp_path):
    path = tmp_path / "train.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.csv", HEADER + "\n")
    with pytest.raises(CsvSchemaError, match="unzip"):
        read_trips(path)


def test_a_file_of_only_bad_rows_gives_an_empty_frame(tmp_path):
    lines = [
        bad_line("too_many_fields", good_lines()[0]),
        bad_line("too_few_fields", good_lines()[1]),
    ]
    trips = read_trips(write(tmp_path / "train.csv", lines))
    assert len(trips.frame) == 0
    assert trips.report.dropped == {"wrong_field_count": 2}


def test_header_only_gives_an_empty_frame(tmp_path):
    trips = read_trips(write(tmp_path / "train.csv", []))
    assert len(trips.frame) == 0
    assert (trips.report.rows_read, trips.report.dropped, trips.report.flagged) == (0, {}, {})
    assert list(trips.frame.columns[:11]) == list(TRAIN_COLUMNS)


def test_each_kind_of_bad_row_is_counted_and_good_rows_survive(tmp_path):
    lines = good_lines()
    bad = [bad_line(kind, lines[0]) for kind in BAD_KINDS]
    # flagged, not dropped: a pickup far outside New York
    outside = fields(lines[-1]) | {"pickup_latitude": "0", "pickup_longitude": "0"}
    good_frame = GOOD.copy()
    good_frame.loc[len(GOOD) - 1, ["pickup_latitude", "pickup_longitude"]] = 0.0
    mixed = [*lines[:-1], ",".join(outside.values())]
    mixed[5:5] = bad  # bad rows are data rows 6..17
    trips = read_trips(write(tmp_path / "train.csv", mixed))

    report = trips.report
    assert report.dropped == {
        "wrong_field_count": 2,
        "missing_value": 1,
        "non_numeric": 2,
        "bad_datetime": 1,
        "bad_vendor_id": 1,
        "bad_passenger_count": 1,
        "bad_store_and_fwd_flag": 1,
        "bad_trip_duration": 1,
        "duration_mismatch": 1,
        "duplicate_id": 1,
    }
    assert report.flagged["pickup_outside_nyc"] == 1
    assert (report.rows_read, report.rows_kept) == (len(mixed), len(GOOD))
    assert report.examples["non_numeric"] == (6, 7)
    assert report.examples["wrong_field_count"] == (15, 16)
    assert report.examples["duplicate_id"] == (17,)
    pd.testing.assert_frame_equal(core(trips.frame), core(good_frame))
    assert "duplicate_id                     1  (rows 17)" in report.describe()


@pytest.mark.parametrize(
    ("name", "gz"), [("train.csv.gz", True), ("train.csv", False), ("gzipped-train.csv", True)]
)
def test_gzip_is_detected_from_the_content(tmp_path, name, gz):
    lines = [*good_lines(), bad_line("non_numeric", good_lines()[0])]
    path = tmp_path / name
    text = "\n".join([HEADER, *lines]) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    trips = read_trips(path)
    assert trips.report.dropped == {"non_numeric": 1}
    pd.testing.assert_frame_equal(core(trips.frame), core(GOOD))


def test_an_extra_field_in_the_first_row_is_not_taken_for_an_index(tmp_path):
    # pandas would silently read the first column as the index and shift every other one
    lines = good_lines()
    lines[0] += ",extra"
    trips = read_trips(write(tmp_path / "train.csv", lines))
    assert trips.report.dropped == {"wrong_field_count": 1}
    assert trips.report.examples == {"wrong_field_count": (1,)}
    pd.testing.assert_frame_equal(core(trips.frame), core(GOOD.iloc[1:]))


def test_blank_lines_crlf_and_a_byte_order_mark_are_harmless(tmp_path):
    lines = good_lines()
    text = "\ufeff" + HEADER + "\r\n" + "\r\n".join([*lines[:3], "", "  ", *lines[3:]]) + "\r\n"
    path = tmp_path / "train.csv"
    path.write_text(text, newline="")
    trips = read_trips(path)
    assert (trips.report.rows_read, trips.report.dropped) == (len(GOOD), {})
    pd.testing.assert_frame_equal(core(trips.frame), core(GOOD))


def test_words_pandas_reads_as_missing_are_ordinary_ids(tmp_path):
    lines = good_lines()
    lines[2] = ",".join((fields(lines[2]) | {"id": "NA"}).values())
    trips = read_trips(write(tmp_path / "train.csv", lines))
    assert trips.report.dropped == {}
    assert trips.frame["id"].iloc[2] == "NA"


def test_undecodable_bytes_cost_only_their_row(tmp_path):
    path = tmp_path / "train.csv"
    bad = fields(good_lines()[0]) | {"id": "id8000000", "vendor_id": "\xff"}
    path.write_bytes(
        "\n".join([HEADER, *good_lines(), ""]).encode() + ",".join(bad.values()).encode("latin-1")
    )
    trips = read_trips(path)
    assert trips.report.dropped == {"non_numeric": 1}
    assert trips.report.rows_kept == len(GOOD)


def test_both_routes_read_a_file_the_same(tmp_path, monkeypatch):
    # One garbled row sends the whole file down the line-by-line route; small chunks make
    # that route mix clean chunks (typed parse) and the garbled one (coerced parse).
    monkeypatch.setattr(data, "ROBUST_CHUNK_ROWS", 7)
    lines = good_lines()
    # pandas reads True as 1 into a number column; the coerced parse must agree
    lines[-1] = ",".join((fields(lines[-1]) | {"passenger_count": "True"}).values())
    clean = read_trips(write(tmp_path / "clean.csv", lines))
    garbled = read_trips(
        write(tmp_path / "garbled.csv", [*lines, bad_line("non_numeric", lines[0])])
    )
    assert garbled.report.dropped == {"non_numeric": 1}
    assert garbled.report.flagged == clean.report.flagged
    pd.testing.assert_frame_equal(garbled.frame, clean.frame)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    injected=st.lists(
        st.tuples(st.sampled_from(BAD_KINDS), st.integers(0, len(GOOD) - 1), st.integers(0, 60)),
        max_size=15,
    ),
    chunk_rows=st.sampled_from([4, 50_000]),
    gz=st.booleans(),
)
def test_any_mix_of_bad_rows_is_counted_exactly(injected, chunk_rows, gz):
    lines = good_lines()
    mixed = list(lines)
    for kind, template, position in injected:
        mixed.insert(min(position, len(mixed)), bad_line(kind, lines[template]))
    with (
        mock.patch.object(data, "ROBUST_CHUNK_ROWS", chunk_rows),
        tempfile.TemporaryDirectory() as folder,
    ):
        trips = read_trips(write(Path(folder) / ("t.csv.gz" if gz else "t.csv"), mixed))

    expected = Counter(REASON.get(kind, kind) for kind, _, _ in injected)
    assert trips.report.dropped == dict(expected)
    assert trips.report.rows_read == len(mixed)
    assert trips.report.rows_kept == len(GOOD)
    pd.testing.assert_frame_equal(core(trips.frame), core(GOOD))
