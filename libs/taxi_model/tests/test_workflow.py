import logging
import shutil

import pytest

from taxi_model import _estimator as estimator
from taxi_model._artifact import card_path, file_sha256, load_model
from taxi_model._estimator import build_pipeline
from taxi_model._synth import write_synthetic
from taxi_model._workflow import BetterModelExistsError, ensure_model, train_and_save


@pytest.fixture
def model_path(tmp_path, saved_model):
    path = tmp_path / "taxi_pipeline.skops"
    shutil.copy(saved_model.model_path, path)
    shutil.copy(card_path(saved_model.model_path), card_path(path))
    return path


@pytest.fixture
def one_round_models(monkeypatch):
    """New models get a single boosting round, so they are worse than the saved one."""
    monkeypatch.setattr(
        estimator, "build_pipeline", lambda **params: build_pipeline(max_rounds=1, **params)
    )


def test_writes_model_card_and_png_report(saved_model):
    assert saved_model.model_path.is_file()
    assert card_path(saved_model.model_path).is_file()
    assert saved_model.report_path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.usefixtures("one_round_models")
def test_refuses_to_replace_a_better_model(model_path, synthetic_trips, saved_model):
    with pytest.raises(BetterModelExistsError, match="--force"):
        train_and_save(synthetic_trips, "one round", model_path)
    assert load_model(model_path).version == saved_model.card.version


@pytest.mark.usefixtures("one_round_models")
def test_force_replaces_a_better_model(model_path, synthetic_trips, saved_model):
    saved = train_and_save(synthetic_trips, "one round", model_path, force=True)
    assert saved.replaced_rmsle is not None
    assert load_model(model_path).version == saved.card.version != saved_model.card.version


def test_an_unusable_model_is_replaced_with_a_warning(model_path, synthetic_trips, caplog):
    model_path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        saved = train_and_save(synthetic_trips, "fresh", model_path)
    assert "unusable model" in caplog.text
    assert load_model(model_path).version == saved.card.version


def test_a_model_trained_on_a_csv_records_its_hash(tmp_path):
    """A replay of the same file tells by the hash which trips the model learnt from."""
    train_csv, _ = write_synthetic(tmp_path / "data", rows=1500, seed=12, test_rows=0)
    model = tmp_path / "models" / "taxi_pipeline.skops"
    ensure_model(model, train_csv.parent)
    card = load_model(model).card
    assert card.data.sha256 == file_sha256(train_csv)
    assert card.data.split == "time"
