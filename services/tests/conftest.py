"""Run the `taxi` command in-process, as a user would from a shell."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from taxi_model.synth import generate_trips
from taxi_model.workflow import train_and_save
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
    path = tmp_path_factory.mktemp("models") / "taxi_pipeline.pkl"
    train_and_save(generate_trips(rows=3000, seed=5), "synthetic rows=3000 seed=5", path)
    return path
