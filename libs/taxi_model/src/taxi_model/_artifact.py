"""The model artifact: the pipeline in skops format, its JSON model card, and safe loading.

skops stores the fitted pipeline as data. Loading builds only the types it is told to trust (its
own list of scikit-learn and numpy types, and TRUSTED_TYPES here), so a model file cannot run
code, unlike a pickle. The card's version is the file's content hash, checked on the very bytes
that are loaded.
"""

from __future__ import annotations

import hashlib
import json
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
import numpy as np
import pandas as pd
import sklearn
import skops
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.pipeline import Pipeline
from skops import io as skops_io

from taxi_events import TripStarted
from taxi_events.columns import TripStartColumns
from taxi_model._features import columns_to_frame, events_to_frame
from taxi_model._metrics import QualityMetrics

DEFAULT_MODEL_PATH = Path("models/taxi_pipeline.skops")
# 3: the artifact is a skops file; formats 1 and 2 were pickles.
CARD_FORMAT = 3
# What a model file may hold beyond skops' own trusted scikit-learn and numpy types: the
# project's two pipeline steps (by their public names) and the fitted trees of scikit-learn's
# histogram gradient boosting, which skops does not list itself.
TRUSTED_TYPES = [
    "taxi_model.TripFeatures",
    "taxi_model.LogDurationRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
RETRAIN_HINT = "Train a new one with `uv run taxi train --data data/train.csv --force`."


class ModelLoadError(RuntimeError):
    """The model file cannot be used; the message says why and what to do."""


@attrs.frozen
class TrainingData:
    description: str  # a path, or how synthetic trips were generated
    sha256: str | None
    rows: int
    train_rows: int
    holdout_rows: int
    # How the held-out trips were chosen: "time" (those picked up at `cutoff`, an ISO pickup
    # time, or later) or "random" (a fixed random fifth; no cutoff).
    split: str = "random"
    cutoff: str | None = None


@attrs.frozen
class ModelCard:
    """What a model is, what it was trained on and how good it was on held-out trips."""

    version: str
    created_at: str
    data: TrainingData
    holdout: QualityMetrics
    training_seconds: float
    boosting_rounds: int
    features: list[str]
    libraries: dict[str, str]
    format: int = CARD_FORMAT


def card_to_json(card: ModelCard) -> dict[str, Any]:
    unstructured: dict[str, Any] = cattrs.unstructure(card)  # cattrs types it Any
    return unstructured


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "skops": skops.__version__,
    }


def content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@attrs.frozen
class TripDurationModel:
    """A loaded pipeline and its card. Predicts whole batches in one vectorised call."""

    pipeline: Pipeline
    card: ModelCard

    @property
    def version(self) -> str:
        return self.card.version

    def predict(self, trips: pd.DataFrame | TripStartColumns | Sequence[TripStarted]) -> np.ndarray:
        """Predicted durations in seconds, one per trip, in input order."""
        if isinstance(trips, pd.DataFrame):
            frame = trips
        elif isinstance(trips, TripStartColumns):
            frame = columns_to_frame(trips)
        else:
            frame = events_to_frame(trips)
        if frame.empty:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)


def save_model(pipeline: Pipeline, card: ModelCard, model_path: Path) -> ModelCard:
    """Write the pipeline and its card; the card's version becomes the file's content hash."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    data = skops_io.dumps(pipeline)
    tmp = model_path.with_name(model_path.name + ".tmp")
    tmp.write_bytes(data)
    card = attrs.evolve(card, version=content_version(data))
    # Card first, then the model: a crash in between leaves a mismatch that loading reports.
    card_path(model_path).write_text(json.dumps(card_to_json(card), indent=2) + "\n")
    tmp.replace(model_path)
    return card


def read_card(model_path: Path) -> ModelCard:
    path = card_path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"the model card {path} is missing. {RETRAIN_HINT}")
    try:
        card = cattrs.structure(json.loads(path.read_text()), ModelCard)
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
        raise ModelLoadError(
            f"the model card {path} is unreadable ({exc}). {RETRAIN_HINT}"
        ) from exc
    if card.format != CARD_FORMAT:
        raise ModelLoadError(
            f"{path} has card format {card.format}; this version reads format {CARD_FORMAT}. "
            + RETRAIN_HINT
        )
    return card


def load_model(model_path: Path = DEFAULT_MODEL_PATH) -> TripDurationModel:
    """Load and check a model, or raise ModelLoadError saying what is wrong and what to do."""
    if not model_path.is_file():
        raise ModelLoadError(
            f"no model at {model_path}. Train one with `uv run taxi train --data data/train.csv` "
            "(no Kaggle data? `uv run taxi data synth` writes synthetic trips to train on)."
        )
    card = read_card(model_path)
    trained_with = card.libraries.get("scikit-learn", "unknown")
    if _minor(trained_with) != _minor(sklearn.__version__):
        raise ModelLoadError(
            f"{model_path} was written by scikit-learn {trained_with}, but {sklearn.__version__} "
            f"is installed, and its models do not cross minor versions. {RETRAIN_HINT}"
        )
    data = model_path.read_bytes()
    if content_version(data) != card.version:
        raise ModelLoadError(
            f"{model_path} does not match its card (version {card.version}): the file is "
            f"corrupted or was replaced. {RETRAIN_HINT}"
        )
    # The bytes whose hash was checked are the ones loaded.
    try:
        untrusted = sorted(set(skops_io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except Exception as exc:  # a damaged archive can fail in many ways
        raise ModelLoadError(f"{model_path} cannot be read ({exc!r}). {RETRAIN_HINT}") from exc
    if untrusted:
        raise ModelLoadError(
            f"{model_path} holds types this version does not load: {', '.join(untrusted)}. "
            "Only a model `taxi train` wrote can be loaded. " + RETRAIN_HINT
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", InconsistentVersionWarning)
            pipeline = skops_io.loads(data, trusted=TRUSTED_TYPES)
    except Exception as exc:  # a damaged archive can fail in many ways
        raise ModelLoadError(f"{model_path} cannot be read ({exc!r}). {RETRAIN_HINT}") from exc
    if not isinstance(pipeline, Pipeline):
        raise ModelLoadError(f"{model_path} holds a {type(pipeline).__name__}, not a pipeline.")
    return TripDurationModel(pipeline, card)


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
