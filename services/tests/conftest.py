"""Run the `taxi` command in-process, as a user would from a shell; run the services' console
scripts as processes on a cluster of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from taxi_kafka.cluster import LocalCluster, scratch_cluster
from taxi_model import generate_trips, train_and_save
from taxi_services.cli import cli

TaxiRunner = Callable[..., tuple[int, str, str]]


def run_taxi(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `taxi ARGS`; return the exit code, stdout, and stderr (logs and errors)."""
    result = CliRunner().invoke(cli, list(args), env=env, auto_envvar_prefix="TAXI")
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def taxi() -> TaxiRunner:
    return run_taxi


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty folder, so the default paths (data/, models/) start empty."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def trained_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on synthetic trips, for services that need one."""
    path = tmp_path_factory.mktemp("models") / "taxi_pipeline.skops"
    train_and_save(generate_trips(rows=3000, seed=5), "synthetic rows=3000 seed=5", path)
    return path


@pytest.fixture(scope="session")
def challenger_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another small model, trained on other synthetic trips: a challenger to the one above."""
    path = tmp_path_factory.mktemp("challenger") / "taxi_pipeline.skops"
    train_and_save(generate_trips(rows=2000, seed=6), "synthetic rows=2000 seed=6", path)
    return path


BIN = Path(sys.executable).parent


@pytest.fixture
def pipeline_cluster() -> Iterator[LocalCluster]:
    """A cluster of its own: the pipeline's topic and group names are fixed."""
    with scratch_cluster("taxi-pipeline-test-") as cluster:
        yield cluster


class Services:
    """Starts console scripts (the services, the dashboard) against one cluster, each logging
    to `<script>-<n>.log` in `workdir`, and stops them all."""

    def __init__(self, cluster: LocalCluster, workdir: Path) -> None:
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
            "TAXI_LOG_LEVEL": "INFO",
        }
        self.workdir = workdir
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []  # each process's, in the order of `running`

    def start(self, script: str, *args: str, metrics_port: int = 0) -> subprocess.Popen[bytes]:
        """`metrics_port` 0: no /metrics endpoint (never a default port, which may be taken)."""
        self.logs.append(self.workdir / f"{script}-{len(self.running)}.log")
        with self.logs[-1].open("wb") as log:
            process = subprocess.Popen(
                [str(BIN / script), "--metrics-port", str(metrics_port), *args],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append(process)
        return process

    def stop_all(self, timeout: float = 60.0) -> list[int]:
        """SIGTERM every process still running; their exit codes (0: a clean shutdown). One
        still running after `timeout` seconds is killed (exit code -9): none outlives the test."""
        stopping = [p for p in self.running if p.poll() is None]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = []
        for process in stopping:
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes


@pytest.fixture
def services(pipeline_cluster: LocalCluster, tmp_path: Path) -> Iterator[Services]:
    """Services on `pipeline_cluster`, working in `tmp_path`; whatever still runs at the end of
    the test is stopped."""
    started = Services(pipeline_cluster, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def shared_services(kafka_cluster: LocalCluster, tmp_path: Path) -> Iterator[Services]:
    """Services on the session's shared cluster, for tests that keep to a --topic-prefix of
    their own; whatever still runs at the end of the test is stopped."""
    started = Services(kafka_cluster, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
