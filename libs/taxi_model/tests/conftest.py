"""Shared fixtures: the real Kaggle sample (when present), synthetic trips and a trained model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taxi_model import read_trips, sample_data_path, train_model
from taxi_model._synth import generate_trips
from taxi_model._training import TrainResult
from taxi_model._workflow import SavedModel, train_and_save

REPO = Path(__file__).resolve().parents[3]
REAL_SAMPLE = sample_data_path(REPO)


@pytest.fixture(scope="session")
def real_sample_path() -> Path:
    if not REAL_SAMPLE.is_file():
        pytest.skip(
            f"the real Kaggle sample is not at {REAL_SAMPLE}; set TAXI_SAMPLE_DATA to its path"
        )
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def real_result(real_sample_path: Path) -> TrainResult:
    """The served shape trained on the real sample as `taxi train` does (time split), once."""
    return train_model(read_trips(real_sample_path).frame, str(real_sample_path))


@pytest.fixture(scope="session")
def synthetic_trips() -> pd.DataFrame:
    return generate_trips(rows=4000, seed=7)


@pytest.fixture(scope="session")
def saved_model(
    tmp_path_factory: pytest.TempPathFactory, synthetic_trips: pd.DataFrame
) -> SavedModel:
    model_path = tmp_path_factory.mktemp("models") / "taxi_pipeline.skops"
    return train_and_save(synthetic_trips, "synthetic rows=4000 seed=7", model_path)
