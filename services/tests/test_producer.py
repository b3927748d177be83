"""The producer run after run on one replay: limits resume, a loop starts new trip ids, and a
replay of other data is refused (against the shared real cluster, in a topic namespace of its
own); and which trips it replays, leaving out those the model learnt from."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from pathlib import Path

import click
import pandas as pd
import pytest

from taxi_kafka import FINISHED_TRIPS, NEW_TRIPS, ensure_topics, project_topics
from taxi_kafka.testing import read_all
from taxi_model import file_sha256, read_card, read_trips, train_and_save, write_synthetic
from taxi_services.producer import replay_trips

ROWS = 300


@pytest.mark.kafka
@pytest.mark.slow
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


@pytest.fixture
def trained_on_csv(tmp_path):
    """A CSV and a model trained on it (time split), its hash in the card."""
    csv, _ = write_synthetic(tmp_path / "data", rows=2000, seed=83, test_rows=0)
    model = tmp_path / "models" / "taxi_pipeline.skops"
    train_and_save(read_trips(csv).frame, str(csv), model, data_sha256=file_sha256(csv))
    return csv, model


def test_the_train_replay_leaves_out_the_trips_its_model_learnt_from(trained_on_csv, caplog):
    caplog.set_level(logging.INFO, logger="taxi.producer")
    csv, model = trained_on_csv
    cutoff = pd.Timestamp(read_card(model).data.cutoff)
    everything = read_trips(csv).frame
    replayed = replay_trips("train", csv, 10, model)
    assert set(replayed["id"]) == set(everything[everything["pickup_datetime"] >= cutoff]["id"])
    assert 0 < len(replayed) < len(everything) / 2
    assert "replaying the" in caplog.text

    in_sample = replay_trips("train", csv, 10, model, in_sample=True)
    assert len(in_sample) == len(everything)
    assert "the live score is in-sample" in caplog.text
    # Test rows are never trained on; another file's trips were never seen.
    other, _ = write_synthetic(csv.parent.parent / "other", rows=500, seed=84, test_rows=0)
    assert len(replay_trips("train", other, 10, model)) == 500


def test_without_a_model_card_every_trip_is_replayed_with_a_warning(trained_on_csv, caplog):
    csv, model = trained_on_csv
    replayed = replay_trips("train", csv, 10, model.with_name("missing.skops"))
    assert len(replayed) == 2000
    assert "cannot tell which trips" in caplog.text


def test_a_model_split_at_random_on_the_same_file_is_refused(tmp_path):
    csv, _ = write_synthetic(tmp_path / "data", rows=1500, seed=85, test_rows=0)
    model = tmp_path / "taxi_pipeline.skops"
    trips = read_trips(csv).frame
    train_and_save(trips, str(csv), model, data_sha256=file_sha256(csv), split="random")
    with pytest.raises(click.ClickException, match=r"in-sample.*--split|in-sample.*--in-sample"):
        replay_trips("train", csv, 10, model)
