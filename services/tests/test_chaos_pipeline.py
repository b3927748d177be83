"""The chaos run's pipeline, before anything starts: what its services are told."""

from __future__ import annotations

import logging

import pytest

from taxi_kafka.cluster import LocalCluster
from taxi_services.chaos.pipeline import Pipeline


def service_log_level(tmp_path) -> str:
    pipeline = Pipeline(
        instance="chaos-test",
        cluster=LocalCluster(tmp_path / "cluster"),  # never started
        model_path=tmp_path / "model.skops",
        replays={},
        logs=tmp_path / "logs",
    )
    return pipeline.env("predictor")["TAXI_LOG_LEVEL"]


@pytest.mark.parametrize("level", ["WARNING", "INFO"])
def test_the_services_log_at_info_at_least(tmp_path, caplog, monkeypatch, level):
    # Their logs are a failed run's post-mortem, whatever the environment asks for.
    monkeypatch.setenv("TAXI_LOG_LEVEL", level)
    caplog.set_level(level, logger="taxi.chaos")
    assert service_log_level(tmp_path) == "INFO"


def test_the_services_log_at_debug_when_taxi_does(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="taxi.chaos")
    assert service_log_level(tmp_path) == "DEBUG"
