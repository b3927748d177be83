"""ML-taxi streaming state: the producer's replay schedule and the aggregator's join and windows.

Pure and clock-free: nothing here talks to Kafka; the services feed it records and the time.
"""

from taxi_stream._aggregation import Aggregation
from taxi_stream._join import UNKNOWN_MODEL, MatchedTrip, MetricsKey, Pending, Side, TripJoin
from taxi_stream._quality import BUCKETS_PER_DECADE, QualityAccumulator
from taxi_stream._replay import (
    END_DELAY_RANGE_S,
    CheckpointMismatchError,
    Replay,
    ReplayCheckpoint,
    ReplayStep,
    end_delays_s,
    generation_trip_id,
    replay_fingerprint,
)
from taxi_stream._windows import ClosedWindow, Tally, WindowedQuality

__all__ = [
    "BUCKETS_PER_DECADE",
    "END_DELAY_RANGE_S",
    "UNKNOWN_MODEL",
    "Aggregation",
    "CheckpointMismatchError",
    "ClosedWindow",
    "MatchedTrip",
    "MetricsKey",
    "Pending",
    "QualityAccumulator",
    "Replay",
    "ReplayCheckpoint",
    "ReplayStep",
    "Side",
    "Tally",
    "TripJoin",
    "WindowedQuality",
    "end_delays_s",
    "generation_trip_id",
    "replay_fingerprint",
]
