"""End to end on a real 3-broker cluster: producer -> predictor -> aggregator, run as the
console scripts a user runs, each in its own process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taxi_events import ModelMetrics, Prediction, decode
from taxi_kafka.cluster import LocalCluster
from taxi_kafka.testing import read_all
from taxi_model import load_model, quality_metrics, read_trips, write_synthetic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRIPS = 2000


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def replay(csv: Path, instance: str, *extra: str) -> list[str]:
    """taxi-producer arguments replaying the train rows of `csv`."""
    return [
        "--source",
        "train",
        "--data",
        str(csv),
        "--no-progress",
        "--instance",
        instance,
        *extra,
    ]


def all_predictions(cluster: LocalCluster) -> list[Prediction]:
    """Wait until every trip has its prediction (or more: duplicates must show)."""
    return wait_for(
        f"{TRIPS} predictions",
        lambda: (p := predictions(cluster)) and len(p) >= TRIPS and p,
        120,
    )


def predictions(cluster: LocalCluster) -> list[Prediction]:
    return [
        decode(m.value(), Prediction) for m in read_all(cluster.bootstrap_servers, "ml_predictions")
    ]


def final_cumulative(cluster: LocalCluster) -> ModelMetrics | None:
    metrics = [
        decode(m.value(), ModelMetrics)
        for m in read_all(cluster.bootstrap_servers, "model_metrics")
    ]
    train = [m for m in metrics if m.scope == "cumulative" and m.source == "train"]
    return train[-1] if train and train[-1].count == TRIPS else None


@pytest.mark.parametrize("kill_predictor", [False, True], ids=["clean", "predictor-killed"])
def test_every_trip_is_predicted_once_and_scored_exactly(
    pipeline_cluster, services, trained_model_path, tmp_path, kill_predictor
):
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=77, test_rows=0)
    model = str(trained_model_path)
    try:
        services.start("taxi-predictor", "--model", model, "--instance", "p1")
        services.start("taxi-aggregator", "--instance", "a1", "--window", "2", "--grace", "1")
        producer = services.start(
            "taxi-producer",
            *replay(train_csv, "e2e", *(["--rate", "200"] if kill_predictor else [])),
        )
        if kill_predictor:
            wait_for("some predictions", lambda: len(predictions(pipeline_cluster)) > 300, 90)
            services.running[0].kill()  # SIGKILL, mid-transaction as likely as not
            services.running[0].wait()
            services.start("taxi-predictor", "--model", model, "--instance", "p1")
        assert producer.wait(timeout=120) == 0

        got = all_predictions(pipeline_cluster)
        cumulative = wait_for(
            "the final cumulative metrics", lambda: final_cumulative(pipeline_cluster), 120
        )
    finally:
        codes = services.stop_all()

    assert len(got) == TRIPS
    assert len({p.trip_id for p in got}) == TRIPS
    trips = read_trips(train_csv).frame
    assert {p.trip_id for p in got} == set(trips["id"])

    offline_predicted = load_model(trained_model_path).predict(trips)
    offline = quality_metrics(trips["trip_duration"], offline_predicted)
    assert cumulative.count == TRIPS
    assert cumulative.unmatched == 0
    assert math.isclose(cumulative.rmsle, offline.rmsle, rel_tol=0, abs_tol=1e-9)
    assert codes == [0, 0]  # the predictor and the aggregator shut down cleanly


def test_a_killed_producer_resumes_without_repeating_or_losing_trips(
    pipeline_cluster, services, tmp_path
):
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=78, test_rows=0)
    args = replay(train_csv, "k")
    first = services.start("taxi-producer", *args, "--rate", "300")

    def started() -> list[str]:
        return [m.key().decode() for m in read_all(pipeline_cluster.bootstrap_servers, "new_trips")]

    wait_for("a third of the trips started", lambda: len(started()) > TRIPS // 3, 60)
    first.kill()  # SIGKILL: trip ends are owed, a transaction may be open
    first.wait()
    second = services.start("taxi-producer", *args)
    assert second.wait(timeout=120) == 0

    ended = [
        m.key().decode() for m in read_all(pipeline_cluster.bootstrap_servers, "finished_trips")
    ]
    ids = set(read_trips(train_csv).frame["id"])
    assert sorted(started()) == sorted(ids)  # every trip started, none twice
    assert sorted(ended) == sorted(ids)  # every started trip ended, once


def test_two_predictors_split_the_partitions(
    pipeline_cluster, services, trained_model_path, tmp_path
):
    train_csv, _ = write_synthetic(tmp_path, rows=TRIPS, seed=79, test_rows=0)
    model = str(trained_model_path)
    try:
        services.start("taxi-predictor", "--model", model, "--instance", "p1")
        services.start("taxi-predictor", "--model", model, "--instance", "p2")
        producer = services.start("taxi-producer", *replay(train_csv, "two", "--rate", "400"))
        assert producer.wait(timeout=120) == 0
        got = all_predictions(pipeline_cluster)
    finally:
        codes = services.stop_all()
    assert codes == [0, 0]
    assert len(got) == len({p.trip_id for p in got}) == TRIPS

    def partitions_of(log: Path) -> set[str]:
        """new_trips partitions in the instance's latest assignment."""
        assigned = [line for line in log.read_text().splitlines() if " assign: " in line]
        return set(assigned[-1].split(" assign: ")[1].split(", ")) if assigned else set()

    first, second = (partitions_of(tmp_path / f"taxi-predictor-{i}.log") for i in (0, 1))
    assert first
    assert second
    assert not first & second
    assert len(first | second) == 6
