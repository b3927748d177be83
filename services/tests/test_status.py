"""`taxi status`'s report, built from probed facts without any I/O. (The command itself runs
against a live `taxi up` in test_up.py.)"""

from __future__ import annotations

import json

from taxi_kafka.cluster import ClusterStatus, NodeStatus, PartitionState
from taxi_services.scrape import parse_samples
from taxi_services.status import PipelineStatus, ServiceState, format_report, service_detail

PREDICTOR_METRICS = """\
# TYPE taxi_records_produced_total counter
taxi_records_produced_total{service="predictor",topic="ml_predictions"} 1200.0
taxi_records_produced_total{service="predictor",topic="dead_letters"} 3.0
# TYPE taxi_consumer_lag_records gauge
taxi_consumer_lag_records{partition="0",service="predictor",topic="new_trips"} 4.0
taxi_consumer_lag_records{partition="1",service="predictor",topic="new_trips"} 6.0
"""


def cluster(up: int, under_replicated: int = 0) -> ClusterStatus:
    return ClusterStatus(
        runtime_dir="/tmp/c",
        cluster_id="id",
        kafka_version="4.1.2",
        bootstrap_servers="127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
        nodes=tuple(
            NodeStatus(n, 19091 + n, 19191 + n, 100 + n if n <= up else None, n <= up, n <= up)
            for n in (1, 2, 3)
        ),
        controller=1,
        controller_epoch=3,
        partitions=tuple(
            PartitionState(
                "new_trips", p, 1, (1, 2, 3), (1, 2) if p < under_replicated else (1, 2, 3)
            )
            for p in range(6)
        ),
    )


def test_the_predictor_line_shows_its_output_and_lag_summed_over_partitions():
    detail = service_detail("predictor", parse_samples(PREDICTOR_METRICS))
    assert detail == "predicted 1,200, lag 10"


def test_a_service_without_samples_of_its_kind_reads_zero():
    assert service_detail("aggregator", {}) == "scored 0, unmatched 0, RMSLE train 0.000"


def test_the_report_says_which_brokers_are_down_and_what_is_under_replicated():
    report = format_report(
        PipelineStatus(
            cluster=cluster(up=2, under_replicated=6),
            services=[
                ServiceState("predictor", "http://127.0.0.1:9103/metrics", True, "predicted 5"),
                ServiceState("aggregator", "http://127.0.0.1:9104/metrics", False),
            ],
            group_lag={"taxi-predictor": {("new_trips", 0): 4, ("new_trips", 1): 6}},
            model="abc at models/taxi_pipeline.pkl",
        )
    )
    lines = report.splitlines()
    assert lines[0].startswith("Kafka: 2 of 3 brokers up (127.0.0.1:19092,")
    assert lines[0].endswith("6 partitions, 6 under-replicated, 0 offline")
    assert any(line.split()[:2] == ["predictor", "running"] for line in lines)
    assert any(line.split()[:3] == ["aggregator", "not", "running"] for line in lines)
    assert "consumer lag: taxi-predictor 10" in lines
    assert "taxi up:" not in report


def test_the_json_report_is_machine_readable():
    status = PipelineStatus(
        cluster=cluster(up=3),
        services=[ServiceState("predictor", "u", True, "d")],
        group_lag={"taxi-aggregator": {("ml_predictions", 0): 2}},
        up={"pid": 1, "started_at": "t", "logs": "l"},
    )
    data = json.loads(json.dumps(status.to_dict()))
    assert data["cluster"]["healthy"] is True
    assert data["services"] == [{"name": "predictor", "url": "u", "running": True, "detail": "d"}]
    assert data["group_lag"] == {"taxi-aggregator": 2}
