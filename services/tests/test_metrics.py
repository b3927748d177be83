"""The services' Prometheus metrics, without Kafka: naming rules over the whole registry, and
what the observer and the transforms put into it."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count

import numpy as np
import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from taxi_events import ModelMetrics, decode, encode
from taxi_events import testing as events
from taxi_kafka import DELIBERATE_ABORT, broker_states, lag_seconds
from taxi_services import aggregator, metrics, predictor, producer
from taxi_services.aggregator import AggregateTransform
from taxi_services.metrics import BatchHistogram, PrometheusObserver
from taxi_stream import Aggregation

SERVICE_MODULES = (metrics, predictor, aggregator, producer)
# prometheus_client's own process and runtime collectors.
DEFAULT_PREFIXES = ("process_", "python_")
# Base units and the things counted, as the last word of a name.
UNIT_SUFFIXES = ("_seconds", "_bytes", "_ratio", "_records", "_rows", "_trips")
NON_BASE_UNITS = re.compile(
    r"_(ms|milliseconds|minutes|hours|days|kb|mb|gb|kilobytes|percent)(_|$)"
)
TIME_WORDS = re.compile(r"latency|duration|inference|_age|_time")
_services = count()


@dataclass(frozen=True)
class Defined:
    name: str
    kind: str
    documentation: str
    labelnames: tuple[str, ...]


def service_metrics() -> list[Defined]:
    """Every metric the services define (at module level, as prometheus_client wants)."""
    found = []
    for module in SERVICE_MODULES:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                found.append(
                    Defined(value._name, value._type, value._documentation, value._labelnames)
                )
            elif isinstance(value, BatchHistogram):
                found.append(
                    Defined(value.name, "histogram", value.documentation, value.labelnames)
                )
    return found


def exposed_names() -> dict[str, str]:
    """{name: type} as Prometheus scrapes them (the TYPE lines of the text exposition)."""
    text = generate_latest(REGISTRY).decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def fresh_service() -> str:
    """A service name no other test used: the registry is process-wide."""
    return f"test-service-{next(_services)}"


# -- naming rules ----------------------------------------------------------------------------


def test_every_metric_has_the_prefix_and_a_help_text():
    names = [n for n in exposed_names() if not n.startswith(DEFAULT_PREFIXES)]
    assert len(names) >= 20
    assert [n for n in names if not n.startswith("taxi_")] == []
    assert [m.name for m in service_metrics() if not m.documentation.strip()] == []


def test_counters_alone_end_in_total():
    names = exposed_names()
    counters = [n for n, kind in names.items() if kind == "counter"]
    assert "taxi_records_consumed_total" in counters
    assert [n for n in counters if not n.endswith("_total")] == []
    assert [n for n, kind in names.items() if kind != "counter" and "_total" in n] == []


def test_histograms_and_time_quantities_carry_base_units():
    defined = service_metrics()
    assert [m.name for m in defined if NON_BASE_UNITS.search(m.name)] == []
    histograms = [m.name for m in defined if m.kind == "histogram"]
    assert histograms
    assert [n for n in histograms if not n.endswith(UNIT_SUFFIXES)] == []
    timed = [m.name for m in defined if TIME_WORDS.search(m.name)]
    assert timed
    assert [n for n in timed if not n.endswith("_seconds")] == []
    ratios = [m.name for m in defined if re.search(r"share|percentage", m.documentation)]
    assert ratios
    assert [n for n in ratios if not n.endswith("_ratio")] == []


def test_info_metrics_end_in_info_and_no_label_names_a_trip():
    defined = service_metrics()
    infos = [m.name for m in defined if m.kind == "info"]
    assert sorted(infos) == ["taxi_model", "taxi_predictor_model"]
    assert {n + "_info" for n in infos} <= exposed_names().keys()
    labels = {label for m in defined for label in m.labelnames}
    assert {"service", "topic", "source"} <= labels
    assert [label for label in labels if "trip" in label or label == "id"] == []


# -- the observer ----------------------------------------------------------------------------


def test_known_label_sets_start_at_zero():
    service = fresh_service()
    PrometheusObserver(
        service,
        group="g",
        inputs=["in"],
        outputs=["out", "dead_letters"],
        dead_letter_reasons=["decode"],
    )
    assert sample("taxi_records_consumed_total", service=service, topic="in") == 0
    assert sample("taxi_records_produced_total", service=service, topic="dead_letters") == 0
    assert sample("taxi_producer_delivery_errors_total", service=service, topic="out") == 0
    assert sample("taxi_dead_letters_total", service=service, topic="in", reason="decode") == 0
    for outcome in ("committed", "aborted", "deliberately_aborted"):
        assert sample("taxi_transactions_total", service=service, outcome=outcome) == 0
    assert sample("taxi_producers_recreated_total", service=service) == 0
    assert sample("taxi_batch_size_records_count", service=service) == 0


def test_lag_in_records_and_seconds_until_the_partition_is_revoked():
    service = fresh_service()
    observer = PrometheusObserver(service, group="g")
    lags = {("t", 0): 0, ("t", 1): 40, ("t", 2): 7}
    observer.lag(lags)
    # Partition 2 handed nothing over yet: its age is unknown, so it gets no series.
    observer.lag_seconds(lag_seconds(lags, {("t", 0): 1_000, ("t", 1): 4_500}, now_ms=10_000))
    labels = {"service": service, "group": "g", "topic": "t"}
    assert sample("taxi_consumer_lag_records", **labels, partition="1") == 40
    assert sample("taxi_consumer_lag_seconds", **labels, partition="0") == 0
    assert sample("taxi_consumer_lag_seconds", **labels, partition="1") == 5.5
    assert sample("taxi_consumer_lag_seconds", **labels, partition="2") is None
    observer.rebalanced("revoke", [("t", 1), ("t", 2)])
    assert sample("taxi_consumer_lag_records", **labels, partition="1") is None
    assert sample("taxi_consumer_lag_seconds", **labels, partition="1") is None
    assert sample("taxi_consumer_lag_records", **labels, partition="0") == 0


def stats_with_brokers(*brokers: tuple[str, int, str, str]) -> str:
    """librdkafka statistics JSON with these (name, nodeid, source, state) brokers."""
    return json.dumps(
        {
            "type": "consumer",
            "brokers": {
                name: {"name": name, "nodeid": node, "source": source, "state": state}
                for name, node, source, state in brokers
            },
        }
    )


def test_broker_up_counts_only_learned_brokers_in_state_up():
    states = broker_states(
        stats_with_brokers(
            ("127.0.0.1:19092/bootstrap", -1, "configured", "UP"),
            ("127.0.0.1:19092/1", 1, "learned", "UP"),
            ("127.0.0.1:19093/2", 2, "learned", "CONNECT"),
            ("127.0.0.1:19094/3", 3, "learned", "DOWN"),
            ("GroupCoordinator", -1, "logical", "UP"),
        )
    )
    assert states == {1: "UP", 2: "CONNECT", 3: "DOWN"}
    assert broker_states("{}") == {}
    service = fresh_service()
    PrometheusObserver(service).broker_states("consumer", states)
    up = {
        broker: sample("taxi_kafka_broker_up", service=service, client="consumer", broker=broker)
        for broker in ("1", "2", "3")
    }
    assert up == {"1": 1, "2": 0, "3": 0}


def test_transactions_dead_letters_and_failures_are_counted():
    service = fresh_service()
    observer = PrometheusObserver(service)
    observer.transaction_committed(10)
    observer.transaction_aborted("_TIMED_OUT")
    observer.transaction_aborted(DELIBERATE_ABORT)
    observer.transaction_aborted(DELIBERATE_ABORT)
    observer.producer_recreated("_FATAL")
    observer.delivery_failed("out", "_MSG_TIMED_OUT")
    observer.dead_lettered("in", "decode")
    observer.dead_lettered("in", "decode")
    observer.batch_processed(12)
    assert sample("taxi_transactions_total", service=service, outcome="committed") == 1
    assert sample("taxi_transactions_total", service=service, outcome="aborted") == 1
    # Fault injection's aborts apart from those errors forced.
    assert sample("taxi_transactions_total", service=service, outcome="deliberately_aborted") == 2
    assert sample("taxi_producers_recreated_total", service=service) == 1
    assert sample("taxi_producer_delivery_errors_total", service=service, topic="out") == 1
    assert sample("taxi_dead_letters_total", service=service, topic="in", reason="decode") == 2
    assert sample("taxi_batch_size_records_sum", service=service) == 12


def test_latency_runs_from_event_time_to_the_commit():
    service = fresh_service()
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    observer = PrometheusObserver(service, timed_inputs=["in"])
    labels = {"service": service, "topic": "in"}
    assert sample("taxi_processing_latency_seconds_count", **labels) == 0  # declared
    observer.transaction_committed(2)  # a transaction alone observes nothing
    assert sample("taxi_processing_latency_seconds_count", **labels) == 0
    happened = [now - timedelta(seconds=0.2), now - timedelta(seconds=3)]
    observer.events_committed({"in": happened}, now.timestamp())
    assert sample("taxi_processing_latency_seconds_count", **labels) == 2
    assert sample("taxi_processing_latency_seconds_sum", **labels) == pytest.approx(3.2)
    assert sample("taxi_processing_latency_seconds_bucket", **labels, le="0.25") == 1
    # An event from the future (a skewed clock) counts as no delay, not a negative one.
    observer.events_committed({"in": [now + timedelta(seconds=1)]}, now.timestamp())
    assert sample("taxi_processing_latency_seconds_bucket", **labels, le="0.01") == 1


BOUNDS = (0.01, 0.1, 0.25, 1, 10)


def histogram_samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """{(sample name, le): value} of the one histogram in `registry`, its sum left out."""
    return {
        (found.name, found.labels.get("le", "")): found.value
        for family in registry.collect()
        for found in family.samples
        if not found.name.endswith(("_sum", "_created"))
    }


@settings(max_examples=200)
@given(
    st.lists(
        st.lists(
            st.sampled_from([0.0, -1.0, *BOUNDS])
            | st.floats(-5, 50, allow_nan=False, allow_infinity=False),
            max_size=6,
        ),
        max_size=4,
    )
)
def test_a_batch_histogram_exposes_what_a_histogram_of_the_same_values_does(
    batches: list[list[float]],
) -> None:
    expected, actual = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h_seconds", "h", ["a"], buckets=BOUNDS, registry=expected)
    batched = BatchHistogram("h_seconds", "h", ["a"], buckets=BOUNDS, registry=actual)
    reference.labels("x")
    batched.declare("x")
    for values in batches:
        for value in values:
            reference.labels("x").observe(value)
        batched.observe_many(("x",), np.asarray(values, dtype=np.float64))
    assert histogram_samples(actual) == histogram_samples(expected)
    # numpy sums pairwise, so the last bits of the sum may differ.
    assert actual.get_sample_value("h_seconds_sum", {"a": "x"}) == pytest.approx(
        expected.get_sample_value("h_seconds_sum", {"a": "x"}), abs=1e-9
    )


def test_a_batch_histogram_wants_every_label() -> None:
    batched = BatchHistogram("h_seconds", "h", ["a", "b"], BOUNDS, registry=CollectorRegistry())
    with pytest.raises(ValueError, match=r"takes labels \('a', 'b'\)"):
        batched.observe_many(("x",), np.zeros(1))


# -- the aggregator's model-quality gauges ---------------------------------------------------


def message(topic: str, value: bytes, ms: int) -> Message:
    return Message(topic=topic, partition=0, offset=0, value=value, timestamp=(1, ms))


def prediction(trip_id: str, source: str):
    return events.prediction(trip_id, source=source, model_version="m1")


# The champion's figures over all its trips (no challenger): the aggregator's tests have the
# challengers'.
CHAMPION_M7 = {"role": "champion", "model_version": "m7", "challenger": ""}


def test_model_quality_gauges_follow_the_committed_metrics():
    transform = AggregateTransform(
        lambda: Aggregation.create(ttl_ms=60_000, window_ms=10_000, grace_ms=2_000),
        lambda state: None,
    )
    transform.rolled_back()
    source = "test"  # the other tests of this process score train trips
    batch = [
        message(
            "ml_predictions",
            encode(
                events.prediction(
                    f"q{n}", source=source, predicted_duration=600.0 + 40 * n, model_version="m7"
                )
            ),
            1_000 + n,
        )
        for n in range(10)
    ]
    batch += [
        message(
            "finished_trips",
            encode(events.trip_finished(f"q{n}", source=source, trip_duration=500.0 + 90 * n)),
            3_000 + n,
        )
        for n in range(10)
    ]
    transform(batch)
    # Record time 13 s closes the window [0, 10 s).
    result = transform([message("ml_predictions", encode(prediction("q-next", source)), 13_000)])
    published = {
        m.scope: m
        for m in (
            decode(r.value, ModelMetrics) for r in result.records if r.topic == "model_metrics"
        )
        if m.source == source
    }
    assert published.keys() == {"window", "cumulative"}
    transform.committed()
    for scope, m in published.items():
        labels = {"source": source, "scope": scope, **CHAMPION_M7}
        assert sample("taxi_model_rmsle", **labels) == pytest.approx(m.rmsle)
        assert sample("taxi_model_mae_seconds", **labels) == pytest.approx(m.mae)
        assert sample("taxi_model_median_ape_ratio", **labels) == pytest.approx(m.median_ape)
        assert sample("taxi_model_within_30_ratio", **labels) == pytest.approx(m.within_30)
    assert sample("taxi_matched_trips", source=source, **CHAMPION_M7) == 10
    assert sample("taxi_model_info", source=source, version="m7") == 1


def test_a_window_without_matches_reads_nan():
    transform = AggregateTransform(
        lambda: Aggregation.create(ttl_ms=1_000, window_ms=2_000, grace_ms=0),
        lambda state: None,
    )
    transform.rolled_back()
    source = "train"
    transform([message("ml_predictions", encode(prediction("lonely", source)), 100)])
    # At 9 s it expires unmatched into the window [8 s, 10 s), which closes at 11 s.
    transform([message("ml_predictions", encode(prediction("later", source)), 9_000)])
    result = transform([message("ml_predictions", encode(prediction("last", source)), 11_000)])
    window = [decode(r.value, ModelMetrics) for r in result.records if r.topic == "model_metrics"]
    assert [(m.scope, m.count, m.unmatched) for m in window][:1] == [("window", 0, 1)]
    transform.committed()
    labels = {"role": "champion", "model_version": "m1", "challenger": ""}
    assert math.isnan(sample("taxi_model_rmsle", source=source, scope="window", **labels))
