"""`taxi status`'s report, built from probed facts without any I/O. (The command itself runs
against a live `taxi up` in test_up.py.)"""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka import GroupLag
from taxi_kafka.cluster import ClusterStatus, NodeStatus, PartitionState
from taxi_services.scrape import Samples, parse_samples
from taxi_services.status import (
    NO_FIGURE,
    PipelineStatus,
    ServiceState,
    format_report,
    lag_text,
    rmsle_text,
    scored_trips,
    service_detail,
    trainer_text,
)

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


def test_the_predictor_line_shows_its_output_but_not_its_own_lag_gauge_which_counts_markers():
    detail = service_detail("predictor", parse_samples(PREDICTOR_METRICS))
    assert detail == "predicted 1,200"


def test_the_predictor_line_names_its_champion_and_challenger():
    serving = (
        "# TYPE taxi_predictor_model info\n"
        'taxi_predictor_model_info{champion="fb295ce8d39b",challenger="0a1b2c3d4e5f"} 1\n'
    )
    detail = service_detail("predictor", parse_samples(PREDICTOR_METRICS + serving))
    assert (
        detail
        == "predicted 1,200 with champion fb295ce8d39b, challenger 0a1b2c3d4e5f in the shadow"
    )
    alone = serving.replace("0a1b2c3d4e5f", "")
    detail = service_detail("predictor", parse_samples(PREDICTOR_METRICS + alone))
    assert detail == "predicted 1,200 with champion fb295ce8d39b"


# What taxi-trainer exports after 3 candidates (one refused) and an automatic promotion: its
# outcomes are all there from the start, at 0; a decision only once the policy made one.
TRAINER_METRICS = """\
# TYPE taxi_trainer_window_trips gauge
taxi_trainer_window_trips 12345.0
# TYPE taxi_trainer_candidates_total counter
taxi_trainer_candidates_total{outcome="published"} 2.0
taxi_trainer_candidates_total{outcome="turned-down"} 1.0
taxi_trainer_candidates_total{outcome="refused"} 1.0
# TYPE taxi_trainer_auto_decisions_total counter
taxi_trainer_auto_decisions_total{action="promote"} 1.0
taxi_trainer_auto_decisions_total{action="withdraw"} 1.0
"""


def test_the_trainer_line_shows_its_window_candidates_and_promotions():
    samples = parse_samples(TRAINER_METRICS)
    assert trainer_text(samples) == "challengers 2, promoted 1"
    assert (
        service_detail("trainer", samples)
        == "window 12,345 trips, challengers 2, promoted 1, turned down 1"
    )
    # A rollback is said once there is one.
    rolled_back = 'taxi_trainer_auto_decisions_total{action="rollback"} 1.0\n'
    assert trainer_text(parse_samples(TRAINER_METRICS + rolled_back)) == (
        "challengers 2, promoted 1, rolled back 1"
    )
    # Before its first batch commits, or with --no-auto-promote: zeros, not a failure.
    assert service_detail("trainer", {}) == (
        "window 0 trips, challengers 0, promoted 0, turned down 0"
    )


def test_a_service_without_samples_reads_zero_and_no_rmsle():
    assert service_detail("aggregator", {}) == f"scored 0, unmatched 0, RMSLE train {NO_FIGURE}"


def aggregator_samples(matched: dict[str, int], rmsle: dict[str, float]) -> Samples:
    """The aggregator's gauges per source: the champion (version v2) on all its trips, as given;
    beside them what must not count: v1, the champion before it, and v2 head to head with a
    challenger c3."""
    lines = [
        "# TYPE taxi_matched_trips gauge",
        "# TYPE taxi_model_rmsle gauge",
        "# TYPE taxi_model info",
    ]
    for s, n in matched.items():
        lines.append(f'taxi_model_info{{source="{s}",version="v2"}} 1')
        for version, challenger, count in (("v2", "", n), ("v1", "", 7), ("v2", "c3", 1)):
            labels = f'challenger="{challenger}",model_version="{version}",role="champion"'
            lines.append(f'taxi_matched_trips{{{labels},source="{s}"}} {count}')
            value = rmsle.get(s, math.nan) if (version, challenger) == ("v2", "") else 0.9
            lines.append(f'taxi_model_rmsle{{{labels},scope="cumulative",source="{s}"}} {value}')
    return parse_samples("\n".join(lines) + "\n")


def test_the_rmsle_shows_once_a_trip_of_its_source_is_scored():
    samples = aggregator_samples({"train": 3, "test": 2}, {"train": 0.41249, "test": 0.5})
    assert rmsle_text(samples, "train") == "0.412"
    # 3 + 2 by v2, 7 + 7 by v1; the head-to-head trips are among them already.
    assert service_detail("aggregator", samples) == "scored 19, unmatched 0, RMSLE train 0.412"
    # `taxi up --limit` stops once every trip started is scored: a trip counted twice would
    # stop it early.
    assert scored_trips(samples) == 19


def test_no_rmsle_until_a_trip_of_its_source_is_scored():
    # Before a match the gauge is missing, NaN, or (zero trips) no measurement at all.
    assert rmsle_text(aggregator_samples({}, {}), "train") == NO_FIGURE
    assert rmsle_text(aggregator_samples({"train": 0}, {"train": 0.0}), "train") == NO_FIGURE
    assert rmsle_text(aggregator_samples({"train": 2}, {"train": math.nan}), "train") == NO_FIGURE
    assert rmsle_text(aggregator_samples({"test": 5}, {"test": 0.3}), "train") == NO_FIGURE


@given(matched=st.integers(0, 10**6), rmsle=st.floats(min_value=0, allow_infinity=False))
def test_the_rmsle_is_a_figure_exactly_when_trips_were_scored_and_it_is_a_number(matched, rmsle):
    text = rmsle_text(aggregator_samples({"train": matched}, {"train": rmsle}), "train")
    if matched and not math.isnan(rmsle):
        assert float(text) == round(rmsle, 3)
    else:
        assert text == NO_FIGURE


def test_lag_reads_in_records_and_as_a_range_where_counting_stopped_short():
    assert lag_text(None) == NO_FIGURE
    caught_up = GroupLag(
        {("new_trips", 0): 1, ("new_trips", 1): 1}, {("new_trips", 0): 0, ("new_trips", 1): 0}
    )
    assert lag_text(caught_up) == "0 records"
    capped = GroupLag({("new_trips", 0): 12_345}, {("new_trips", 0): 10_000}, exact=False)
    assert lag_text(capped) == "at least 10,000 records (at most 12,345)"


def test_the_report_says_which_brokers_are_down_and_what_is_under_replicated():
    report = format_report(
        PipelineStatus(
            cluster=cluster(up=2, under_replicated=6),
            services=[
                ServiceState("predictor", "http://127.0.0.1:9103/metrics", True, "predicted 5"),
                ServiceState("aggregator", "http://127.0.0.1:9104/metrics", False),
                ServiceState("trainer", "http://127.0.0.1:9106/metrics", True, "window 5 trips"),
            ],
            group_lag={
                "taxi-predictor": GroupLag(
                    {("new_trips", 0): 5, ("new_trips", 1): 7},
                    {("new_trips", 0): 4, ("new_trips", 1): 6},
                ),
                "taxi-aggregator": None,
            },
            model="abc at models/taxi_pipeline.skops",
        )
    )
    lines = report.splitlines()
    assert lines[0].startswith("Kafka: 2 of 3 brokers up (127.0.0.1:19092,")
    assert "127.0.0.1:19094, PLAINTEXT); " in lines[0]
    assert lines[0].endswith("6 partitions, 6 under-replicated, 0 offline")
    assert any(line.split()[:2] == ["predictor", "running"] for line in lines)
    assert any(line.split()[:3] == ["aggregator", "not", "running"] for line in lines)
    assert "trainer         running      http://127.0.0.1:9106/metrics   window 5 trips" in lines
    assert f"consumer lag: taxi-predictor 10 records, taxi-aggregator {NO_FIGURE}" in lines
    assert "taxi up:" not in report


def test_the_json_report_is_machine_readable():
    status = PipelineStatus(
        cluster=cluster(up=3),
        services=[ServiceState("predictor", "u", True, "d")],
        group_lag={
            "taxi-aggregator": GroupLag({("ml_predictions", 0): 3}, {("ml_predictions", 0): 2}),
            "taxi-predictor": None,
        },
        up={"pid": 1, "started_at": "t", "logs": "l"},
    )
    data = json.loads(json.dumps(status.to_dict()))
    assert data["cluster"]["healthy"] is True
    assert data["services"] == [{"name": "predictor", "url": "u", "running": True, "detail": "d"}]
    assert data["group_lag"] == {
        "taxi-aggregator": {"records": 2, "exact": True, "offsets": 3},
        "taxi-predictor": None,
    }
