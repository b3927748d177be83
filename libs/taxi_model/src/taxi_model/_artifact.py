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
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import attrs
import cattrs
import numpy as np
import pandas as pd

from taxi_events import TripStarted
from taxi_events.columns import TripStartColumns
from taxi_model._metrics import QualityMetrics
from taxi_model._profile import TrainingProfile

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from taxi_model._compiled import CompiledTrees

# scikit-learn and skops (and the features, an sklearn transformer) are imported where a model is
# written, loaded or run: reading a card, as the producer and the aggregator do, needs neither.

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


# Why a model was refused, as counted in taxi_model_rejected_total{reason}.
RejectReason = Literal[
    "missing",  # no such file, or no such version in the registry
    "corrupt-record",  # a registry record that is no model record
    "corrupt-card",  # a card that is missing, unreadable or of another format
    "bad-hash",  # the artifact's bytes are not the ones the card and record name
    "unknown-type",  # the artifact holds a type loading does not trust
    "library-version",  # written by a scikit-learn that this one cannot read
    "unreadable",  # a damaged artifact
    "missing-feature",  # it cannot predict from the features a trip start carries
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)


class ModelLoadError(RuntimeError):
    """The model cannot be used; the message says why and what to do, `reason` in a word."""

    def __init__(self, message: str, reason: RejectReason) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


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
    # How its inputs were spread over the training fold, for the stream's data-drift check.
    # Cards written before it (format 3 still) have none, and their models get no such check.
    profile: TrainingProfile | None = None


def card_to_json(card: ModelCard) -> dict[str, Any]:
    unstructured: dict[str, Any] = cattrs.unstructure(card)  # cattrs types it Any
    return unstructured


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def library_versions() -> dict[str, str]:
    import sklearn  # noqa: PLC0415
    import skops  # noqa: PLC0415

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
    # The pipeline's trees compiled, checked exact against them (taxi_model._compiled): set only
    # by with_compiled_trees(), which asks for it; None predicts with the pipeline alone.
    trees: CompiledTrees | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def version(self) -> str:
        return self.card.version

    def predict(self, trips: pd.DataFrame | TripStartColumns | Sequence[TripStarted]) -> np.ndarray:
        """Predicted durations in seconds, one per trip, in input order."""
        from taxi_model._features import columns_to_frame, events_to_frame  # noqa: PLC0415

        if isinstance(trips, pd.DataFrame):
            frame = trips
        elif isinstance(trips, TripStartColumns):
            frame = columns_to_frame(trips)
        else:
            frame = events_to_frame(trips)
        if frame.empty:
            return np.empty(0, dtype=np.float64)
        if self.trees is not None:
            from taxi_model._estimator import seconds_from_log  # noqa: PLC0415

            features = self.pipeline.named_steps["features"].transform(frame)
            return seconds_from_log(self.trees.predict_log(features))
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64)


def artifact_of(pipeline: Pipeline, card: ModelCard) -> tuple[ModelCard, bytes]:
    """The pipeline's artifact (skops bytes), and its card with the version those bytes make."""
    from skops import io as skops_io  # noqa: PLC0415

    data = skops_io.dumps(pipeline)
    return attrs.evolve(card, version=content_version(data)), data


def save_model(pipeline: Pipeline, card: ModelCard, model_path: Path) -> ModelCard:
    """Write the pipeline and its card; the card's version becomes the file's content hash."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    card, data = artifact_of(pipeline, card)
    tmp = model_path.with_name(model_path.name + ".tmp")
    tmp.write_bytes(data)
    # Card first, then the model: a crash in between leaves a mismatch that loading reports.
    card_path(model_path).write_text(json.dumps(card_to_json(card), indent=2) + "\n")
    tmp.replace(model_path)
    return card


def read_card(model_path: Path) -> ModelCard:
    path = card_path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"the model card {path} is missing. {RETRAIN_HINT}", "corrupt-card")
    return card_from_json(path.read_bytes(), f"the model card {path}")


def card_from_json(data: bytes | dict[str, Any], what: str) -> ModelCard:
    """A card from its JSON (text or parsed); ModelLoadError("corrupt-card") naming `what`."""
    try:
        card = cattrs.structure(json.loads(data) if isinstance(data, bytes) else data, ModelCard)
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
        raise ModelLoadError(
            f"{what} is unreadable ({exc}). {RETRAIN_HINT}", "corrupt-card"
        ) from exc
    if card.format != CARD_FORMAT:
        raise ModelLoadError(
            f"{what} has card format {card.format}; this version reads format {CARD_FORMAT}. "
            + RETRAIN_HINT,
            "corrupt-card",
        )
    return card


def load_model(model_path: Path = DEFAULT_MODEL_PATH) -> TripDurationModel:
    """Load and check a model file, or raise ModelLoadError saying what is wrong and what to do."""
    if not model_path.is_file():
        raise ModelLoadError(
            f"no model at {model_path}. Train one with `uv run taxi train --data data/train.csv` "
            "(no Kaggle data? `uv run taxi data synth` writes synthetic trips to train on).",
            "missing",
        )
    return load_artifact(read_card(model_path), model_path.read_bytes(), str(model_path))


def load_artifact(
    card: ModelCard, data: bytes, origin: str, sha256: str | None = None
) -> TripDurationModel:
    """Check and load a model's bytes (from `origin`, a file or a registry record), or raise
    ModelLoadError. The bytes whose hash is checked are the ones loaded, and loading builds no
    type beyond the trusted ones. Last, the model must predict a sample trip."""
    import sklearn  # noqa: PLC0415
    from sklearn.exceptions import InconsistentVersionWarning  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from skops import io as skops_io  # noqa: PLC0415

    trained_with = card.libraries.get("scikit-learn", "unknown")
    if _minor(trained_with) != _minor(sklearn.__version__):
        raise ModelLoadError(
            f"{origin} was written by scikit-learn {trained_with}, but {sklearn.__version__} "
            f"is installed, and its models do not cross minor versions. {RETRAIN_HINT}",
            "library-version",
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest[: len(card.version)] != card.version or (sha256 is not None and digest != sha256):
        raise ModelLoadError(
            f"{origin} does not match its card (version {card.version}): the file is "
            f"corrupted or was replaced. {RETRAIN_HINT}",
            "bad-hash",
        )
    try:
        untrusted = sorted(set(skops_io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except Exception as exc:  # a damaged archive can fail in many ways
        raise ModelLoadError(
            f"{origin} cannot be read ({exc!r}). {RETRAIN_HINT}", "unreadable"
        ) from exc
    if untrusted:
        raise ModelLoadError(
            f"{origin} holds types this version does not load: {', '.join(untrusted)}. "
            "Only a model `taxi train` wrote can be loaded. " + RETRAIN_HINT,
            "unknown-type",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", InconsistentVersionWarning)
            pipeline = skops_io.loads(data, trusted=TRUSTED_TYPES)
    except Exception as exc:  # a damaged archive can fail in many ways
        raise ModelLoadError(
            f"{origin} cannot be read ({exc!r}). {RETRAIN_HINT}", "unreadable"
        ) from exc
    if not isinstance(pipeline, Pipeline):
        raise ModelLoadError(
            f"{origin} holds a {type(pipeline).__name__}, not a pipeline.", "unknown-type"
        )
    model = TripDurationModel(pipeline, card)
    _check_predicts(model, origin)
    return model


def _check_predicts(model: TripDurationModel, origin: str) -> None:
    """A model that needs what a trip start does not carry fails here, not on the stream."""
    samples = _sample_trips()
    try:
        predicted = model.predict(samples)
    except Exception as exc:  # whatever the pipeline's steps raise
        raise ModelLoadError(
            f"{origin} cannot predict from a trip start's fields ({exc!r}): it needs features "
            "this predictor cannot compute. " + RETRAIN_HINT,
            "missing-feature",
        ) from exc
    if predicted.shape != (len(samples),) or not np.isfinite(predicted).all():
        raise ModelLoadError(
            f"{origin} predicts {predicted!r} for sample trips, not one finite duration each.",
            "missing-feature",
        )


@cache
def _sample_trips() -> pd.DataFrame:
    """Two ordinary Manhattan trips, as the predictor sees trip starts, for the check every
    loaded model passes."""
    from taxi_model._features import events_to_frame  # noqa: PLC0415

    return events_to_frame(
        [
            TripStarted(
                trip_id=f"sample{i}",
                vendor_id=1 + i,
                pickup_datetime=datetime(2016, 3, 14, 17, 24, 55) + timedelta(days=90 * i),
                passenger_count=1 + 2 * i,
                pickup_longitude=-73.982155 - 0.006 * i,
                pickup_latitude=40.767937 - 0.036 * i,
                dropoff_longitude=-73.96463 - 0.025 * i,
                dropoff_latitude=40.765602 - 0.009 * i,
                store_and_fwd_flag=bool(i),
                source="train",
            )
            for i in range(2)
        ]
    )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
