"""The `taxi` command: one group, with each family of subcommands in its own module."""

from __future__ import annotations

import click

from taxi_services.commands import data, model
from taxi_services.logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--log-level",
    envvar="TAXI_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="How much to log (env TAXI_LOG_LEVEL).",
)
def cli(log_level: str) -> None:
    """ML-taxi: real-time NYC taxi trip-duration predictions on Apache Kafka."""
    configure_logging(log_level)


cli.add_command(data.data)
cli.add_command(model.train)
cli.add_command(model.evaluate)


def main() -> None:
    cli(auto_envvar_prefix="TAXI")
