"""What the peers `taxi bench` measures the predictor against share (parts quix and bytewax:
benchmarks/peer_quix.py, benchmarks/peer_bytewax.py): their Kafka settings, read from the
environment the bench gives every process it measures, and the job itself: a trip start's JSON
decoded, the model's features and prediction, a prediction's JSON encoded.

It imports no taxi_kafka and no confluent_kafka: peer_quix.py runs in an environment of its own
(benchmarks/peers/quix/), whose confluent-kafka is older than the workspace's.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from threadpoolctl import threadpool_limits

from taxi_model import INPUT_COLUMNS, TripDurationModel, load_model

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
CONFIG_FILE_ENV = "KAFKA_CONFIG_FILE"
PASSTHROUGH_PREFIX = "TAXI_KAFKA_"
BOOTSTRAP_KEY = "bootstrap.servers"

# The producer settings of the pipeline's services (taxi_kafka.producer's PRODUCER_DEFAULTS and
# PRODUCER_ENFORCED, less its statistics; test_bench.py holds the two together): lz4, a 5 ms
# linger, idempotent with acks=all, and the timeouts that ride out a partition. So the peers
# write as durably and as compactly as the predictor, and only the designs differ. As text:
# bytewax's add_config takes strings.
PRODUCER_SETTINGS: Mapping[str, str] = {
    "partitioner": "murmur2_random",
    "linger.ms": "5",
    "compression.type": "lz4",
    "socket.timeout.ms": "10000",
    "socket.connection.setup.timeout.ms": "10000",
    "topic.metadata.refresh.interval.ms": "2000",
    "enable.idempotence": "true",
    "acks": "all",
}
# As the predictor (taxi_services.predictor.MODEL_THREADS): one thread per model call.
MODEL_THREADS = 1
# The fields of a prediction the peers write: those of taxi_events.Prediction that a trip start
# and the model give (its codec's own fields, role and schema_version, are left out).
TRIP_FIELDS = (
    "trip_id",
    "source",
    "pickup_datetime",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
)


def kafka_settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The librdkafka settings a service would use in this environment, `bootstrap.servers`
    included: those of the file named by KAFKA_CONFIG_FILE (key=value lines, as `taxi cluster up
    --secure` writes a principal's), then TAXI_KAFKA_<NAME> variables, then
    KAFKA_BOOTSTRAP_SERVERS unless a setting names the brokers. As taxi_kafka.KafkaConfig's
    from_env reads them, without its flags (test_bench.py checks they agree)."""
    settings: dict[str, str] = {}
    config_file = env.get(CONFIG_FILE_ENV)
    if config_file:
        settings |= _properties(Path(config_file).read_text())
    for name, value in env.items():
        if name.startswith(PASSTHROUGH_PREFIX) and len(name) > len(PASSTHROUGH_PREFIX):
            escaped = name[len(PASSTHROUGH_PREFIX) :].lower().replace("__", "\0")
            settings[".".join(part.replace("\0", "_") for part in escaped.split("_"))] = value
    bootstrap = settings.pop(BOOTSTRAP_KEY, None) or env.get(BOOTSTRAP_ENV)
    if not bootstrap:
        raise SystemExit(f"no brokers: set {BOOTSTRAP_ENV}")
    return {BOOTSTRAP_KEY: bootstrap.strip(), **settings}


def beyond_brokers(settings: Mapping[str, str]) -> dict[str, str]:
    """Every setting but `bootstrap.servers` (security included), which the libraries take
    apart from the brokers, for their consumers and producers alike."""
    return {key: value for key, value in settings.items() if key != BOOTSTRAP_KEY}


def job_arguments(description: str, group_help: str) -> argparse.ArgumentParser:
    """The command line every peer takes from the bench: its topics, group and model."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", required=True, help="Topic of trip starts (JSON).")
    parser.add_argument("--sink", required=True, help="Topic to write the predictions to.")
    parser.add_argument("--group", required=True, help=group_help)
    parser.add_argument("--model", type=Path, required=True, help="The .skops model file.")
    parser.add_argument("--metrics-port", type=int, default=0, help="Ignored.")
    return parser


def _properties(text: str) -> dict[str, str]:
    settings = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


class PeerModel:
    """The predictor's model file, loaded and checked as the predictor loads it, predicting one
    trip start (a decoded JSON object) or a batch of them."""

    def __init__(self, path: Path) -> None:
        self.model: TripDurationModel = load_model(path)
        self.version = self.model.version
        threadpool_limits(MODEL_THREADS)

    def predict_one(self, trip: Mapping[str, Any]) -> dict[str, Any]:
        """One trip's frame, features and model call."""
        frame = pd.DataFrame([trip], columns=list(INPUT_COLUMNS))
        duration = float(self.model.predict(frame)[0])
        return prediction(trip, duration, self.version, _now())

    def predict_batch(self, trips: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One frame, one features call and one model call for all of `trips`, in order."""
        if not trips:
            return []
        frame = pd.DataFrame(list(trips), columns=list(INPUT_COLUMNS))
        durations = self.model.predict(frame).tolist()
        at = _now()
        return [
            prediction(trip, duration, self.version, at)
            for trip, duration in zip(trips, durations, strict=True)
        ]


def prediction(trip: Mapping[str, Any], duration: float, version: str, at: str) -> dict[str, Any]:
    """A prediction of `trip` as a JSON object: the fields of taxi_events.Prediction."""
    return {
        **{name: trip[name] for name in TRIP_FIELDS},
        "predicted_duration": duration,
        "model_version": version,
        "trip_started_at": trip["produced_at"],
        "predicted_at": at,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()
