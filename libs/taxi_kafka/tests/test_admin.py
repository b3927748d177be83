"""Deleting the pipeline's topics and groups (`taxi reset`), against the real cluster."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from taxi_kafka._admin import GroupInUseError, ensure_topics, reset_pipeline
from taxi_kafka._pipeline import NEW_TRIPS, PIPELINE_GROUPS, PREDICTOR_GROUP, project_topics
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import numbered, produce_all, read_all

pytestmark = pytest.mark.kafka


def member_of(cluster: LocalCluster, group: str, topic: str) -> Consumer:
    """A live member of `group`, subscribed to `topic`, that has committed offset 1 on it."""
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    for _ in range(60):
        if consumer.assignment():
            break
        consumer.poll(0.5)
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    return consumer


def test_reset_deletes_the_pipelines_topics_and_groups_and_they_can_be_made_again(
    kafka_cluster,
):
    prefix = f"reset-{uuid.uuid4().hex[:8]}."
    admin = kafka_cluster.admin()
    specs = project_topics(prefix=prefix)
    ensure_topics(admin, specs)
    produce_all(kafka_cluster.bootstrap_servers, prefix + NEW_TRIPS, numbered(10))
    member = member_of(kafka_cluster, prefix + PREDICTOR_GROUP, prefix + NEW_TRIPS)

    with pytest.raises(GroupInUseError, match=f"{prefix}{PREDICTOR_GROUP} has members"):
        reset_pipeline(admin, prefix)
    assert {s.name for s in specs} <= set(admin.list_topics(timeout=10).topics)

    member.close()
    deleted = reset_pipeline(admin, prefix)
    assert sorted(deleted.topics) == sorted(s.name for s in specs)
    assert deleted.groups == [prefix + PREDICTOR_GROUP]  # the other group never existed
    assert not {s.name for s in specs} & set(admin.list_topics(timeout=10).topics)

    assert reset_pipeline(admin, prefix).topics == []  # nothing left: nothing to do
    ensure_topics(admin, specs)  # at once, as `taxi up --fresh` does
    assert read_all(kafka_cluster.bootstrap_servers, prefix + NEW_TRIPS) == []
    listed = admin.list_consumer_groups().result(timeout=10).valid
    assert not {prefix + g for g in PIPELINE_GROUPS} & {g.group_id for g in listed}
