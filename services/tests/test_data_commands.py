"""`taxi data synth` and `taxi data inspect`, as a user would run them."""

from pathlib import Path

import pytest


@pytest.mark.usefixtures("in_tmp")
def test_synth_writes_kaggle_files_deterministically(taxi):
    code, output, errors = taxi("data", "synth", "--rows", "500", "--test-rows", "100")
    assert code == 0, errors
    train, test = Path("data/synthetic/train.csv"), Path("data/synthetic/test.csv")
    assert train.read_text().startswith("id,vendor_id,pickup_datetime,dropoff_datetime,")
    assert len(train.read_text().splitlines()) == 501
    assert len(test.read_text().splitlines()) == 101
    assert "taxi train --data data/synthetic/train.csv" in output

    first = train.read_bytes()
    code, _, errors = taxi("data", "synth", "--rows", "500", "--test-rows", "100")
    assert code == 1
    assert "pass --force" in errors
    code, _, errors = taxi("data", "synth", "--rows", "500", "--test-rows", "100", "--force")
    assert code == 0, errors
    assert train.read_bytes() == first


@pytest.mark.usefixtures("in_tmp")
def test_synth_reads_its_options_from_the_environment(taxi):
    env = {"TAXI_DATA_SYNTH_ROWS": "200", "TAXI_DATA_SYNTH_OUT": "elsewhere"}
    code, _, errors = taxi("data", "synth", "--test-rows", "0", env=env)
    assert code == 0, errors
    assert len(Path("elsewhere/train.csv").read_text().splitlines()) == 201


@pytest.mark.usefixtures("in_tmp")
def test_inspect_reports_bad_rows_by_reason(taxi):
    taxi("data", "synth", "--rows", "50", "--test-rows", "0")
    lines = Path("data/synthetic/train.csv").read_text().splitlines()
    lines.append(lines[1])  # the same trip id again
    lines.append("id9999999,1,not a time")  # three fields instead of eleven
    Path("bad.csv").write_text("\n".join(lines) + "\n")
    code, output, errors = taxi("data", "inspect", "bad.csv")
    assert code == 0, errors
    assert "rows read" in output
    assert "wrong_field_count" in output
    assert "duplicate_id" in output
    assert "rows dropped             2" in output.replace(",", "")


@pytest.mark.usefixtures("in_tmp")
def test_inspect_names_a_wrong_header(taxi):
    Path("other.csv").write_text("a,b,c\n1,2,3\n")
    code, _, errors = taxi("data", "inspect", "other.csv")
    assert code == 1
    assert "id" in errors
