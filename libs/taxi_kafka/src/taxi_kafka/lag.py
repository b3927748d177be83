"""Consumer lag from librdkafka's statistics JSON (the `stats_cb` payload); pure.

Only partitions being fetched (`fetch_state` "active") count: the others report -1 or stale
numbers. `consumer_lag` is measured from the committed offset, `consumer_lag_stored` from the
offset the application has been handed. A transactional processor commits through its producer,
so its committed offset may never reach the consumer's statistics: use the stored lag there.
"""

from __future__ import annotations

import json
from typing import Any

from taxi_kafka.records import PartitionKey

ACTIVE = "active"


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
