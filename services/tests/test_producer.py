"""The producer run after run on one replay: limits resume, a loop starts new trip ids, an
injected drift goes on from its trip across a kill, and a replay of other data or another drift
is refused (against the shared real cluster, in a topic namespace of its own); which trips it
replays, leaving out those the model learnt from; and a bad --drift refused."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from taxi_events import TripFinished, decode
from taxi_kafka import (
    FINISHED_TRIPS,
    NEW_TRIPS,
    KafkaConfig,
    Observer,
    Outputs,
    TransactionalProducer,
    ensure_topics,
    project_topics,
)
from taxi_kafka.testing import read_all, wait_for
from taxi_model import file_sha256, read_card, read_trips, train_and_save, write_synthetic
from taxi_services.producer import main, replay_trips, run_replay, saved_checkpoints
from taxi_services.scrape import matching, scrape
from taxi_services.supervisor import free_port
from taxi_stream import Replay

ROWS = 300
DRIFT = ("--drift", "slowdown:1.5", "--drift-from", "100")
# Trip ends within a second or so of their starts (the longest trip is about an hour).
FAST_ENDS = ("--time-scale", "5000")


@pytest.mark.kafka
@pytest.mark.slow
def test_runs_resume_where_the_last_stopped_and_a_loop_renames_its_trips(
    kafka_cluster, shared_services, tmp_path
):
    prefix = f"producer-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    csv, _ = write_synthetic(tmp_path / "data", rows=ROWS, seed=81, test_rows=0)
    trips = read_trips(csv).frame
    rows = list(trips["id"])

    def start(*args: str, data: Path = csv, metrics_port: int = 0):
        return shared_services.start(
            "taxi-producer",
            *("--source", "train", "--data", str(data), "--no-progress"),
            *("--topic-prefix", prefix, "--instance", "t", *DRIFT, *args),
            metrics_port=metrics_port,
        )

    def run(*args: str, data: Path = csv) -> int:
        return start(*args, data=data).wait(timeout=120)

    def read(topic: str):
        return read_all(kafka_cluster.bootstrap_servers, prefix + topic)

    def keys(topic: str) -> list[str]:
        return [m.key().decode() for m in read(topic)]

    def log(run_number: int) -> str:
        return (tmp_path / f"taxi-producer-{run_number}.log").read_text()

    def ends_owed_once_started(trips: int):
        replay = saved_checkpoints(KafkaConfig(kafka_cluster.bootstrap_servers), prefix)["train-t"]
        return replay.pending_ends if replay.started == trips else None

    assert run("--limit", "120", *FAST_ENDS) == 0  # the drift begins at its trip 100
    assert sorted(keys(NEW_TRIPS)) == sorted(rows[:120])
    # The next 120, not the same again; SIGKILLed with their ends owed (2-5 s after their
    # start, times 1.5), so the next run sends them.
    metrics_port = free_port()
    killed = start("--limit", "120", "--rate", "60", metrics_port=metrics_port)
    assert wait_for("the next 120 trips started", lambda: ends_owed_once_started(240))
    samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics") or {}
    killed.kill()
    killed.wait()
    assert matching(samples, "taxi_producer_drift_active", drift="slowdown:1.5") == [1.0]
    assert run("--loop", "--limit", "120", *FAST_ENDS) == 0  # past the end: generation 2
    assert sorted(keys(NEW_TRIPS)) == sorted(rows + [f"{r}-g2" for r in rows[:60]])
    assert run() == 0  # without --loop, a replay past its end has nothing to start

    finished = [decode(m.value(), TripFinished) for m in read(FINISHED_TRIPS)]
    started, ended = Counter(keys(NEW_TRIPS)), Counter(e.trip_id for e in finished)
    assert len(started) == ROWS + 60
    assert set(started.values()) == {1}
    assert ended == started  # every trip started ended, once
    # The replay's trips 100 on, and only they, lasted 1.5 times as long, across the kill.
    durations = {e.trip_id: e.trip_duration for e in finished}
    in_order = rows + [f"{r}-g2" for r in rows[:60]]
    real = trips["trip_duration"].tolist()
    assert [durations[trip] for trip in in_order] == [
        real[n % ROWS] * (1.5 if n >= 100 else 1) for n in range(len(in_order))
    ]
    assert [n for n in range(4) if "injected drift begins" in log(n)] == [0]

    # The same replay without its drift would mix two: refused (in this process, sparing the
    # start of one more).
    without_drift = CliRunner().invoke(
        main,
        [
            *("--source", "train", "--data", str(csv), "--model", str(tmp_path / "none.skops")),
            *("--topic-prefix", prefix, "--instance", "t", "--metrics-port", "0"),
            *("--bootstrap-servers", kafka_cluster.bootstrap_servers, "--no-progress"),
        ],
    )
    assert without_drift.exit_code == 1
    assert "injects slowdown:1.5 from trip 100, this one no drift" in without_drift.output
    assert "Restart with its --drift and --drift-from" in without_drift.output
    other, _ = write_synthetic(tmp_path / "other", rows=ROWS, seed=82, test_rows=0)
    assert run(data=other) == 1
    assert "the checkpoint belongs to other trip data" in log(4)
    assert "`taxi reset`" in log(4)
    assert "generation 2 begins" in log(2)


class ResponsesLost(TransactionalProducer):
    """A real transactional producer whose commits numbered in `lost` commit, and are then
    reported failed: as when a commit's response is lost (its broker cut off after it wrote the
    commit), so its outcome is unknown to the caller."""

    def __init__(self, config: KafkaConfig, transactional_id: str, lost: set[int]) -> None:
        super().__init__(config, transactional_id)
        self.commits, self.lost = 0, lost

    def commit(self, records: Outputs, *args: object, **kwargs: object) -> bool:
        committed = super().commit(records, *args, **kwargs)
        self.commits += 1
        return committed and self.commits not in self.lost


@pytest.mark.kafka
def test_a_commit_that_committed_though_reported_failed_is_not_replayed_again(
    kafka_cluster, tmp_path
):
    prefix = f"lost-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_cluster.admin(), project_topics(prefix=prefix))
    kafka = KafkaConfig(kafka_cluster.bootstrap_servers)
    csv, _ = write_synthetic(tmp_path / "data", rows=100, seed=83, test_rows=0)
    trips = read_trips(csv).frame
    producer = ResponsesLost(kafka, f"{prefix}producer", lost={2, 4})
    try:
        run_replay(
            Replay(trips, "train", time_scale=5000),
            producer,
            "train-lost",
            threading.Event(),
            batch_size=20,
            observer=Observer(),
            committed_checkpoint=lambda: saved_checkpoints(kafka, prefix).get("train-lost"),
            topic_prefix=prefix,
        )
    finally:
        producer.close()

    def per_trip(topic: str) -> Counter[str]:
        return Counter(m.key().decode() for m in read_all(kafka.bootstrap_servers, prefix + topic))

    assert producer.commits > 5  # the two "failed" ones went by
    # Had the replay gone back to the checkpoint in its memory, the batches of both commits
    # would have started again.
    assert per_trip(NEW_TRIPS) == Counter(trips["id"])
    assert per_trip(FINISHED_TRIPS) == Counter(trips["id"])


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--drift", "slowdown:fast"], "FACTOR must be a decimal number like 1.5"),
        (["--drift", "shift-pickups:mars"], "AREA must be one of brooklyn"),
        (["--drift-from", "100"], "--drift-from needs --drift"),
    ],
)
def test_a_bad_drift_is_refused_before_anything_starts(args, complaint):
    result = CliRunner().invoke(main, ["--source", "train", *args])
    assert result.exit_code == 2
    assert complaint in result.output


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
