"""Cluster health from plain facts: brokers, replication, consumer lag, and the warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taxi_dashboard.health import (
    BrokerMemory,
    ClusterHealth,
    GroupLag,
    PartitionReplicas,
    group_lag,
    replication_problems,
    warnings,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_lag_sums_the_partitions_and_counts_uncommitted_ones_whole():
    ends = {("new_trips", 0): 100, ("new_trips", 1): 40, ("new_trips", 2): 7}
    committed = {("new_trips", 0): 90, ("new_trips", 1): 40, ("other", 0): 5}
    lag = group_lag("taxi-predictor", committed, ends)
    assert lag == GroupLag("taxi-predictor", 10 + 0 + 7, partitions=3, committed=2)
    assert lag.started


def test_a_group_without_commits_has_not_started():
    lag = group_lag("taxi-aggregator", {("ml_predictions", 0): -1001}, {("ml_predictions", 0): 0})
    assert lag == GroupLag("taxi-aggregator", 0, partitions=1, committed=0)
    assert not lag.started


def test_replication_problems_count_shrunk_isrs_and_leaderless_partitions():
    partitions = [
        PartitionReplicas("t", 0, leader=1, replicas=(1, 2, 3), isr=(1, 2, 3)),
        PartitionReplicas("t", 1, leader=2, replicas=(1, 2, 3), isr=(2, 3)),
        PartitionReplicas("t", 2, leader=-1, replicas=(1, 2, 3), isr=(1,)),
    ]
    assert replication_problems(partitions) == (2, 1)


def test_brokers_seen_before_and_gone_now_are_named():
    memory = BrokerMemory()
    assert memory.missing([1, 2, 3]) == ()
    assert memory.missing([1, 3]) == (2,)
    assert memory.missing([1, 2, 3]) == ()


def test_a_healthy_cluster_has_no_warnings():
    health = ClusterHealth(NOW, 3, reachable=True, brokers_up=(1, 2, 3))
    assert not health.degraded
    assert health.brokers_down == 0
    assert warnings(health, NOW) == []


def test_one_broker_down_is_named_in_the_warning():
    health = ClusterHealth(
        NOW, 3, reachable=True, brokers_up=(1, 3), brokers_missing=(2,), under_replicated=12
    )
    assert health.degraded
    assert warnings(health, NOW) == [
        "1 of 3 brokers down (broker 2): the pipeline keeps going on the others.",
        "12 partitions are under-replicated.",
    ]


def test_fewer_brokers_than_expected_count_as_down_even_if_never_seen():
    health = ClusterHealth(NOW, 3, reachable=True, brokers_up=(1,))
    assert health.brokers_down == 2
    assert warnings(health, NOW)[0].startswith("2 of 3 brokers down:")


def test_an_unreachable_cluster_says_how_to_start_it():
    health = ClusterHealth(NOW, 3, reachable=False, error="Broker transport failure")
    assert health.brokers_down == 3
    [warning] = warnings(health, NOW)
    assert "Broker transport failure" in warning
    assert "uv run taxi cluster up" in warning


def test_leaderless_partitions_and_an_old_check_are_warned_about():
    health = ClusterHealth(NOW, 3, reachable=True, brokers_up=(1, 2, 3), offline=4)
    found = warnings(health, NOW + timedelta(seconds=60), stale_after_s=15)
    assert found == [
        "4 partitions have no leader: their writes are paused.",
        "The cluster health check is 60 s old.",
    ]


def test_before_the_first_check_the_page_says_it_is_checking():
    assert warnings(None, NOW) == ["Checking the Kafka cluster..."]
