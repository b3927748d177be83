"""ML-taxi streaming state: the producer's replay schedule and the aggregator's join and windows.

Pure and clock-free: nothing here talks to Kafka; the services feed it records and the time.
"""

from taxi_stream._aggregation import Aggregation
from taxi_stream._drift import (
    DriftAlarm,
    DriftKind,
    DriftMonitors,
    DriftSettings,
    DriftStatistic,
)
from taxi_stream._injected_drift import (
    DRIFT_SYNTAX,
    SHIFT_AREAS,
    DriftSpecError,
    InjectedDrift,
    InjectedDriftKind,
    ShiftPickups,
    Slowdown,
    parse_drift_kind,
)
from taxi_stream._join import UNKNOWN_MODEL, MatchedTrip, MetricsKey, Pending, Side, TripJoin
from taxi_stream._promotion import (
    DEFAULT_DELTA,
    DEFAULT_MIN_TRIPS,
    Contenders,
    HeadToHead,
    PromotionPolicy,
    Trial,
)
from taxi_stream._quality import BUCKETS_PER_DECADE, QualityAccumulator
from taxi_stream._replay import (
    END_DELAY_RANGE_S,
    CheckpointMismatchError,
    DriftMismatchError,
    Replay,
    ReplayCheckpoint,
    ReplayStep,
    end_delays_s,
    generation_trip_id,
    replay_fingerprint,
)
from taxi_stream._retraining import (
    LABEL_REJECTIONS,
    MAX_LABEL_DURATION_S,
    Candidate,
    LabelledWindow,
    LabelRejection,
    NoCandidate,
    Retraining,
    RetrainingSettings,
    RetrainTrigger,
    TrainingJob,
    TrainingWindow,
    train_candidate,
)
from taxi_stream._windows import ClosedWindow, Tally, WindowedQuality

__all__ = [
    "BUCKETS_PER_DECADE",
    "DEFAULT_DELTA",
    "DEFAULT_MIN_TRIPS",
    "DRIFT_SYNTAX",
    "END_DELAY_RANGE_S",
    "LABEL_REJECTIONS",
    "MAX_LABEL_DURATION_S",
    "SHIFT_AREAS",
    "UNKNOWN_MODEL",
    "Aggregation",
    "Candidate",
    "CheckpointMismatchError",
    "ClosedWindow",
    "Contenders",
    "DriftAlarm",
    "DriftKind",
    "DriftMismatchError",
    "DriftMonitors",
    "DriftSettings",
    "DriftSpecError",
    "DriftStatistic",
    "HeadToHead",
    "InjectedDrift",
    "InjectedDriftKind",
    "LabelRejection",
    "LabelledWindow",
    "MatchedTrip",
    "MetricsKey",
    "NoCandidate",
    "Pending",
    "PromotionPolicy",
    "QualityAccumulator",
    "Replay",
    "ReplayCheckpoint",
    "ReplayStep",
    "RetrainTrigger",
    "Retraining",
    "RetrainingSettings",
    "ShiftPickups",
    "Side",
    "Slowdown",
    "Tally",
    "TrainingJob",
    "TrainingWindow",
    "Trial",
    "TripJoin",
    "WindowedQuality",
    "end_delays_s",
    "generation_trip_id",
    "parse_drift_kind",
    "replay_fingerprint",
    "train_candidate",
]
