"""`taxi up` as a user runs it: a cluster of its own, a model trained on the spot, every
service started, and nothing left running afterwards."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from playwright.sync_api import expect

from taxi_dashboard.testing import (
    PAINT_TIMEOUT_MS,
    assert_no_exception,
    chromium,
    open_page,
    screenshot,
)
from taxi_events import Prediction, TripKey, TripStarted, decode, trip_key
from taxi_kafka import (
    DASHBOARD_PORT,
    METRICS_PORTS,
    ML_PREDICTIONS,
    MODEL_DEPLOYMENTS,
    MODEL_REGISTRY,
    NEW_TRIPS,
    PREDICTOR_GROUP,
    PROJECT_TOPICS,
    PROMETHEUS_PORT,
    KafkaConfig,
    read_to_end,
)
from taxi_kafka.cluster import NODE_IDS, ClusterPorts, LocalCluster, free_base_port
from taxi_kafka.testing import read_all
from taxi_model import read_card, read_trips
from taxi_services.supervisor import Child, free_port, stop_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TAXI = str(Path(sys.executable).parent / "taxi")
# taxi up runs Prometheus when it is installed (CI installs it).
PROMETHEUS_INSTALLED = shutil.which("prometheus") is not None
PROMETHEUS_STOPPED = ", prometheus (0)" if PROMETHEUS_INSTALLED else ""


def environment(tmp_path: Path) -> dict[str, str]:
    """`taxi` commands run in `tmp_path`, on a cluster of their own."""
    return {
        **os.environ,
        "TAXI_RUNTIME_DIR": str(tmp_path / ".taxi"),
        "TAXI_CLUSTER_BASE_PORT": str(free_base_port()),
    }


def start_up(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [TAXI, "up", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )


def press_ctrl_c_under_uv_run(process: subprocess.Popen[str]) -> None:
    """A terminal sends SIGINT to its foreground process group; `uv run` (0.13) forwards it to
    its child 200 ms later, so `taxi up` gets it twice, the second while it is stopping."""
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)


def processes_in(tmp_path: Path) -> dict[int, str]:
    """pid -> command line of each process running in this test's folder: Kafka nodes,
    services, Prometheus."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.startswith(str(tmp_path)):
            found[int(pid)] = cmdline
    return found


def leftovers(tmp_path: Path) -> list[str]:
    """Processes still running in this test's folder."""
    return [f"{pid}: {cmdline[:120]}" for pid, cmdline in processes_in(tmp_path).items()]


def listening_sockets(pids: Collection[int]) -> dict[tuple[str, int], int]:
    """(address, port) -> pid of every TCP socket these processes listen on: the LISTEN rows
    (state 0A) of /proc/net/tcp and tcp6 whose inode is one of the processes' descriptors."""
    owners = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # it exited meanwhile
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):  # the descriptor closed meanwhile
                    owners[os.readlink(fd.path)] = pid
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            owner = owners.get(f"socket:[{fields[9]}]")
            if fields[3] != "0A" or owner is None:
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            # The address is written as 32-bit words in the host's byte order.
            raw = bytes.fromhex(hex_address)
            words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
            address = ipaddress.ip_address(
                b"".join(int.from_bytes(w, sys.byteorder).to_bytes(4, "big") for w in words)
            )
            # A Java socket on 127.0.0.1 may be an IPv6 one, on ::ffff:127.0.0.1.
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found[(str(address), int(hex_port, 16))] = owner
    return found


def status_once_the_dashboard_has_read(tmp_path: Path, env: dict[str, str]) -> str:
    """`taxi status`, repeated until the dashboard (started last) has read records."""
    dashboard_read = re.compile(r"^dashboard +running .* read [1-9]", re.MULTILINE)
    for _ in range(45):
        status = subprocess.run(
            [TAXI, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        )
        if dashboard_read.search(status.stdout):
            break
        time.sleep(2)
    return status.stdout


# Both producers have started trips of this run, and the predictor predicts: mid-replay. (The
# first predictions may be of trips a run stopped before started.)
MIDWAY = re.compile(r"^started [1-9][\d,]* train \+ [1-9][\d,]* test \| predicted [1-9]")


def status_while_up_runs_and_ctrl_c_stops_every_process(tmp_path: Path, env: dict[str, str]) -> str:
    """`taxi up` with every service until it is midway, `taxi status` while it runs, then
    Ctrl+C: every process it started stops, the cluster too (it started it). Its output."""
    up = start_up(tmp_path, env, "--rate", "20", "--no-auto-promote")
    deadline = time.monotonic() + 300
    assert up.stdout is not None
    seen = []
    for line in up.stdout:
        seen.append(line)
        if MIDWAY.match(line):
            break
        assert time.monotonic() < deadline, "no predictions in time"
    report = status_once_the_dashboard_has_read(tmp_path, env)
    processes = processes_in(tmp_path)
    sockets = listening_sockets(processes)
    press_ctrl_c_under_uv_run(up)
    rest, _ = up.communicate(timeout=120)
    output = "".join(seen) + rest
    assert up.returncode == 0, output
    assert "stopped: " in output
    assert "stopped the Kafka cluster" in output
    assert leftovers(tmp_path) == []

    # Nothing taxi up starts (services, dashboard, Prometheus, Kafka nodes) listens beyond
    # loopback, 0.0.0.0 and :: included.
    exposed = [
        f"{address}:{port} ({processes[pid][:80]})"
        for (address, port), pid in sockets.items()
        if not ipaddress.ip_address(address).is_loopback
    ]
    assert not exposed, exposed
    cluster = ClusterPorts(int(env["TAXI_CLUSTER_BASE_PORT"]))
    expected = {*METRICS_PORTS.values(), DASHBOARD_PORT}
    expected |= {port for node in NODE_IDS for port in cluster.of_node(node)}
    if PROMETHEUS_INSTALLED:
        expected.add(PROMETHEUS_PORT)
    assert expected <= {port for _, port in sockets}, sorted(sockets)

    assert "Kafka: 3 of 3 brokers up" in report
    assert f"taxi up: running (pid {up.pid})" in report
    assert re.search(r"^predictor +running .* predicted [1-9]", report, re.MULTILINE), report
    assert re.search(r"^producer-test +running .* started [1-9]", report, re.MULTILINE), report
    assert "consumer lag: taxi-predictor " in report
    assert re.search(r"^dashboard UI +running +http://127.0.0.1:8501", report, re.MULTILINE)
    assert re.search(r"^dashboard +running .* read [1-9]", report, re.MULTILINE), report
    assert re.search(r"^trainer +running .* window \d", report, re.MULTILINE), report
    # taxi up's --no-auto-promote is the trainer's.
    trainer = "taxi-trainer --instance up --no-auto-promote --metrics-port 9106"
    assert any(trainer in cmdline for cmdline in processes.values()), processes
    assert ("prometheus      running" in report) == PROMETHEUS_INSTALLED, report
    assert re.search(r"^model: \w+ at models/taxi_pipeline.skops, held-out RMSLE", report, re.M)
    return output


# -- running it again: each run goes on where the last one stopped ---------------------------

# Day two's other runs start fewer processes, without the trainer too: it stops up to a batch's
# wait after SIGTERM, and day one and the first run of day two have shown it runs and stops cleanly.
QUICK = ("--no-dashboard", "--no-prometheus", "--no-trainer", "--rate", "200")


def taxi(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TAXI, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,  # the callers check the code, some for a failure
    )


def up_with_a_limit(tmp_path: Path, env: dict[str, str], limit: int, *args: str) -> str:
    up = start_up(tmp_path, env, "--limit", str(limit), *args)
    output, _ = up.communicate(timeout=400)
    assert up.returncode == 0, output
    assert "every trip predicted and scored" in output
    return output


def trips_and_predictions(env: dict[str, str]) -> tuple[Counter[TripKey], Counter[TripKey]]:
    """Trips started and predictions made, per trip, read back with read_committed (as the
    admin principal, on a secure cluster)."""
    settings = LocalCluster(Path(env["TAXI_RUNTIME_DIR"]) / "cluster", env=env).client_settings()
    kafka = KafkaConfig(settings.pop("bootstrap.servers"), settings)

    def per_trip(topic: str, kind: type[TripStarted] | type[Prediction]) -> Counter[TripKey]:
        return Counter(trip_key(decode(m.value(), kind)) for m in read_to_end(kafka, topic))

    return per_trip(NEW_TRIPS, TripStarted), per_trip(ML_PREDICTIONS, Prediction)


def assert_each_predicted_once(env: dict[str, str]) -> Counter[TripKey]:
    started, predicted = trips_and_predictions(env)
    assert started
    assert set(started.values()) == {1}, "a trip started twice"
    assert predicted == started, "a trip predicted twice, or not at all"
    return started


def assert_champion_kept(env: dict[str, str], output: str, version: str) -> None:
    """The champion of day one stays: published once, by one decision, and said so."""
    assert f"champion: {version} (in the registry already)" in output
    bootstrap = ClusterPorts(int(env["TAXI_CLUSTER_BASE_PORT"])).bootstrap_servers
    # Every record written, before any compaction: one version, one decision.
    assert [m.key() for m in read_all(bootstrap, MODEL_REGISTRY)] == [version.encode()]
    assert [m.key() for m in read_all(bootstrap, MODEL_DEPLOYMENTS)] == [version.encode()]


def reset_all(tmp_path: Path, env: dict[str, str]) -> None:
    """`taxi reset --yes`, which deletes every project topic, the registry's among them."""
    reset = taxi(tmp_path, env, "reset", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert f"deleted {len(PROJECT_TOPICS)} topic(s)" in reset.stdout


def published_champion(tmp_path: Path, output: str) -> str:
    """The version of the model in models/, which `taxi up` says it published as champion."""
    version = read_card(tmp_path / "models" / "taxi_pipeline.skops").version
    assert f"champion: {version} (published to the registry)" in output
    return version


def per_source(trips: Counter[TripKey]) -> Counter[str]:
    return Counter(source for source, _ in trips)


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of `taxi` commands in `tmp_path`; a cluster a failed test left running
    there is stopped."""
    # Short windows: a --limit run drains once the aggregator's window of its last trips
    # closes (10 s + 2 s by default).
    env = {**environment(tmp_path), "TAXI_AGGREGATOR_WINDOW": "2", "TAXI_AGGREGATOR_GRACE": "1"}
    yield env
    if leftovers(tmp_path):
        taxi(tmp_path, env, "cluster", "down")


def test_running_again_goes_on_where_the_last_run_stopped(tmp_path, up_env):
    env = up_env
    # Day one: taxi up starts the cluster, trains a model, and stops all of it at the limit.
    first = up_with_a_limit(tmp_path, env, 200, "--rate", "200")
    assert "training on 50,000 synthetic trips" in first
    assert "started 200 train + 200 test | predicted 400" in first
    assert "challengers 0, promoted 0" in first  # the trainer's part of the status line
    stopped = (
        f"stopped: predictor (0), aggregator (0), trainer (0), dashboard (0){PROMETHEUS_STOPPED}"
    )
    assert f"{stopped}\n" in first
    assert "stopped the Kafka cluster" in first
    version = published_champion(tmp_path, first)
    assert leftovers(tmp_path) == []

    # Day two: a plain run with every service, on the cluster it restarts from its own data:
    # `taxi status` while it runs, and Ctrl+C mid-replay stops every process. Then, on a
    # cluster left running (as the rest of the test), a limit again, which sees every trip so
    # far predicted, and leaves the cluster running.
    status_while_up_runs_and_ctrl_c_stops_every_process(tmp_path, env)
    assert taxi(tmp_path, env, "cluster", "up").returncode == 0
    last = up_with_a_limit(tmp_path, env, 100, *QUICK)
    assert "started 100 train + 100 test" in last
    assert "training" not in last
    assert "stopped the Kafka cluster" not in last
    assert "stopped: predictor (0), aggregator (0)\n" in last  # --no-trainer: none started
    assert_champion_kept(env, last, version)
    started = assert_each_predicted_once(env)
    assert min(per_source(started).values()) > 300

    # A port taken by another program: refused before anything starts, or is deleted.
    with socket.socket() as squatter:
        # As servers do: the last run's connections may linger in TIME_WAIT on the port.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", METRICS_PORTS["predictor"]))
        squatter.listen()
        taken = taxi(tmp_path, env, "up", *QUICK, "--limit", "10", "--fresh")
    assert taken.returncode == 1
    assert f"ports taken: {METRICS_PORTS['predictor']} (predictor)" in taken.stderr
    assert "predictor " not in taken.stdout
    assert "deleted" not in taken.stdout  # --fresh: refused before it reset anything

    # Other data in data/: refused before anything starts, until --fresh starts over (a reset,
    # registry included: the replays begin again at their first trip).
    synth = taxi(tmp_path, env, "data", "synth", "--rows", "500", "--out", "data")
    assert synth.returncode == 0, synth.stderr
    refused = taxi(tmp_path, env, "up", *QUICK, "--limit", "10")
    assert refused.returncode == 1
    assert "taxi up --fresh" in refused.stderr
    assert "predictor " not in refused.stdout  # no service was started
    fresh = up_with_a_limit(tmp_path, env, 50, *QUICK, "--fresh")
    assert f"deleted {len(PROJECT_TOPICS)} topic(s)" in fresh
    started = assert_each_predicted_once(env)
    assert per_source(started) == {"train": 50, "test": 50}
    assert not any("-g" in trip_id for _, trip_id in started)
    csv_ids = set(read_trips(tmp_path / "data" / "train.csv").frame["id"])
    assert {trip_id for source, trip_id in started if source == "train"} <= csv_ids

    # A reset with the cluster down starts it for the reset, and stops it again.
    assert taxi(tmp_path, env, "cluster", "down").returncode == 0
    reset_all(tmp_path, env)
    assert leftovers(tmp_path) == []


def the_dashboard_reads_as_its_own_principal(
    cluster: LocalCluster, tmp_path: Path, passwords: Collection[str]
) -> None:
    """The dashboard, as the dashboard principal (read-only ACLs), in a real browser: it shows
    the trips, predictions and cluster health a run left, with no refusal on the page, and no
    password on the page, at its metrics endpoint or in its log."""
    child = Child(
        "dashboard",
        [
            *("taxi-dashboard", "--port", str(port := free_port())),
            *("--refresh", "1", "--health-interval", "1", "--lookback", "3600"),
        ],
        free_port(),
        tmp_path / "secure-dashboard.log",
    )
    child.start(cluster.service_env(child.principal))
    try:
        with chromium() as browser:
            page = open_page(browser, f"http://127.0.0.1:{port}", offline=True)
            trip = page.locator(".st-key-live-records [role=gridcell]", has_text=re.compile("^id"))
            trip.first.wait_for(state="attached", timeout=PAINT_TIMEOUT_MS)
            expect(page.locator(".st-key-model-roles")).to_contain_text(
                "Champion", timeout=PAINT_TIMEOUT_MS
            )
            # The health checks need DESCRIBE on the cluster's topics and the groups' offsets.
            expect(page.get_by_text("3 / 3", exact=True)).to_be_visible(timeout=PAINT_TIMEOUT_MS)
            lag = page.locator("[role=gridcell]", has_text=re.compile(f"^{PREDICTOR_GROUP}$"))
            lag.first.wait_for(state="attached", timeout=PAINT_TIMEOUT_MS)
            assert_no_exception(page)
            screenshot(page, "dashboard-secure.png")
            shown = page.content()
            metrics = urllib.request.urlopen(child.metrics_url, timeout=10).read().decode()
    finally:
        codes = stop_all([child])
    log = child.log_path.read_text()
    assert codes == {"dashboard": 0}, log
    assert "sasl.username=dashboard," in log
    assert not re.search("authori[sz]", shown + log, re.IGNORECASE), log
    for password in passwords:
        assert password not in shown + metrics + log


def test_on_the_secure_cluster_each_service_is_its_own_principal(
    secure_kafka_cluster, trained_model_path, tmp_path
):
    """`taxi up --secure` on a secure cluster: every trip predicted once, each service logged
    in as its own principal, and no password printed; `taxi reset` acts as admin."""
    env = {
        **environment(tmp_path),
        "TAXI_RUNTIME_DIR": str(secure_kafka_cluster.runtime_dir.parent),
        "TAXI_CLUSTER_BASE_PORT": str(secure_kafka_cluster.ports.base),
        "TAXI_AGGREGATOR_WINDOW": "2",
        "TAXI_AGGREGATOR_GRACE": "1",
    }
    secure = up_with_a_limit(
        tmp_path, env, 50, *QUICK, "--secure", "--model", str(trained_model_path)
    )
    assert "(already running, SASL_SSL)" in secure
    assert "stopped the Kafka cluster" not in secure  # not the run's: left running
    started = assert_each_predicted_once(env)
    assert per_source(started) == {"train": 50, "test": 50}
    logs = secure_kafka_cluster.runtime_dir.parent / "logs"
    for service, principal in (("predictor", "predictor"), ("producer-train", "producer")):
        assert f"sasl.username={principal}," in (logs / f"{service}.log").read_text()
    passwords = secure_kafka_cluster.secrets().passwords.values()
    for password in passwords:
        assert password not in secure
    the_dashboard_reads_as_its_own_principal(secure_kafka_cluster, tmp_path, passwords)
    status = taxi(tmp_path, env, "status", "--secure")
    assert status.returncode == 0, status.stderr
    assert f"{secure_kafka_cluster.bootstrap_servers}, SASL_SSL); " in status.stdout
    assert "consumer lag: taxi-predictor 0 records" in status.stdout
    # The commands that manage the pipeline act as admin on this folder's secure cluster, and
    # a second pipeline's topics come with its services' grants.
    listed = taxi(tmp_path, env, "topics", "list", "--secure")
    assert listed.returncode == 0, listed.stderr
    assert NEW_TRIPS in listed.stdout
    assert "sasl.username=admin" in listed.stderr
    ensured = taxi(tmp_path, env, "topics", "ensure", "--topic-prefix", "blue.", "--no-internal")
    assert ensured.returncode == 0, ensured.stderr
    assert "ACLs: " in ensured.stdout

    def deliver(topic: str) -> KafkaError | None:
        # A new producer each time: one that was refused keeps the topic's error for a while.
        producer = Producer(secure_kafka_cluster.client_settings("producer"))
        reports: list[KafkaError | None] = []
        producer.produce(topic, b"a trip", on_delivery=lambda e, _: reports.append(e))
        producer.flush(30)
        assert len(reports) == 1, topic
        return reports[0]

    assert deliver(f"blue.{NEW_TRIPS}") is None  # delivered, not refused
    # Any other cluster (a company's, docker compose's) gets the grants only when asked, from
    # the principal the command runs as: here admin, from its config file.
    elsewhere = {
        **env,
        "TAXI_RUNTIME_DIR": str(tmp_path / "elsewhere"),
        "KAFKA_BOOTSTRAP_SERVERS": secure_kafka_cluster.bootstrap_servers,
        "KAFKA_CONFIG_FILE": str(secure_kafka_cluster.secrets().client_config("admin")),
    }
    del elsewhere["TAXI_CLUSTER_BASE_PORT"]
    args = ("topics", "ensure", "--topic-prefix", "green.", "--no-internal")
    ensured = taxi(tmp_path, elsewhere, *args)
    assert ensured.returncode == 0, ensured.stderr
    assert "ACLs: " not in ensured.stdout
    refused = deliver(f"green.{NEW_TRIPS}")
    assert refused is not None
    assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    granted = taxi(tmp_path, elsewhere, *args, "--grant-acls")
    assert granted.returncode == 0, granted.stderr
    assert "ACLs: " in granted.stdout
    assert deliver(f"green.{NEW_TRIPS}") is None
