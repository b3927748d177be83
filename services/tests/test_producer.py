"""The producer run after run on one replay: limits resume, a loop starts new trip ids, and a
replay of other data is refused. Against the shared real cluster, in a topic namespace of its
own."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from taxi_kafka import FINISHED_TRIPS, NEW_TRIPS, ensure_topics, project_topics
from taxi_kafka.testing import read_all
from taxi_model import read_trips, write_synthetic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROWS = 300


def test_runs_resume_where_the_last_stopped_and_a_loop_renames_its_trips(
    kafka_cluster, shared_services, tmp_path
):
    prefix = f"producer-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    csv, _ = write_synthetic(tmp_path / "data", rows=ROWS, seed=81, test_rows=0)
    rows = list(read_trips(csv).frame["id"])

    def run(*args: str, data: Path = csv) -> int:
        producer = shared_services.start(
            "taxi-producer",
            *("--source", "train", "--data", str(data), "--no-progress"),
            *("--topic-prefix", prefix, "--instance", "t", *args),
        )
        return producer.wait(timeout=120)

    def keys(topic: str) -> list[str]:
        return [m.key().decode() for m in read_all(kafka_cluster.bootstrap_servers, prefix + topic)]

    assert run("--limit", "120") == 0
    assert sorted(keys(NEW_TRIPS)) == sorted(rows[:120])
    assert run("--limit", "120") == 0  # the next 120, not the same again
    assert sorted(keys(NEW_TRIPS)) == sorted(rows[:240])
    assert run("--loop", "--limit", "120") == 0  # past the end: generation 2
    assert sorted(keys(NEW_TRIPS)) == sorted(rows + [f"{r}-g2" for r in rows[:60]])
    assert run() == 0  # without --loop, a replay past its end has nothing to start

    started, ended = Counter(keys(NEW_TRIPS)), Counter(keys(FINISHED_TRIPS))
    assert len(started) == ROWS + 60
    assert set(started.values()) == {1}
    assert ended == started  # every trip started ended, once

    other, _ = write_synthetic(tmp_path / "other", rows=ROWS, seed=82, test_rows=0)
    assert run(data=other) == 1
    log = (tmp_path / f"taxi-producer-{len(shared_services.running) - 1}.log").read_text()
    assert "the checkpoint belongs to other trip data" in log
    assert "`taxi reset`" in log
    assert "generation 2 begins" in (tmp_path / "taxi-producer-2.log").read_text()
