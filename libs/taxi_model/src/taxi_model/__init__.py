"""ML-taxi trip data (Kaggle CSV and synthetic), features, training, evaluation and the model
artifact.

The public names are the ones below (`__all__`); the underscored modules are implementation.
"""

from taxi_model._artifact import (
    DEFAULT_MODEL_PATH,
    REJECT_REASONS,
    ModelCard,
    ModelLoadError,
    RejectReason,
    TripDurationModel,
    artifact_of,
    card_path,
    file_sha256,
    load_artifact,
    load_model,
    read_card,
    save_model,
)
from taxi_model._data import (
    SAMPLE_DATA_DEFAULT,
    SAMPLE_DATA_VARIABLE,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    CsvSchemaError,
    LoadReport,
    TripData,
    read_trips,
    sample_data_path,
)
from taxi_model._estimator import LogDurationRegressor, build_pipeline
from taxi_model._features import INPUT_COLUMNS, TripFeatures, events_to_frame, trip_features
from taxi_model._metrics import WITHIN_TOLERANCE, QualityMetrics, quality_metrics
from taxi_model._profile import (
    FeatureProfile,
    TrainingProfile,
    TripColumns,
    drift_features,
    training_profile,
)
from taxi_model._registry import (
    Decider,
    DeploymentError,
    RegistryRecord,
    Roles,
    champion_lineage,
    current_roles,
    on_probation,
    roles_since,
)
from taxi_model._synth import (
    MAX_ROWS,
    estimate_durations,
    generate_trips,
    synthetic_train_test,
    write_synthetic,
)
from taxi_model._training import (
    SPLITS,
    InSampleError,
    Split,
    evaluate,
    holdout_split,
    time_split,
    train_model,
    unseen_trips,
)
from taxi_model._workflow import BetterModelExistsError, SavedModel, ensure_model, train_and_save

# A saved model (skops) records these classes by module and name, and loading trusts them by
# that name. Naming the public package keeps saved models loadable when the implementation
# moves between internal modules.
TripFeatures.__module__ = __name__
LogDurationRegressor.__module__ = __name__

__all__ = [
    "DEFAULT_MODEL_PATH",
    "INPUT_COLUMNS",
    "MAX_ROWS",
    "REJECT_REASONS",
    "SAMPLE_DATA_DEFAULT",
    "SAMPLE_DATA_VARIABLE",
    "SPLITS",
    "TEST_COLUMNS",
    "TRAIN_COLUMNS",
    "WITHIN_TOLERANCE",
    "BetterModelExistsError",
    "CsvSchemaError",
    "Decider",
    "DeploymentError",
    "FeatureProfile",
    "InSampleError",
    "LoadReport",
    "LogDurationRegressor",
    "ModelCard",
    "ModelLoadError",
    "QualityMetrics",
    "RegistryRecord",
    "RejectReason",
    "Roles",
    "SavedModel",
    "Split",
    "TrainingProfile",
    "TripColumns",
    "TripData",
    "TripDurationModel",
    "TripFeatures",
    "artifact_of",
    "build_pipeline",
    "card_path",
    "champion_lineage",
    "current_roles",
    "drift_features",
    "ensure_model",
    "estimate_durations",
    "evaluate",
    "events_to_frame",
    "file_sha256",
    "generate_trips",
    "holdout_split",
    "load_artifact",
    "load_model",
    "on_probation",
    "quality_metrics",
    "read_card",
    "read_trips",
    "roles_since",
    "sample_data_path",
    "save_model",
    "synthetic_train_test",
    "time_split",
    "train_and_save",
    "train_model",
    "training_profile",
    "trip_features",
    "unseen_trips",
    "write_synthetic",
]
