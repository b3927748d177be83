"""`taxi up` as a user runs it: a cluster of its own, a model trained on the spot, every
service started, and nothing left running afterwards."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taxi_kafka.cluster import free_base_port

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


def leftovers(tmp_path: Path) -> list[str]:
    """Processes still running in this test's folder: Kafka nodes, services."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.startswith(str(tmp_path)):
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def test_up_with_a_limit_drains_and_stops_everything(tmp_path):
    up = start_up(tmp_path, environment(tmp_path), "--limit", "200", "--rate", "200")
    output, _ = up.communicate(timeout=400)
    assert up.returncode == 0, output
    assert "training on 50,000 synthetic trips" in output
    assert "every trip predicted and scored" in output
    assert "started 200 train + 200 test | predicted 400" in output
    assert f"stopped: predictor (0), aggregator (0), dashboard (0){PROMETHEUS_STOPPED}\n" in output
    assert (tmp_path / "models" / "taxi_pipeline.pkl").is_file()
    assert leftovers(tmp_path) == []


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


def test_status_while_up_runs_and_ctrl_c_stops_every_process(tmp_path):
    env = environment(tmp_path)
    up = start_up(tmp_path, env, "--rate", "20")
    deadline = time.monotonic() + 300
    assert up.stdout is not None
    for line in up.stdout:
        if line.startswith("started") and "predicted 0 " not in line:
            break
        assert time.monotonic() < deadline, "no predictions in time"
    report = status_once_the_dashboard_has_read(tmp_path, env)
    press_ctrl_c_under_uv_run(up)
    output, _ = up.communicate(timeout=120)
    assert up.returncode == 0, output
    assert "stopped the Kafka cluster" in output
    assert leftovers(tmp_path) == []

    assert "Kafka: 3 of 3 brokers up" in report
    assert f"taxi up: running (pid {up.pid})" in report
    assert re.search(r"^predictor +running .* predicted [1-9]", report, re.MULTILINE), report
    assert re.search(r"^producer-test +running .* started [1-9]", report, re.MULTILINE), report
    assert "consumer lag: taxi-predictor " in report
    assert re.search(r"^dashboard UI +running +http://127.0.0.1:8501", report, re.MULTILINE)
    assert re.search(r"^dashboard +running .* read [1-9]", report, re.MULTILINE), report
    assert ("prometheus      running" in report) == PROMETHEUS_INSTALLED, report
    assert re.search(r"^model: \w+ at models/taxi_pipeline.pkl, held-out RMSLE", report, re.M)
