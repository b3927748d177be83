"""Where the reader starts in each partition: a bounded look-back before the end (pure).

By time, not by offset: offsets also count transaction markers, whose share differs per topic,
so "the last N offsets" of ml_predictions and of finished_trips would cover different spans
and leave predictions without their trip ends. A count cap per partition still bounds the
look-back when the rate is high.
"""

from __future__ import annotations

import math

from taxi_kafka import DEAD_LETTERS, MODEL_DEPLOYMENTS, MODEL_EVENTS, MODEL_METRICS

# Model quality and dead letters are few records and worth their history.
HISTORY_S = 2 * 3600.0
HISTORY_TOPICS = frozenset({MODEL_METRICS, DEAD_LETTERS})
# Read from their beginning (within the count cap): the deployment decisions and the model events
# are the models' whole history; the last decision, however old, holds the current roles, and a
# drift found on the champion long ago is still its drift.
WHOLE_TOPICS = frozenset({MODEL_DEPLOYMENTS, MODEL_EVENTS})
MAX_RECORDS_PER_PARTITION = 5_000


def lookback_s(topic: str, trips_lookback_s: float) -> float:
    """Seconds of `topic` to read back: the setting for the trip topics, more for history,
    infinity for the topics read whole."""
    if topic in WHOLE_TOPICS:
        return math.inf
    return max(HISTORY_S, trips_lookback_s) if topic in HISTORY_TOPICS else trips_lookback_s


def since_ms(now_s: float, lookback: float) -> int:
    """The timestamp (ms) a look-back of `lookback` seconds starts at; 0, the first record of
    any partition, for an infinite one."""
    return max(0, int((now_s - lookback) * 1000)) if math.isfinite(lookback) else 0


def start_offset(
    low: int, high: int, at_time: int, max_records: int = MAX_RECORDS_PER_PARTITION
) -> int:
    """The first offset to read of a partition holding [low, high): the first record at or
    after the look-back's start (`at_time`, -1 if none is that recent), but no more than
    `max_records` before the end."""
    from_time = high if at_time < 0 else min(at_time, high)
    return max(low, high - max_records, from_time)
