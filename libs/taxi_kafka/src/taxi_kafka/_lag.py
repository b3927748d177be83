"""Consumer lag and broker states from librdkafka's statistics JSON (the `stats_cb` payload);
pure.

Only partitions being fetched (`fetch_state` "active") count: the others report -1 or stale
numbers. `consumer_lag` is measured from the committed offset, `consumer_lag_stored` from the
offset the application has been handed. A transactional processor commits through its producer,
so its committed offset may never reach the consumer's statistics: use the stored lag there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from taxi_kafka._records import PartitionKey

ACTIVE = "active"
# Brokers the client learned from metadata; the others are bootstrap or internal handles.
LEARNED = "learned"


def consumer_lag(stats_json: str | bytes, *, stored: bool = False) -> dict[PartitionKey, int]:
    """{(topic, partition): lag} for the actively fetched partitions whose lag is known."""
    stats: dict[str, Any] = json.loads(stats_json)
    field = "consumer_lag_stored" if stored else "consumer_lag"
    lags: dict[PartitionKey, int] = {}
    for topic, topic_stats in (stats.get("topics") or {}).items():
        for partition_stats in (topic_stats.get("partitions") or {}).values():
            partition = partition_stats.get("partition", -1)
            lag = partition_stats.get(field, -1)
            # Partition -1 is librdkafka's internal "unassigned" queue.
            if partition >= 0 and partition_stats.get("fetch_state") == ACTIVE and lag >= 0:
                lags[(topic, partition)] = lag
    return lags


def lag_seconds(
    lags: Mapping[PartitionKey, int], newest_ms: Mapping[PartitionKey, int], now_ms: int
) -> dict[PartitionKey, float]:
    """How far behind each partition is in time: 0 when caught up, else the age of the newest
    record already handed over (`newest_ms`, its timestamp). Records wait behind it, so the
    oldest waiting one is at most that old. Partitions with a lag but nothing handed over yet
    are left out: their age is unknown."""
    ages = {}
    for key, lag in lags.items():
        if lag == 0:
            ages[key] = 0.0
        elif key in newest_ms:
            ages[key] = max(0.0, (now_ms - newest_ms[key]) / 1000)
    return ages


def broker_states(stats_json: str | bytes) -> dict[int, str]:
    """{broker id: connection state} (UP, DOWN, CONNECT, ...) of the brokers the client
    learned from the cluster's metadata."""
    stats: dict[str, Any] = json.loads(stats_json)
    return {
        broker["nodeid"]: broker["state"]
        for broker in (stats.get("brokers") or {}).values()
        if broker.get("source") == LEARNED and broker.get("nodeid", -1) >= 0
    }
