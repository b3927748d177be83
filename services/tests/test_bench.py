"""`taxi bench`: its arithmetic and report without I/O, then one tiny run on a real cluster."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import tomllib
from pathlib import Path

import attrs
import click
import orjson
import peer_common
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import Prediction, encode
from taxi_events.columns import decode_trip_starts
from taxi_kafka import KafkaConfig
from taxi_kafka.cli import read_config_file
from taxi_kafka.producer import PRODUCER_DEFAULTS, PRODUCER_ENFORCED
from taxi_model import generate_trips, load_model
from taxi_services.bench.figures import (
    SCALING_CORES,
    MachineTicks,
    Progress,
    Seen,
    busy_share,
    caught_up,
    cpu_ticks,
    median_max_ms,
    percentiles_ms,
    rate,
    replay_rate,
    start_rate,
    steady,
    steady_visible,
    targets,
)
from taxi_services.bench.peers import CHECKOUT, QUIX_PROJECT, PeerError, script, sync_environment
from taxi_services.bench.results import (
    PARTS,
    WRITTEN,
    Drain,
    LatencyRun,
    ReplayRun,
    Results,
    Switch,
    SwitchRun,
    Throughput,
    missed_targets,
    report,
)
from taxi_services.bench.runner import Settings, reproduce
from taxi_services.commands.bench import parse_parts, parse_rates
from taxi_stream import Replay

# -- rates -----------------------------------------------------------------------------------


def test_rate_is_records_per_second_between_two_samples():
    assert rate(Progress(10.0, 1_000), Progress(12.5, 6_000)) == 2_000


def test_rate_needs_time_to_pass():
    with pytest.raises(ValueError, match="no time passed"):
        rate(Progress(3.0, 0), Progress(3.0, 10))


def test_caught_up_counts_the_backlogs_records_in_each_partition():
    ends, begins = {0: 100, 1: 50, 2: 0}, {0: 0, 1: 10}
    # Partition 0 stepped over its commit marker (101): still 100 records. Partition 1 has
    # no commit yet (-1001), partition 3 is not part of the backlog.
    assert caught_up({0: 101, 1: -1001, 2: 0, 3: 7}, ends, begins) == 100
    assert caught_up({0: 40, 1: 50}, ends, begins) == 80
    assert caught_up({}, ends, begins) == 0
    # A second backlog after the first: what the group committed of the first is no progress.
    assert caught_up({0: 101, 1: 51}, {0: 300, 1: 60}, {0: 102, 1: 52}) == 0


@given(
    st.dictionaries(
        st.integers(0, 11), st.tuples(st.integers(0, 5_000), st.integers(0, 5_000)), max_size=12
    ),
    st.dictionaries(st.integers(0, 11), st.integers(-1001, 20_000), max_size=12),
)
def test_caught_up_is_between_nothing_and_the_whole_backlog(spans, committed):
    begins = {p: begin for p, (begin, _) in spans.items()}
    ends = {p: begin + size for p, (begin, size) in spans.items()}
    records = sum(size for _, size in spans.values())
    assert 0 <= caught_up(committed, ends, begins) <= records
    assert caught_up({p: end + 1 for p, end in ends.items()}, ends, begins) == records
    assert caught_up(begins, ends, begins) == 0


def test_replay_rate_spans_the_transactions_after_the_first():
    # Checkpoints of a 5,000-trip replay: 2,000 trips per transaction, then ends only.
    samples = [Progress(0.0, 2_000), Progress(1.0, 4_000), Progress(2.0, 5_000), Progress(4, 5_000)]
    assert replay_rate(samples, 5_000) == 1_500


def test_replay_rate_is_unknown_from_one_transaction_or_an_unfinished_replay():
    assert replay_rate([Progress(0.0, 2_000)], 2_000) is None
    assert replay_rate([Progress(0.0, 2_000), Progress(1.0, 4_000)], 5_000) is None
    assert replay_rate([], 10) is None


# -- latency ---------------------------------------------------------------------------------


def test_percentiles_of_known_latencies():
    summary = percentiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert summary == {
        "p50_ms": 50.5,
        "p95_ms": 95.0,
        "p99_ms": 99.0,
        "p99.9_ms": 99.9,
        "max_ms": 100.0,
    }


@given(st.lists(st.floats(0, 60, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_are_ordered(seconds):
    s = percentiles_ms(seconds)
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["p99.9_ms"] <= s["max_ms"]
    assert s["max_ms"] == pytest.approx(max(seconds) * 1000, abs=0.05)


def test_percentiles_need_latencies():
    with pytest.raises(ValueError, match="no durations"):
        percentiles_ms([])


def test_median_and_max_of_a_few_switches():
    assert median_max_ms([0.3, 0.1, 0.2, 1.0]) == {"median_ms": 250.0, "max_ms": 1000.0}
    assert median_max_ms([0.05]) == {"median_ms": 50.0, "max_ms": 50.0}
    with pytest.raises(ValueError, match="no durations"):
        median_max_ms([])


def seen(started: float, latency: float = 0.1) -> Seen:
    return Seen(started=started, predicted=started + latency / 2, seen=started + latency)


def test_the_steady_window_leaves_out_trips_started_during_the_warmup():
    trips = [seen(100 + i / 10) for i in range(100)]  # 10 trips/s for 10 s
    window = steady(trips, warmup_s=2)
    assert [s.started for s in window] == [s.started for s in trips[20:]]
    assert steady([], 2) == []


def test_trip_visibility_over_the_steady_window_of_the_predictions():
    predictions = [seen(100 + i) for i in range(5)]
    trips = [(100.0 + i, 100.0 + i + 0.01 * i) for i in range(6)]
    assert steady_visible(trips, predictions, warmup_s=3) == pytest.approx([0.03, 0.04, 0.05])
    assert steady_visible(trips, [], warmup_s=3) == []


def test_start_rate_from_the_first_start_to_the_last():
    assert start_rate([seen(100 + i / 10) for i in range(101)]) == pytest.approx(10)
    assert start_rate([seen(5)]) is None


# -- CPU -------------------------------------------------------------------------------------


def test_cpu_ticks_of_a_process_whose_name_has_spaces_and_parentheses():
    line = (
        "4242 (taxi (bench) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
        "350 25 0 0 20 0 3 0 12345 1000 200 18446744073709551615"
    )
    assert cpu_ticks(line) == 375


def test_busy_share_of_the_whole_machine():
    first = MachineTicks.parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4")
    second = MachineTicks.parse("cpu  250 0 100 850 50 0 0 0 0 0\ncpu0 1 2 3 4")
    assert first == MachineTicks(busy=150, total=1000)
    assert busy_share(first, second) == pytest.approx(200 / 250)
    assert busy_share(first, first) is None


# -- targets and the report ------------------------------------------------------------------


def by_name(found: list) -> dict:
    return {t.name: t for t in found}


def test_targets_met_and_missed():
    found = by_name(
        targets(
            {"passthrough": 10_000, "predictor": 6_000, "naive": 100, "two-predictors": 9_000},
            {2000.0: 180.0},
            cores=8,
        )
    )
    assert found["predictor_vs_baseline"].value == pytest.approx(0.6)
    assert found["predictor_vs_baseline"].met is True
    assert found["predictor_vs_naive"].met is True
    assert found["p99_at_2000_ms"].met is True
    assert found["two_instances_vs_one"].value == pytest.approx(1.5)
    assert found["two_instances_vs_one"].met is False
    assert found["two_instances_vs_one"].applicable is True
    slow = by_name(
        targets({"passthrough": 10_000, "predictor": 4_000, "naive": 400}, {2000.0: 300.0}, cores=8)
    )
    assert slow["predictor_vs_baseline"].met is False
    assert slow["predictor_vs_naive"].met is False
    assert slow["p99_at_2000_ms"].met is False


def test_the_peer_targets_are_predictor_over_quix_and_over_bytewax():
    found = by_name(targets({"predictor": 30_000, "quix": 1_000, "bytewax": 25_000}, {}, cores=2))
    assert found["predictor_vs_quix"].value == pytest.approx(30)
    assert found["predictor_vs_quix"].threshold == 20
    assert found["predictor_vs_quix"].met is True
    assert found["predictor_vs_bytewax"].value == pytest.approx(1.2)
    assert found["predictor_vs_bytewax"].threshold == 1
    assert found["predictor_vs_bytewax"].met is True
    slow = by_name(targets({"predictor": 30_000, "quix": 2_000, "bytewax": 31_000}, {}, cores=2))
    assert slow["predictor_vs_quix"].met is False
    assert slow["predictor_vs_bytewax"].met is False
    # quix-batched is measured and reported, but the target is on quix as written.
    assert "predictor_vs_quix_batched" not in found


def test_targets_not_measured_are_neither_met_nor_missed():
    found = by_name(targets({"predictor": 5_000}, {500.0: 90.0}, cores=8))
    assert all(t.value is None and t.met is None for t in found.values())


def test_scaling_is_not_applicable_without_a_core_per_predictor():
    found = by_name(
        targets(
            {"predictor": 5_000, "two-predictors": 5_500},
            {},
            cores=SCALING_CORES - 2,
            scaling_busy=0.97,
        )
    )
    scaling = found["two_instances_vs_one"]
    assert scaling.met is False
    assert not scaling.applicable
    assert "2 cores" in scaling.note
    assert "97% busy" in scaling.note


def drain(records: int, seconds: float) -> Drain:
    return Drain(Progress(100.0, 0), Progress(100.0 + seconds, records), seconds / 2, 0.75)


def throughput(part: str, records: int, *seconds: float) -> Throughput:
    return Throughput(
        part,
        processes="1 x test",
        drains=tuple(drain(records, s) for s in seconds),
        processed=records * len(seconds),
        outputs=records * len(seconds),
        distinct_outputs=records * len(seconds),
        shadow_outputs=records * len(seconds) if part == "shadow" else None,
        measured_by=WRITTEN if part == "bytewax" else "committed input offsets",
        library="lib 1.0" if part in ("quix", "quix-batched", "bytewax") else None,
    )


def switch_run(**changes) -> SwitchRun:
    values = {
        "rate": 100.0,
        "switches": (
            Switch("promote", "v2", 0.4, 30),
            Switch("rollback", "v1", 0.2, 12),
            Switch("promote", "v2", 0.9, 70),
        ),
        "started": 1_000,
        "distinct_started": 1_000,
        "predictions": 1_000,
        "distinct_predicted": 1_000,
        "by_version": {"v1": 600, "v2": 400},
        "machine_busy": 0.25,
        **changes,
    }
    return SwitchRun(**values)


def test_a_switch_run_reports_each_switch_its_median_and_max_and_exactly_once():
    run = switch_run().to_json()
    assert [(s["action"], s["version"], s["ms"]) for s in run["switches"]] == [
        ("promote", "v2", 400.0),
        ("rollback", "v1", 200.0),
        ("promote", "v2", 900.0),
    ]
    assert run["switch_ms"] == {"median_ms": 400.0, "max_ms": 900.0}
    assert run["switches"][2]["predictions_before"] == 70
    assert run["exactly_once"] is True
    assert run["predictions_by_version"] == {"v1": 600, "v2": 400}


def test_a_trip_predicted_twice_or_skipped_is_not_exactly_once():
    assert not switch_run(predictions=1_001).exactly_once  # one twice
    assert not switch_run(predictions=999, distinct_predicted=999).exactly_once  # one skipped
    assert not switch_run(distinct_started=1_001).exactly_once


def test_the_fastest_drain_counts():
    run = throughput("predictor", 1_000, 0.5, 0.25, 0.4).to_json()
    assert run["records_per_s"] == 4_000
    assert run["runs_records_per_s"] == [2_000, 4_000, 2_500]
    assert run["seconds"] == 0.25
    assert run["input_records"] == run["output_records"] == 3_000


def results() -> Results:
    latency = LatencyRun(
        rate=2000.0,
        trips=300,
        seen=tuple(seen(1_000 + i / 100, latency=0.05 + i / 10_000) for i in range(300)),
        distinct=300,
        trips_visible=tuple((1_000 + i / 100, 1_000.01 + i / 100) for i in range(300)),
        warmup_s=1.0,
        machine_busy=0.5,
    )
    return Results(
        throughput={
            "passthrough": throughput("passthrough", 10_000, 1.0, 1.2),
            "predictor": throughput("predictor", 10_000, 2.5, 2.0),
            "two-predictors": throughput("two-predictors", 10_000, 1.6),
            "naive": throughput("naive", 100, 1.0),
            "shadow": throughput("shadow", 10_000, 4.0, 3.2),
            "quix": throughput("quix", 1_000, 4.0),
            "quix-batched": throughput("quix-batched", 2_000, 1.0),
            "bytewax": throughput("bytewax", 10_000, 2.0, 2.5),
        },
        latency={2000.0: latency},
        replay=ReplayRun(
            trips=10_000,
            trips_per_s=8_000.0,
            transactions=7,
            started=10_000,
            distinct_started=10_000,
            ended=10_000,
        ),
        switch=switch_run(),
    )


def test_the_report_holds_rates_ratios_latencies_targets_and_the_environment():
    result = report(results(), environment={"cores": 2}, settings={"records": 10_000}, notes=["n"])
    json.dumps(result)  # plain JSON
    assert result["rates_records_per_s"] == {
        "passthrough": 10_000,
        "predictor": 5_000,
        "two-predictors": 6_250,
        "naive": 100,
        "shadow": 3_125,
        "quix": 250,
        "quix-batched": 2_000,
        "bytewax": 5_000,
    }
    assert result["ratios"] == {
        "predictor_over_passthrough": 0.5,
        "predictor_over_naive": 50.0,
        "two_over_one": 1.25,
        "shadow_over_predictor": 0.625,
        "predictor_over_quix": 20.0,
        "predictor_over_quix_batched": 2.5,
        "predictor_over_bytewax": 1.0,
    }
    assert set(result["parts"]) == set(PARTS)
    assert result["parts"]["predictor"]["process_cores_used"] == 0.5
    d = result["parts"]["latency"]["2000"]
    assert d["steady_window_trips"] == 200  # the first second (100 trips) is warm-up
    assert d["visible"]["p50_ms"] < d["visible"]["p99_ms"] < 80
    assert d["trip_visible"]["p50_ms"] == d["trip_visible"]["max_ms"] == 10.0
    assert d["predicted"]["p99_ms"] < d["visible"]["p99_ms"]
    assert result["parts"]["replay"]["trips_per_s"] == 8_000
    assert result["parts"]["shadow"]["shadow_records"] == 20_000
    assert "shadow_records" not in result["parts"]["predictor"]
    assert result["parts"]["switch"]["switch_ms"]["max_ms"] == 900.0
    names = [t["name"] for t in result["targets"]]
    assert names == [
        "predictor_vs_baseline",
        "predictor_vs_naive",
        "p99_at_2000_ms",
        "predictor_vs_quix",
        "predictor_vs_bytewax",
        "two_instances_vs_one",
    ]
    assert missed_targets(result) == []  # the scaling miss does not count on 2 cores
    on_eight = report(results(), environment={"cores": 8}, settings={}, notes=[])
    assert missed_targets(on_eight) == ["two_instances_vs_one"]


def test_each_part_names_its_guarantee_and_how_its_progress_was_followed():
    parts = report(results(), environment={"cores": 2}, settings={}, notes=[])["parts"]
    guarantees = {name: part.get("guarantee") for name, part in parts.items()}
    assert guarantees == {
        "passthrough": "at-least-once",
        "predictor": "exactly-once",
        "two-predictors": "exactly-once",
        "shadow": "exactly-once",
        "naive": None,
        "quix": "exactly-once",
        "quix-batched": "exactly-once",
        "bytewax": "at-least-once",
        "latency": None,
        "replay": None,
        "switch": None,
    }
    assert parts["bytewax"]["measured_by"] == "outputs written"
    assert parts["predictor"]["measured_by"] == "committed input offsets"
    assert parts["quix"]["library"] == "lib 1.0"
    assert "library" not in parts["predictor"]


def test_check_fails_when_a_peer_is_too_close():
    close = results()
    close.throughput["quix"] = throughput("quix", 1_000, 3.0)  # 333/s: predictor is 15x
    close.throughput["bytewax"] = throughput("bytewax", 10_000, 1.0)  # 10,000/s: 0.5x
    result = report(close, environment={"cores": 2}, settings={}, notes=[])
    assert missed_targets(result) == ["predictor_vs_quix", "predictor_vs_bytewax"]


def test_a_report_of_some_parts_only():
    only_b = Results(throughput={"predictor": throughput("predictor", 1_000, 1.0)}, latency={})
    result = report(only_b, environment={"cores": 2}, settings={}, notes=[])
    assert set(result["parts"]) == {"predictor"}
    assert set(result["ratios"]) >= {"predictor_over_quix", "predictor_over_bytewax"}
    assert all(value is None for value in result["ratios"].values())
    assert missed_targets(result) == []


def test_a_secure_run_sits_beside_the_plaintext_one_with_its_cost():
    plain = results()
    slower = dataclasses.replace(
        plain.latency[2000.0],
        seen=tuple(dataclasses.replace(s, seen=s.seen + 0.05) for s in plain.latency[2000.0].seen),
    )
    secure = Results(
        throughput={
            "passthrough": throughput("passthrough", 10_000, 2.0),
            "predictor": throughput("predictor", 10_000, 2.5),
        },
        latency={2000.0: slower},
    )
    result = report(plain, environment={"cores": 2}, settings={}, notes=[], secure=secure)
    json.dumps(result)
    assert result["secure"]["rates_records_per_s"] == {"passthrough": 5_000, "predictor": 4_000}
    assert result["secure"]["ratios"]["predictor_over_passthrough"] == 0.8
    assert set(result["secure"]["parts"]) == {"passthrough", "predictor", "latency"}
    cost = result["secure_over_plaintext"]
    assert cost["passthrough_records_per_s"] == 0.5
    assert cost["predictor_records_per_s"] == 0.8
    # 50 ms more on each of latencies of 60-80 ms.
    assert 1.6 < cost["latency_2000_p99_ms"] < cost["latency_2000_p50_ms"] < 1.9
    assert set(cost) == {
        "passthrough_records_per_s",
        "predictor_records_per_s",
        "latency_2000_p50_ms",
        "latency_2000_p99_ms",
    }
    # The targets are the plaintext run's.
    assert (
        result["targets"]
        == report(plain, environment={"cores": 2}, settings={}, notes=[])["targets"]
    )
    assert "secure" not in report(plain, environment={"cores": 2}, settings={}, notes=[])


# -- options ---------------------------------------------------------------------------------


def test_parts_and_rates_from_the_command_line():
    assert parse_parts(None) == frozenset(PARTS)
    assert parse_parts("predictor, latency") == {"predictor", "latency"}
    assert parse_parts("b, d, two-predictors") == {"predictor", "latency", "two-predictors"}
    assert parse_parts("predictor,shadow,switch") == {"predictor", "shadow", "switch"}
    assert parse_parts("quix,quix-batched,bytewax") == {"quix", "quix-batched", "bytewax"}
    with pytest.raises(click.BadParameter, match="unknown part"):
        parse_parts("b,x")
    assert parse_rates("500,2000") == (500.0, 2000.0)
    for bad in ("", "fast", "500,-1"):
        with pytest.raises(click.BadParameter):
            parse_rates(bad)


def settings(**changes) -> Settings:
    values = {
        "records": 1_000,
        "naive_records": 50,
        "latency_seconds": 2.0,
        "latency_warmup": 1.0,
        "latency_rates": (500.0, 2000.0),
        "parts": frozenset(PARTS),
        "batch_size": 5_000,
        "batch_wait": 0.1,
        "partitions": 6,
        "repeat": 2,
        **changes,
    }
    return Settings(**values)


def test_the_run_needs_as_many_trips_as_its_largest_part():
    assert settings().trips_needed == 10_000  # quix-batched's default backlog
    assert settings(quix_batched_records=2_000).trips_needed == 6_000  # 2,000/s for 3 s
    assert settings(parts=frozenset({"passthrough", "naive"})).trips_needed == 1_000
    assert settings(parts=frozenset({"naive"}), naive_records=70).trips_needed == 70
    assert settings(parts=frozenset({"quix"}), quix_records=300).trips_needed == 300
    assert settings(parts=frozenset({"bytewax"})).trips_needed == 1_000


def test_the_report_names_the_command_that_repeats_the_run():
    assert reproduce(settings(parts=frozenset({"latency", "predictor"})), None) == (
        "taxi bench --records 1000 --repeat 2 --naive-records 50 --quix-records 3000 "
        "--quix-batched-records 10000 --latency-seconds 2 "
        "--latency-warmup 1 --latency-rates 500,2000 --batch-size 5000 --batch-wait 0.1 "
        "--only predictor,latency"
    )
    assert reproduce(settings(), "h:1").endswith(
        "--batch-wait 0.1 --switch-rate 200 --switches 4 --switch-gap 3 --bootstrap-servers h:1"
    )
    assert reproduce(settings(parts=frozenset({"predictor"})), None, secure=True).endswith(
        "--only predictor --secure"
    )
    profiled = settings(parts=frozenset({"predictor"}), profile=True, profile_rate=500)
    assert reproduce(profiled, None).endswith("--only predictor --profile --profile-rate 500")


# -- the peers' job (benchmarks/peer_*.py) ----------------------------------------------------


def test_the_peers_read_the_kafka_settings_a_service_would(tmp_path):
    config_file = tmp_path / "client.properties"
    config_file.write_text(
        "# the admin's\nsecurity.protocol=SASL_SSL\nsasl.username = admin\n"
        "sasl.password=s=cret\nssl.ca.location=/ca.pem\n"
    )
    config_file.chmod(0o600)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "h1:1,h2:2",
        "KAFKA_CONFIG_FILE": str(config_file),
        "TAXI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TAXI_KAFKA_SSL__ENGINE_ID": "x",  # a double underscore is a literal one
        "UNRELATED": "1",
    }
    config = KafkaConfig.from_env(env, file_settings=read_config_file(config_file))
    expected = {"bootstrap.servers": config.bootstrap_servers, **config.settings}
    assert peer_common.kafka_settings(env) == expected
    assert expected["sasl.password"] == "s=cret"
    assert expected["ssl_engine.id"] == "x"
    # Brokers named in the file win over the variable, as for the services.
    config_file.write_text("bootstrap.servers=h3:3\n")
    assert peer_common.kafka_settings(env)["bootstrap.servers"] == "h3:3"


def test_the_peers_produce_with_the_services_producer_settings():
    services = {**PRODUCER_DEFAULTS, **PRODUCER_ENFORCED}
    del services["statistics.interval.ms"]  # the services' observer only
    assert {k: str(v).lower() for k, v in services.items()} == {
        k: v.lower() for k, v in peer_common.PRODUCER_SETTINGS.items()
    }


def locked_versions(lock: Path) -> dict[str, set[str]]:
    packages = tomllib.loads(lock.read_text())["package"]
    versions: dict[str, set[str]] = {}
    for package in packages:
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def test_the_quix_environment_runs_the_predictors_model_libraries():
    # The quix peer's own environment must load and run the model as the predictor does.
    ours = locked_versions(CHECKOUT / "uv.lock")
    quix = locked_versions(QUIX_PROJECT / "uv.lock")
    for name in ("numpy", "scipy", "pandas", "scikit-learn", "skops", "msgspec", "orjson"):
        assert quix[name] == ours[name], name
    assert "quixstreams" in quix
    assert "quixstreams" not in ours
    assert "bytewax" in ours  # in the dev group


def test_a_peer_that_cannot_run_here_says_why(tmp_path):
    with pytest.raises(PeerError, match=r"peer_nothing\.py is missing"):
        script("nothing")
    with pytest.raises(PeerError, match=r"no pyproject\.toml and uv\.lock"):
        sync_environment(tmp_path)
    # A lock file that does not match its project: uv sync --locked refuses, and says why.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "a"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        "dependencies = []\n\n[tool.uv]\npackage = false\n"
    )
    (tmp_path / "uv.lock").write_text(
        'version = 1\nrevision = 3\nrequires-python = ">=3.11"\n\n[[package]]\n'
        'name = "b"\nversion = "0.1.0"\nsource = { virtual = "." }\n'
    )
    with pytest.raises(PeerError, match=r"could not make (.|\n)* needs to be updated"):
        sync_environment(tmp_path)


def test_the_peers_predict_what_the_predictor_predicts(trained_model_path):
    step = Replay(generate_trips(rows=50, seed=9), "train").step(int(time.time() * 1000), 50)
    values = [encode(e) for e in step.started]
    predicted = load_model(trained_model_path).predict(decode_trip_starts(values).columns)
    peer = peer_common.PeerModel(trained_model_path)
    trips = [orjson.loads(v) for v in values]
    batch = peer.predict_batch(trips)
    one_by_one = [peer.predict_one(trip) for trip in trips]
    assert [p["predicted_duration"] for p in batch] == pytest.approx(predicted.tolist(), rel=1e-9)
    assert [p["predicted_duration"] for p in one_by_one] == pytest.approx(
        predicted.tolist(), rel=1e-9
    )
    assert [p["trip_id"] for p in batch] == [e.trip_id for e in step.started]
    # A prediction's fields are Prediction's, with the values the predictor would write.
    fields = attrs.fields_dict(Prediction)
    for prediction, event in zip(one_by_one, step.started, strict=True):
        assert set(prediction) <= set(fields)
        assert prediction["model_version"] == peer.version
        assert prediction["trip_started_at"] == event.produced_at.isoformat()
        assert prediction["pickup_latitude"] == event.pickup_latitude


# -- a real run ------------------------------------------------------------------------------


def check_peers(result: dict, quix: dict, records: int, repeat: int) -> None:
    """The peers of a tiny run: every trip start predicted once, under its own key."""
    parts = result["parts"]
    for part, (sent, runs) in {**quix, "bytewax": (records * repeat, repeat)}.items():
        run = parts[part]
        assert len(run["runs_records_per_s"]) == runs
        assert run["records_per_s"] == max(run["runs_records_per_s"]) > 0
        assert run["measured_records"] == sent // runs
        assert run["input_records"] == run["output_records"] == sent
        assert run["distinct_output_keys"] == sent // runs
        assert run["library"].startswith("bytewax" if part == "bytewax" else "quixstreams")
    assert parts["quix"]["guarantee"] == parts["quix-batched"]["guarantee"] == "exactly-once"
    assert parts["bytewax"]["guarantee"] == "at-least-once"
    assert parts["quix"]["measured_by"] == "committed input offsets"
    assert parts["quix-batched"]["measured_by"] == "outputs visible to a read_committed reader"
    assert parts["bytewax"]["measured_by"] == "outputs written"  # warm-ups not counted
    for peer in ("quix", "quix_batched", "bytewax"):
        assert result["ratios"][f"predictor_over_{peer}"] > 0


# Where the predictor's own work is, and its model's.
PREDICTOR_CODE = ("taxi_services/", "taxi_kafka/", "taxi_events/", "confluent_kafka/")
MODEL_CODE = ("taxi_model/", "sklearn/")


def check_profile(parts: dict, drains: int, err: str) -> None:
    """--profile: py-spy sampled the predictor part's drains, and only them: the predictor's
    batches and its model, with no start-up (imports, model load) among them; its top lines
    are printed after the run."""
    assert "predictor profile, top by self time of" in err
    profile = parts["predictor"]["profile"]
    assert all("profile" not in parts[p] for p in parts if p != "predictor")
    assert profile["tool"] == "py-spy"
    assert profile["recordings"] == drains
    assert profile["command"].endswith("-r 1000")
    assert profile["samples"] > 10
    top_self, top_total = profile["top_self"], profile["top_total"]
    assert 0 < len(top_self) <= 15
    assert 0 < len(top_total) <= 10
    for entry in (*top_self, *top_total):
        assert entry["function"]
        assert entry["location"].rsplit(":", 1)[1].isdigit()
        assert 0 < entry["share"] <= 1
    # No start-up: imports and the model's load take seconds, a drain tenths of one, so sampled
    # they would be most of the samples (inclusive share). A library's lazy import on first use
    # may run inside a drain, and show, small: CI once sampled one in importlib.
    start_up = [
        entry
        for entry in top_total
        if entry["location"].startswith(("importlib", "<frozen importlib"))
        or entry["function"] in ("load_model", "_find_and_load")
    ]
    assert all(entry["share"] < 0.5 for entry in start_up), start_up
    shares = [e["share"] for e in top_self]
    assert shares == sorted(shares, reverse=True)
    locations = [e["location"] for e in top_total]
    assert any(place.startswith(PREDICTOR_CODE) for place in locations), locations
    assert any(place.startswith(MODEL_CODE) for place in locations), locations


@pytest.mark.kafka
@pytest.mark.slow
def test_a_tiny_run_in_namespaces_of_its_own_on_the_shared_cluster(
    taxi, kafka_cluster, trained_model_path, in_tmp
):
    # `taxi bench` without --bootstrap-servers starts the same scratch cluster that `taxi chaos`
    # and `taxi lifecycle` start (taxi_kafka.cluster.scratch_cluster), which their tests run.
    records, repeat, naive, rates, switches = 3_000, 2, 40, (500.0,), 3
    quix, quix_batched = 150, 1_000  # quix-batched: one window
    code, out, err = taxi(
        "bench",
        *("--bootstrap-servers", kafka_cluster.bootstrap_servers),
        *("--records", str(records), "--repeat", str(repeat), "--naive-records", str(naive)),
        *("--quix-records", str(quix), "--quix-batched-records", str(quix_batched)),
        *("--latency-seconds", "2", "--latency-warmup", "1"),
        *("--latency-rates", ",".join(f"{r:g}" for r in rates)),
        *("--switch-rate", "100", "--switches", str(switches), "--switch-gap", "1"),
        *("--model", str(trained_model_path), "--output", "bench.json"),
        # Its drains last a few tenths of a second: py-spy samples them more often than usual.
        *("--profile", "--profile-rate", "1000"),
    )
    assert code == 0, err
    result = json.loads(out)
    assert json.loads((in_tmp / "bench.json").read_text()) == result
    assert "(predictor)" in err  # progress on stderr
    check_profile(result["parts"], repeat, err)

    parts = result["parts"]
    assert set(parts) == set(PARTS)
    for part in ("passthrough", "predictor", "two-predictors", "shadow", "naive"):
        run = parts[part]
        sent = naive if part == "naive" else records * repeat
        assert len(run["runs_records_per_s"]) == (1 if part == "naive" else repeat)
        assert run["records_per_s"] == max(run["runs_records_per_s"]) > 0
        assert run["measured_records"] == sent // len(run["runs_records_per_s"])
        assert run["input_records"] == run["output_records"] == sent
        assert run["distinct_output_keys"] == sent // len(run["runs_records_per_s"])
        # Each process's peak resident memory: a Python process with its libraries loaded.
        processes = 2 if part == "two-predictors" else 1
        assert len(run["peak_rss_mb"]) == processes
        assert all(50 < mb < 4096 for mb in run["peak_rss_mb"])
    assert parts["two-predictors"]["processes"] == "2 x taxi-predictor"
    check_peers(result, {"quix": (quix, 1), "quix-batched": (quix_batched, 1)}, records, repeat)
    # shadow: the challenger predicted every trip too, in the same transactions.
    assert parts["shadow"]["shadow_records"] == parts["shadow"]["output_records"]
    assert "shadow_records" not in parts["predictor"]
    assert result["ratios"]["shadow_over_predictor"] > 0
    # switch: promote the challenger (trained by the run), roll back, promote again.
    champion, challenger = (
        result["environment"][k] for k in ("model_version", "challenger_version")
    )
    assert challenger not in (None, champion)
    s = parts["switch"]
    assert [(w["action"], w["version"]) for w in s["switches"]] == [
        ("promote", challenger),
        ("rollback", champion),
        ("promote", challenger),
    ]
    assert all(w["ms"] > 0 and w["predictions_before"] >= 0 for w in s["switches"])
    assert s["switch_ms"]["median_ms"] <= s["switch_ms"]["max_ms"]
    assert s["switch_ms"]["max_ms"] == max(w["ms"] for w in s["switches"])
    assert s["trips_started"] == s["distinct_trips_started"] > 0
    assert s["predictions"] == s["distinct_trips_predicted"] == s["trips_started"]
    assert s["exactly_once"] is True
    assert set(s["predictions_by_version"]) == {champion, challenger}
    assert sum(s["predictions_by_version"].values()) == s["predictions"]
    for r in rates:
        d = parts["latency"][f"{r:g}"]
        trips = round(r * 3)
        assert d["trips"] == d["predictions_seen"] == d["distinct_trips"] == trips
        assert 0 < d["steady_window_trips"] < trips
        for timing in (d["visible"], d["trip_visible"], d["predicted"]):
            assert 0 < timing["p50_ms"] <= timing["p95_ms"] <= timing["p99_ms"] <= timing["max_ms"]
    e = parts["replay"]
    assert e["trips_per_s"] > 0
    assert e["started"] == e["distinct_started"] == e["ended"] == records

    assert result["environment"]["cores"] >= 1
    assert result["environment"]["cluster"] == "existing"
    assert result["environment"]["brokers"] == 3
    assert all(not math.isnan(v) for v in result["ratios"].values())
    assert {t["name"] for t in result["targets"]} >= {
        "predictor_vs_baseline",
        "predictor_vs_quix",
        "predictor_vs_bytewax",
    }
