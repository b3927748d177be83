"""The options every service shares (taxi_services.options), as each service's --help shows
them."""

from __future__ import annotations

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
