"""observability/: the Prometheus scrape configurations, Grafana's provisioning and dashboard,
and taxi_services.prometheus; at the end, every dashboard query against a real Prometheus
scraping the real pipeline."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from taxi_kafka import METRICS_PORTS, NEW_TRIPS, PROMETHEUS_PORT, KafkaConfig
from taxi_kafka.cluster import NODE_IDS, LocalCluster
from taxi_kafka.testing import produce_all
from taxi_model import Decider, write_synthetic
from taxi_services import aggregator, metrics, predictor, producer, trainer  # noqa: F401  (registers)
from taxi_services.prometheus import (
    BIN_ENV,
    COMPOSE_CONFIG,
    LOCAL_CONFIG,
    OBSERVABILITY_DIR,
    PrometheusError,
    PrometheusServer,
    command,
    find_binary,
)
from taxi_services.registry import (
    ModelRegistry,
    ensure_champion,
    publish_model,
    record_of,
    whoami,
)

GRAFANA = OBSERVABILITY_DIR / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DATASOURCES = PROVISIONING / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = PROVISIONING / "dashboards" / "taxi.yml"
ALERT_RULES = PROVISIONING / "alerting" / "drift.yaml"
DASHBOARD = GRAFANA / "dashboards" / "ml-taxi.json"
GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards"
GRAFANA_PROVISIONING_DIR = "/etc/grafana/provisioning"
COMPOSE_FILE = OBSERVABILITY_DIR.parent / "docker-compose.yml"
# Grafana's server-side expressions (threshold, math, reduce) run under this datasource uid.
EXPRESSIONS = "__expr__"
# A Grafana threshold's evaluator, as a PromQL comparison.
COMPARISONS = {"gt": ">", "lt": "<"}
GRID_COLUMNS = 24
# Metrics of Prometheus itself that a dashboard may use.
PROMETHEUS_METRICS = {"up"}
GROUPING = ("by", "without", "on", "ignoring", "group_left", "group_right")
OPERATORS = {"and", "or", "unless", "bool"}


# A test runs a real Prometheus on spare ports: the shipped configuration, retargeted.
def retarget(
    config: Mapping[str, Any], ports: Mapping[str, int], host: str = "127.0.0.1"
) -> dict[str, Any]:
    """A copy of a scrape configuration (as parsed from YAML) whose job J scrapes
    host:ports[J]: the same jobs, labels and intervals, on other ports. Every job must be given
    a port and have one static target."""
    derived = copy.deepcopy(dict(config))
    scrape_jobs = derived.get("scrape_configs") or []
    missing = sorted({job["job_name"] for job in scrape_jobs} - set(ports))
    if missing:
        raise ValueError(f"no port for job(s) {', '.join(missing)}")
    for job in scrape_jobs:
        targets = [t for static in job.get("static_configs", []) for t in static["targets"]]
        if len(targets) != 1:
            raise ValueError(f"job {job['job_name']} has {len(targets)} targets, not 1")
        job["static_configs"][0]["targets"] = [f"{host}:{ports[job['job_name']]}"]
    return derived


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write a configuration for Prometheus to read. JSON is YAML, so no YAML writer is needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def jobs(config: dict[str, Any]) -> dict[str, str]:
    """{job name: its one target}."""
    return {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }


def scrape_interval_s(config: dict[str, Any]) -> int:
    return int(config["global"]["scrape_interval"].removesuffix("s"))


def every_panel(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    return [panel for top in dashboard["panels"] for panel in [top, *top.get("panels", [])]]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query: all but rows."""
    return [panel for panel in every_panel(dashboard) if panel["type"] != "row"]


def queries(dashboard: dict[str, Any], interval_s: int) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's variables replaced by what Grafana
    would send with a datasource whose scrape interval is `interval_s`: $__rate_interval is
    then at least four scrapes wide."""
    variables = {
        "$__rate_interval": f"{4 * interval_s}s",
        "$__interval": f"{interval_s}s",
        "$__range": "15m",
    }
    found = []
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in variables.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def alert_rules() -> list[dict[str, Any]]:
    """Every provisioned alert rule."""
    return [rule for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str]]:
    """(alert title, PromQL) of every Prometheus query the alert rules run."""
    return [
        (f"alert {rule['title']}", step["model"]["expr"])
        for rule in alert_rules()
        for step in rule["data"]
        if step["datasourceUid"] != EXPRESSIONS
    ]


def every_query(dashboard: dict[str, Any], interval_s: int) -> list[tuple[str, str]]:
    """The dashboard's queries and the alert rules'."""
    return queries(dashboard, interval_s) + alert_queries()


def as_prometheus_alert(rule: dict[str, Any]) -> dict[str, Any]:
    """A Grafana rule of one query and a threshold on it, as the Prometheus alerting rule it
    stands for, so that Prometheus' own rule tests can evaluate it."""
    steps = {step["refId"]: step for step in rule["data"]}
    condition = steps[rule["condition"]]["model"]
    assert condition["type"] == "threshold", rule["title"]
    [evaluator] = [c["evaluator"] for c in condition["conditions"]]
    [threshold] = evaluator["params"]
    query = steps[condition["expression"]]["model"]["expr"]
    return {
        "alert": rule["title"],
        "expr": f"{query} {COMPARISONS[evaluator['type']]} {threshold}",
        "for": rule["for"],
    }


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: what is left of its identifiers once strings,
    label matchers, ranges and grouping clauses are gone, less functions (followed by a
    parenthesis) and binary operators."""
    stripped = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', "", expr)
    stripped = re.sub(rf"\b(?:{'|'.join(GROUPING)})\s*\([^)]*\)", "", stripped)
    return set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", stripped)) - OPERATORS


def exposed_names() -> set[str]:
    """What the services expose, as scraped: histograms as their _bucket, _sum and _count."""
    text = generate_latest(REGISTRY).decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


# -- scrape configurations -------------------------------------------------------------------


def test_both_scrape_configs_have_the_same_jobs_on_the_default_ports():
    local, compose = load_yaml(LOCAL_CONFIG), load_yaml(COMPOSE_CONFIG)
    assert local["global"] == compose["global"]
    assert scrape_interval_s(local) <= 5
    expected = {**METRICS_PORTS, "prometheus": PROMETHEUS_PORT}
    assert jobs(local) == {job: f"127.0.0.1:{port}" for job, port in expected.items()}
    # Compose reaches each service by its compose service name, which is the job's.
    assert jobs(compose) == {
        **{job: f"{job}:{port}" for job, port in METRICS_PORTS.items()},
        "prometheus": f"localhost:{PROMETHEUS_PORT}",
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("config", [LOCAL_CONFIG, COMPOSE_CONFIG], ids=lambda p: p.name)
def test_promtool_accepts_the_scrape_config(config):
    checked = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_retarget_moves_every_job_to_its_port_and_keeps_the_rest():
    local = load_yaml(LOCAL_CONFIG)
    ports = {job: 40_000 + n for n, job in enumerate(jobs(local))}
    derived = retarget(local, ports, host="127.0.0.2")
    assert jobs(derived) == {job: f"127.0.0.2:{port}" for job, port in ports.items()}
    assert derived["global"] == local["global"]
    assert jobs(local)["predictor"] == "127.0.0.1:9103"  # the original is left alone
    with pytest.raises(ValueError, match="no port for job"):
        retarget(local, {"predictor": 1})


def test_a_written_config_reads_back_as_yaml(tmp_path):
    config = retarget(load_yaml(LOCAL_CONFIG), dict.fromkeys(jobs(load_yaml(LOCAL_CONFIG)), 1))
    assert load_yaml(write_config(config, tmp_path / "p" / "prometheus.yml")) == config


# -- the Prometheus binary -------------------------------------------------------------------


def test_the_binary_comes_from_the_variable_then_the_path(tmp_path):
    binary = tmp_path / "prometheus"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert find_binary({BIN_ENV: str(binary)}) == binary
    assert find_binary({"PATH": str(tmp_path)}) == binary
    assert find_binary({"PATH": str(tmp_path / "nowhere")}) is None
    binary.chmod(0o644)
    with pytest.raises(PrometheusError, match=BIN_ENV):
        find_binary({BIN_ENV: str(binary)})


def test_the_command_line_uses_flags_the_installed_prometheus_knows(tmp_path):
    args = command(Path("prometheus"), LOCAL_CONFIG, port=19999, data_dir=tmp_path / "data")
    assert args[1:] == [
        f"--config.file={LOCAL_CONFIG}",
        "--web.listen-address=127.0.0.1:19999",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        "--storage.tsdb.retention.time=1d",
    ]
    binary = find_binary()
    if binary is None:
        pytest.skip("no prometheus binary to ask for its flags")
    known = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False)
    for arg in args[1:]:
        assert f"{arg.split('=')[0]}=" in known.stdout + known.stderr


def test_a_prometheus_server_starts_answers_and_stops(tmp_path):
    binary = find_binary()
    if binary is None:
        pytest.skip(f"no prometheus on the PATH and no {BIN_ENV}")
    shipped = load_yaml(LOCAL_CONFIG)
    # Free ports where nothing serves: every target but Prometheus itself is down.
    ports = {job: free_port() for job in jobs(shipped)}
    config = write_config(retarget(shipped, ports), tmp_path / "prometheus.yml")
    server = PrometheusServer(
        binary, config, ports["prometheus"], tmp_path / "data", tmp_path / "prometheus.log"
    )
    server.start()
    try:
        server.wait_ready()
        assert server.query("vector(1)")[0]["value"][1] == "1"
        [scalar] = server.query("scalar(vector(2))")
        assert (scalar["metric"], scalar["value"][1]) == ({}, "2")
        with pytest.raises(PrometheusError, match="bad_data"):
            server.query("sum(")
    finally:
        assert server.stop() == 0
    assert server.stop() == 0  # already stopped: its exit code again
    assert (tmp_path / "data").is_dir()


# -- Grafana ---------------------------------------------------------------------------------


def test_grafana_provisions_the_datasource_and_the_dashboards_folder():
    datasources = load_yaml(DATASOURCES)["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "prometheus", f"http://prometheus:{PROMETHEUS_PORT}")
    ]
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [
        ("file", GRAFANA_DASHBOARDS_DIR)
    ]


def test_the_dashboard_refers_to_the_datasource_by_uid_and_lays_out_its_panels(dashboard):
    uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in every_panel(dashboard)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in every_panel(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert source == {"type": "prometheus", "uid": uid}, panel["title"]


def test_the_dashboard_covers_what_an_operator_needs(dashboard):
    exprs = " ".join(expr for _, expr in queries(dashboard, 5))
    for needed in (
        "taxi_records_produced_total",
        "taxi_records_consumed_total",
        "taxi_consumer_lag_records",
        "taxi_consumer_lag_seconds",
        "histogram_quantile(0.99, sum by (le) (rate(taxi_processing_latency_seconds_bucket",
        "taxi_dead_letters_total",
        'taxi_transactions_total{outcome="aborted"}',
        'taxi_model_rmsle{role="champion", challenger=""}',
        'taxi_model_rmsle{challenger!=""}',
        "taxi_model_mae_seconds",
        "taxi_model_within_30_ratio",
        "max by (champion, challenger) (taxi_predictor_model_info)",
        "sum by (reason) (taxi_model_rejected_total)",
        "taxi_model_switches_total",
        "taxi_kafka_broker_up",
        "sum by (kind, source) (taxi_drift_detected_total)",
        'taxi_drift_statistic{kind="concept-drift"}',
        'taxi_drift_statistic{kind="data-drift"}',
        "sum by (outcome) (taxi_trainer_candidates_total)",
        "taxi_trainer_window_trips",
    ):
        assert needed in exprs


def test_the_drift_alert_is_provisioned_per_kind_and_source_on_the_dashboards_panel(dashboard):
    document = load_yaml(ALERT_RULES)
    assert document["apiVersion"] == 1
    [group] = document["groups"]
    assert group["name"]
    assert group["interval"]
    # The dashboards' folder: the alert sits beside the dashboard it points to.
    assert group["folder"] == load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["folder"]
    [rule] = group["rules"]
    assert rule["uid"]
    assert rule["title"]
    uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    steps = {step["refId"]: step for step in rule["data"]}
    assert len(steps) == len(rule["data"])
    for ref, step in steps.items():
        assert step["model"]["refId"] == ref
        source = step["datasourceUid"]
        assert source in {uid, EXPRESSIONS}
        assert step["model"]["datasource"] == {
            "type": "prometheus" if source == uid else EXPRESSIONS,
            "uid": source,
        }
    [(_, query)] = alert_queries()
    assert query == "sum by (kind, source) (increase(taxi_drift_detected_total[5m]))"
    assert as_prometheus_alert(rule)["expr"] == f"{query} > 0"
    # Linked to the panel that shows the same counter.
    assert rule["dashboardUid"] == dashboard["uid"]
    [panel] = [p for p in panels(dashboard) if p["id"] == rule["panelId"]]
    assert metric_names(query) <= {n for t in panel["targets"] for n in metric_names(t["expr"])}
    # The summary names the kind and the source: labels the query keeps.
    summary = rule["annotations"]["summary"]
    assert "{{ $labels.kind }}" in summary
    assert "{{ $labels.source }}" in summary
    [kept] = re.findall(r"sum by \(([^)]*)\)", query)
    read = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
    assert read == {label.strip() for label in kept.split(",")}


def test_compose_mounts_the_alert_rules_where_grafana_provisions_them():
    grafana = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]
    sources = {target: source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    mounted = (COMPOSE_FILE.parent / sources[GRAFANA_PROVISIONING_DIR]).resolve()
    assert mounted == PROVISIONING.resolve()
    assert ALERT_RULES.resolve().is_relative_to(mounted / "alerting")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_drift_alert_fires_after_a_detection_and_resolves_five_minutes_later(tmp_path):
    """Prometheus' own rule tests evaluate the alert's query and threshold: it fires per kind
    and source for five minutes after the counter rises, never on flat counters or on the reset
    of an aggregator's restart."""
    rules = write_config(
        {"groups": [{"name": "drift", "rules": [as_prometheus_alert(r) for r in alert_rules()]}]},
        tmp_path / "rules.yml",
    )
    [title] = [rule["title"] for rule in alert_rules()]

    def series(kind: str, source: str, instance: str, values: str) -> dict[str, str]:
        labels = f'kind="{kind}", source="{source}", job="aggregator", instance="{instance}"'
        return {"series": f"taxi_drift_detected_total{{{labels}}}", "values": values}

    def firing(minute: int, *drifts: tuple[str, str]) -> dict[str, Any]:
        alerts = [
            {"exp_labels": {"kind": kind, "source": source}, "exp_annotations": {}}
            for kind, source in drifts
        ]
        return {"eval_time": f"{minute}m", "alertname": title, "exp_alerts": alerts}

    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Concept drift detected on the train trips at minute 11, by one instance.
                    series("concept-drift", "train", "a1", "0x10 1x20"),
                    series("concept-drift", "train", "a2", "0x30"),
                    series("data-drift", "test", "a1", "0x30"),
                    # An aggregator restarted at minute 6: its counter starts again at 0.
                    series("data-drift", "train", "a1", "2x5 0x25"),
                ],
                "alert_rule_test": [
                    firing(10),
                    firing(11, ("concept-drift", "train")),
                    firing(14, ("concept-drift", "train")),
                    firing(17),
                    firing(30),
                ],
            }
        ],
    }
    checked = subprocess.run(
        ["promtool", "test", "rules", str(write_config(tests, tmp_path / "tests.yml"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_dashboard_and_alert_query_reads_metrics_that_exist(dashboard):
    known = exposed_names() | PROMETHEUS_METRICS
    unknown = {
        (title, name)
        for title, expr in every_query(dashboard, 5)
        for name in metric_names(expr)
        if name not in known
    }
    assert unknown == set()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_dashboard_and_alert_query_is_valid_promql(dashboard, tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": expr}
                    for n, (_, expr) in enumerate(every_query(dashboard, 5))
                ],
            }
        ]
    }
    path = write_config(rules, tmp_path / "rules.yml")
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- against a real Prometheus scraping the real pipeline ------------------------------------

# Trips per producer, and trips per second: traffic for longer than the test takes even when
# every query fails (the producers are stopped at its end).
TRIPS = 20_000
RATE = 40
QUERY_TIMEOUT_S = 180.0
# A version whose registry record is no model: the predictor refuses it, saying why.
CORRUPT_VERSION = "0badc0ffee00"
REJECTED = 'taxi_model_rejected_total{reason="corrupt-record"} > 0'
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def has_data(series: list[dict[str, Any]]) -> bool:
    """Whether Grafana would draw anything: a series with a number (NaN draws nothing)."""
    return any(not math.isnan(float(s["value"][1])) for s in series)


def problems(server: PrometheusServer, checks: list[tuple[str, str]], jobs: set[str]) -> set[str]:
    """Every dashboard query without data, every target not up, a broker no client is
    connected to, and no dead letter counted, now."""
    found = set()
    for title, expr in checks:
        try:
            if not has_data(server.query(expr)):
                found.add(f"no data: {title}: {expr}")
        except PrometheusError as exc:
            found.add(f"error: {title}: {exc}")
    up = {s["metric"]["job"] for s in server.query("up == 1")}
    found |= {f"target down: {job}" for job in jobs - up}
    if not server.query('taxi_dead_letters_total{service="predictor", reason="decode"} > 0'):
        found.add("the malformed trip was not counted as a dead letter")
    if not server.query(REJECTED):
        found.add("the corrupt challenger was not counted as rejected")
    connected = server.query("max by (broker) (taxi_kafka_broker_up) == 1")
    if {s["metric"]["broker"] for s in connected} != {str(node) for node in NODE_IDS}:
        found.add("some broker has no client connected")
    return found


def open_dashboard(web_port: int, metrics_port: int) -> None:
    """Visit the page, as a user does: the dashboard starts reading Kafka, and serving its
    metrics, for its first visitor."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415  (only this test needs it)

    wait_for_port(web_port, "the dashboard's page")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            browser.new_page().goto(f"http://127.0.0.1:{web_port}", timeout=60_000)
            wait_for_port(metrics_port, "the dashboard's metrics")
        finally:
            browser.close()


def wait_for_port(port: int, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"no {what} on port {port} after {timeout:.0f} s"
        time.sleep(0.5)


@pytest.mark.kafka
@pytest.mark.slow
def test_every_dashboard_and_alert_query_has_data_from_the_running_pipeline(
    pipeline_cluster: LocalCluster,
    services,
    trained_model_path,
    challenger_model_path,
    dashboard,
    *,
    tmp_path,
):
    binary = find_binary()
    if binary is None:
        pytest.skip(f"no prometheus on the PATH and no {BIN_ENV}")
    shipped = load_yaml(LOCAL_CONFIG)
    ports = {job: free_port() for job in jobs(shipped)}
    train_csv, test_csv = write_synthetic(tmp_path / "data", rows=TRIPS, seed=81, test_rows=TRIPS)
    registry = ModelRegistry(KafkaConfig(pipeline_cluster.bootstrap_servers))
    ensure_champion(registry, trained_model_path, "test")
    # The panels by role, version and rejection reason need a challenger, and a rejection: the
    # first challenger's record is corrupt (refused, the champion predicts alone), then a real
    # one takes its place once the refusal is counted.
    produce_all(
        pipeline_cluster.bootstrap_servers,
        registry.topics.registry,
        [(CORRUPT_VERSION.encode(), b"no model")],
    )
    registry.decide(
        Decider(whoami()).publish(registry.history(), CORRUPT_VERSION, "challenger", "corrupt")
    )
    services.start("taxi-predictor", "--instance", "o", metrics_port=ports["predictor"])
    services.start(
        "taxi-aggregator",
        *("--instance", "o", "--window", "2", "--grace", "1"),
        metrics_port=ports["aggregator"],
    )
    for source, csv in (("train", train_csv), ("test", test_csv)):
        services.start(
            "taxi-producer",
            *("--source", source, "--data", str(csv), "--rate", str(RATE)),
            *("--instance", "o", "--no-progress"),
            metrics_port=ports[f"producer-{source}"],
        )
    # Its metrics are there from the start; it waits for the champion, then fills its window.
    services.start("taxi-trainer", "--instance", "o", metrics_port=ports["trainer"])
    web_port = free_port()
    services.start(
        "taxi-dashboard",
        *("--port", str(web_port), "--address", "127.0.0.1"),
        metrics_port=ports["dashboard"],
    )
    produce_all(pipeline_cluster.bootstrap_servers, NEW_TRIPS, [(b"bad", b"{not a trip")])

    config = write_config(retarget(shipped, ports), tmp_path / "prometheus.yml")
    server = PrometheusServer(
        binary, config, ports["prometheus"], tmp_path / "prometheus-data", tmp_path / "prom.log"
    )
    checks = every_query(dashboard, scrape_interval_s(shipped))
    server.start()
    try:
        server.wait_ready()
        for job in ("producer-train", "producer-test", "predictor", "aggregator"):
            wait_for_port(ports[job], f"{job} metrics", timeout=300)
        open_dashboard(web_port, ports["dashboard"])
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while not server.query(REJECTED):
            assert time.monotonic() < deadline, "the corrupt challenger was never rejected"
            time.sleep(scrape_interval_s(shipped))
        challenger = record_of(challenger_model_path)
        publish_model(registry, challenger, "challenger", reason="the real challenger")
        # Everything runs: from now on each query must get data within a few scrapes.
        # A check passes once it has held at one poll: an overloaded machine may stall a
        # service for longer than a rate() window, which then reads nothing for a while.
        started = time.monotonic()
        never_held = problems(server, checks, set(ports))
        while never_held and time.monotonic() - started < QUERY_TIMEOUT_S:
            time.sleep(scrape_interval_s(shipped))
            never_held &= problems(server, checks, set(ports))
    finally:
        server.stop()
    print(
        f"checked {len(panels(dashboard))} panels, {len(checks)} queries against Prometheus: "
        f"{len(never_held)} never had data after {time.monotonic() - started:.0f} s"
    )
    assert never_held == set(), "\n".join(sorted(never_held))
