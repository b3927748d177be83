"""The pytest plugin's clean-up: a test's topics do not outlive it on the shared cluster.

The two tests run in file order: the first makes topics, the second finds them gone.
"""

from __future__ import annotations

from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import MakeTopic, wait_for

made: list[str] = []


def test_a_test_makes_topics(make_topic: MakeTopic, kafka_cluster: LocalCluster) -> None:
    made.extend([make_topic(), make_topic(partitions=1)])
    assert set(made) <= set(kafka_cluster.admin().list_topics(timeout=30).topics)


def test_the_topics_of_the_test_before_are_deleted(kafka_cluster: LocalCluster) -> None:
    assert len(made) == 2, "runs after test_a_test_makes_topics"

    def gone() -> bool:
        return not set(made) & set(kafka_cluster.admin().list_topics(timeout=30).topics)

    wait_for("the last test's topics to be deleted", gone, timeout=30)
    # The pipeline's own topics, made with the cluster, are kept.
    assert "new_trips" in kafka_cluster.admin().list_topics(timeout=30).topics
