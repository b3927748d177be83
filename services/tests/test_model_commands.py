"""`taxi train` and `taxi evaluate`, driven as a user would, on small synthetic files."""

import json
import shutil
from pathlib import Path

import pytest

from taxi_model import card_path, write_synthetic
from taxi_services.cli import COMMANDS


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, rows=3000, seed=3, test_rows=200)
    return out


def test_help_lists_the_commands(taxi):
    code, output, _errors = taxi("--help")
    assert code == 0
    for command in ("data", "train", "evaluate"):
        assert command in output


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help(taxi, command):
    code, output, errors = taxi(command, "--help")
    assert code == 0, errors
    assert output.startswith(f"Usage: cli {command} [OPTIONS]")


@pytest.mark.usefixtures("in_tmp")
def test_train_then_evaluate(taxi, synthetic_dir):
    train_csv = str(synthetic_dir / "train.csv")
    code, output, errors = taxi("train", "--data", train_csv)
    assert code == 0, errors
    card = json.loads(Path("models/taxi_pipeline.json").read_text())
    cutoff = card["data"]["cutoff"]
    held_out = card["data"]["holdout_rows"]
    assert f"held-out {held_out} trips (picked up from {cutoff} on): RMSLE" in output
    assert Path("models/taxi_pipeline.png").is_file()

    code, output, errors = taxi("evaluate", "--data", train_csv)
    assert code == 0, errors
    report = json.loads(output)
    assert report["model_version"] == card["version"]
    assert report["count"] == 3000
    assert set(report) >= {"rmsle", "mae", "median_ape", "within_30"}

    # Held out on other trips, the old model is not scored: it learnt from some of them.
    code, output, errors = taxi("train", "--data", train_csv, "--split", "random")
    assert code == 0, errors
    assert "held-out 600 trips (a random fifth): RMSLE" in output
    assert "without comparing the two: it held out other trips (time split from" in errors
    assert "replaced a model scoring" not in output

    code, output, errors = taxi("train", "--data", train_csv, "--split", "random")
    assert code == 0, errors
    assert "replaced a model scoring RMSLE" in output


@pytest.mark.usefixtures("in_tmp")
def test_train_without_data_says_where_to_get_it(taxi):
    code, _output, errors = taxi("train")
    assert code == 1
    assert "no trip data at data/train.csv" in errors
    assert "taxi data synth" in errors


@pytest.mark.usefixtures("in_tmp")
def test_train_on_a_test_file_is_refused(taxi, synthetic_dir):
    code, _output, errors = taxi("train", "--data", str(synthetic_dir / "test.csv"))
    assert code == 1
    assert "no trip durations" in errors


@pytest.mark.usefixtures("in_tmp")
def test_evaluate_without_a_model_says_how_to_train(taxi, synthetic_dir):
    code, _output, errors = taxi("evaluate", "--data", str(synthetic_dir / "train.csv"))
    assert code == 1
    assert "no model at models/taxi_pipeline.skops" in errors
    assert "taxi train" in errors


def test_train_if_missing_keeps_the_model_in_place(taxi, in_tmp, trained_model_path):
    models = in_tmp / "models"
    models.mkdir()
    for path in (trained_model_path, card_path(trained_model_path)):
        shutil.copy(path, models / path.name)
    before = (models / "taxi_pipeline.skops").read_bytes()
    version = json.loads(card_path(trained_model_path).read_text())["version"]

    code, output, errors = taxi("train", "--if-missing")

    assert code == 0, errors
    assert output == f"model {version} is at models/taxi_pipeline.skops\n"
    assert (models / "taxi_pipeline.skops").read_bytes() == before


def test_train_if_missing_trains_on_data_train_csv(taxi, in_tmp, synthetic_dir):
    (in_tmp / "data").mkdir()
    shutil.copy(synthetic_dir / "train.csv", in_tmp / "data" / "train.csv")

    code, output, errors = taxi("train", "--if-missing")

    assert code == 0, errors
    assert "no model yet: training on data/train.csv" in output
    card = json.loads(Path("models/taxi_pipeline.json").read_text())
    assert f"model {card['version']} is at models/taxi_pipeline.skops" in output
    assert card["data"]["description"] == "data/train.csv"


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--force"], "--force and --if-missing contradict each other"),
        (["--data", "data/trips.csv"], "--data must be a file named train.csv"),
    ],
)
def test_train_if_missing_refuses_contradictory_options(taxi, args, message):
    code, _output, errors = taxi("train", "--if-missing", *args)
    assert code == 2
    assert message in errors
