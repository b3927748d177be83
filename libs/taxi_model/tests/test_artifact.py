import json
import pickle
import shutil
from pathlib import Path

import attrs
import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from skops import io as skops_io

from taxi_events.columns import TripStartColumns
from taxi_events.testing import trip_started
from taxi_model import RegistryRecord, artifact_of
from taxi_model._artifact import (
    TRUSTED_TYPES,
    ModelLoadError,
    card_path,
    content_version,
    load_model,
)
from taxi_model._features import INPUT_COLUMNS, events_to_frame
from taxi_model._workflow import SavedModel


@pytest.fixture
def model_copy(tmp_path: Path, saved_model: SavedModel) -> Path:
    path = tmp_path / "taxi_pipeline.skops"
    shutil.copy(saved_model.model_path, path)
    shutil.copy(card_path(saved_model.model_path), card_path(path))
    return path


def edit_card(model_path: Path, **changes: object) -> None:
    card = json.loads(card_path(model_path).read_text())
    for key, value in changes.items():
        target = card
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    card_path(model_path).write_text(json.dumps(card))


def test_the_version_is_the_content_hash(saved_model):
    assert saved_model.card.version == content_version(saved_model.model_path.read_bytes())
    assert load_model(saved_model.model_path).version == saved_model.card.version


def test_an_artifact_made_in_memory_loads_as_the_same_model(saved_model, synthetic_trips):
    model = load_model(saved_model.model_path)
    card, data = artifact_of(model.pipeline, model.card)
    assert card.version == content_version(data)
    assert attrs.evolve(card, version=model.version) == model.card
    loaded = RegistryRecord.of(card, data).load()
    trips = synthetic_trips.head(20)
    assert (loaded.predict(trips) == model.predict(trips)).all()


def test_the_card_records_what_the_issue_asks(saved_model):
    card = json.loads(card_path(saved_model.model_path).read_text())
    assert card["data"]["rows"] == 4000
    assert card["data"]["train_rows"] + card["data"]["holdout_rows"] == 4000
    assert set(card["holdout"]) == {"count", "rmsle", "mae", "median_ape", "within_30"}
    assert card["training_seconds"] > 0
    assert {"scikit-learn", "numpy", "pandas", "python"} <= set(card["libraries"])


def test_loaded_model_predicts_a_batch_of_frames_and_events(saved_model, synthetic_trips):
    model = load_model(saved_model.model_path)
    batch = synthetic_trips.head(50)
    predicted = model.predict(batch[list(INPUT_COLUMNS)])
    assert predicted.shape == (50,)
    assert (predicted > 0).all()
    assert np.isfinite(predicted).all()
    assert model.predict([]).shape == (0,)
    events = [
        trip_started(f"id{i}", passenger_count=i % 6, pickup_latitude=40.70 + i / 1000)
        for i in range(20)
    ]
    from_events = model.predict(events)
    assert np.array_equal(model.predict(TripStartColumns.from_events(events)), from_events)
    assert np.array_equal(model.predict(events_to_frame(events)), from_events)
    assert model.predict(TripStartColumns()).shape == (0,)


def test_missing_model_says_how_to_train(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no model at .*taxi train"):
        load_model(tmp_path / "taxi_pipeline.skops")


def test_missing_card_is_refused(model_copy):
    card_path(model_copy).unlink()
    with pytest.raises(ModelLoadError, match=r"card .* is missing"):
        load_model(model_copy)


def test_damaged_card_is_refused(model_copy):
    card_path(model_copy).write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_model(model_copy)


def test_corrupted_model_file_is_refused(model_copy):
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupted or was replaced"):
        load_model(model_copy)


def test_garbage_that_matches_its_card_still_cannot_load(model_copy):
    model_copy.write_bytes(b"this is not a pickle")
    edit_card(model_copy, version=content_version(b"this is not a pickle"))
    with pytest.raises(ModelLoadError, match="cannot be read"):
        load_model(model_copy)


def test_model_from_another_scikit_learn_version_is_refused(model_copy):
    edit_card(model_copy, **{"libraries.scikit-learn": "0.24.2"})
    with pytest.raises(ModelLoadError, match=r"scikit-learn 0\.24\.2.*taxi train"):
        load_model(model_copy)


def test_a_card_of_an_older_format_is_refused_with_what_to_do(model_copy):
    edit_card(model_copy, format=1)
    with pytest.raises(
        ModelLoadError, match=r"card format 1; this version reads format 3.*--force"
    ):
        load_model(model_copy)


def test_a_card_written_before_training_profiles_still_loads_without_one(model_copy):
    card = json.loads(card_path(model_copy).read_text())
    assert card["profile"]["trips"] == card["data"]["train_rows"]
    del card["profile"]
    card_path(model_copy).write_text(json.dumps(card))
    assert load_model(model_copy).card.profile is None


def test_a_card_with_a_damaged_profile_is_refused(model_copy):
    edit_card(model_copy, **{"profile.features": [{"name": "distance_km", "expected": [0.5, 0.5]}]})
    with pytest.raises(ModelLoadError, match="unreadable") as refused:
        load_model(model_copy)
    assert refused.value.reason == "corrupt-card"


def test_a_saved_model_names_only_the_public_package(saved_model):
    """skops records each object's type by module path: an internal one would break every saved
    model the next time the implementation moves."""
    types = skops_io.get_untrusted_types(file=saved_model.model_path)
    ours = {name for name in types if name.startswith("taxi_")}
    assert ours == {"taxi_model.TripFeatures", "taxi_model.LogDurationRegressor"}
    assert set(types) <= set(TRUSTED_TYPES)


def test_a_model_saved_before_depth_and_bins_were_parameters_loads_with_the_old_defaults(
    saved_model, synthetic_trips
):
    regressor = load_model(saved_model.model_path).pipeline.named_steps["regressor"]
    state = regressor.__getstate__()
    older = {k: v for k, v in state.items() if k not in ("max_depth", "max_bins")}

    class Older:  # what an older LogDurationRegressor saved: its state, without the two
        def __getstate__(self) -> dict[str, object]:
            return older

    Older.__module__, Older.__name__ = type(regressor).__module__, type(regressor).__name__
    Older.__qualname__ = Older.__name__
    restored = skops_io.loads(skops_io.dumps(Older()), trusted=TRUSTED_TYPES)
    assert type(restored) is type(regressor)
    assert {"max_depth": None, "max_bins": 255}.items() <= restored.get_params().items()
    assert repr(restored)  # needs every parameter
    features = load_model(saved_model.model_path).pipeline.named_steps["features"]
    frame = features.transform(synthetic_trips.head(50)[list(INPUT_COLUMNS)])
    assert np.array_equal(restored.predict(frame), regressor.predict(frame))


def test_a_pickle_is_refused_without_running_it(model_copy, tmp_path):
    """Even with a card that matches it, a pickle (which runs code as it loads) is not loaded."""
    marker = tmp_path / "the-pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data = pickle.dumps(Payload())
    model_copy.write_bytes(data)
    edit_card(model_copy, version=content_version(data))
    with pytest.raises(ModelLoadError, match="cannot be read"):
        load_model(model_copy)
    assert not marker.exists()


class Stranger(BaseEstimator):
    """A type no model of this project holds."""

    def fit(self, features, target=None):
        return self


def test_a_model_holding_an_unknown_type_is_refused_and_names_it(model_copy):
    data = skops_io.dumps(Pipeline([("stranger", Stranger())]))
    model_copy.write_bytes(data)
    edit_card(model_copy, version=content_version(data))
    with pytest.raises(ModelLoadError, match=r"does not load: .*Stranger.*taxi train"):
        load_model(model_copy)
