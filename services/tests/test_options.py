"""The options every service shares (taxi_services.options), as each service's --help shows
them."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from taxi_services import aggregator, predictor, producer


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        (producer.main, "TAXI_PRODUCER_METRICS_ADDRESS"),
        (predictor.main, "TAXI_PREDICTOR_METRICS_ADDRESS"),
        (aggregator.main, "TAXI_AGGREGATOR_METRICS_ADDRESS"),
    ],
)
def test_the_metrics_endpoint_listens_on_loopback_unless_told_otherwise(
    command: click.Command, variable: str
) -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0, result.output
    # Joined into one line: click wraps the help between words.
    output = " ".join(result.output.split())
    assert "--metrics-address TEXT " in output
    assert f"[env var: {variable}; default: 127.0.0.1]" in output


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        ("taxi_services.producer", ["sklearn", "skops"]),
        # river, its drift detector, imports scikit-learn itself.
        ("taxi_services.aggregator", ["skops"]),
    ],
)
def test_services_that_run_no_model_load_no_model_library(module: str, not_loaded: list[str]):
    """The producer reads a model's card, the aggregator the cards' profiles: neither needs
    scikit-learn or skops, which take seconds to import (each start pays for them)."""
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'taxi_stream'" in loaded
    for name in not_loaded:
        assert f"'{name}'" not in loaded


@pytest.mark.parametrize("command", [producer.main, predictor.main, aggregator.main])
def test_help_shows_where_credentials_come_from_never_their_values(command, tmp_path):
    """With a principal's credentials in the environment and its config file named, --help
    names the variables and the file option, and shows no secret."""
    config = tmp_path / "predictor.properties"
    config.write_text("security.protocol=SASL_SSL\nsasl.password=file-secret-hunter2\n")
    config.chmod(0o600)
    env = {
        "KAFKA_CONFIG_FILE": str(config),
        "TAXI_KAFKA_SASL_PASSWORD": "env-secret-hunter2",
        "TAXI_KAFKA_SSL_KEY_PASSWORD": "key-secret-hunter2",
    }
    result = CliRunner().invoke(command, ["--help"], env=env)
    assert result.exit_code == 0, result.output
    assert "KAFKA_CONFIG_FILE" in result.output
    assert "hunter2" not in result.output
