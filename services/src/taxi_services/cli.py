"""The `taxi` command: one group, with each family of subcommands in its own module.

Subcommands are imported only when they run (or when help lists them), so `taxi cluster ...`
does not pay for loading scikit-learn and pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from taxi_kafka.cli import configure_logging, log_level_option

# name -> "module:attribute" of the click command
COMMANDS = {
    "cluster": "taxi_services.commands.cluster:cluster",
    "data": "taxi_services.commands.data:data",
    "train": "taxi_services.commands.model:train",
    "evaluate": "taxi_services.commands.model:evaluate",
    # The registry's commands; `train` and `evaluate` are model.py's.
    "model": "taxi_services.commands.registry:model",
    "up": "taxi_services.commands.up:up",
    "reset": "taxi_services.commands.reset:reset",
    "status": "taxi_services.commands.status:status",
    "topics": "taxi_services.commands.topics:topics",
    "chaos": "taxi_services.commands.chaos:chaos",
    "bench": "taxi_services.commands.bench:bench",
    "lifecycle": "taxi_services.commands.lifecycle:lifecycle",
    "months": "taxi_services.commands.months:months",
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@log_level_option
def cli(log_level: str) -> None:
    """ML-taxi: real-time NYC taxi trip-duration predictions on Apache Kafka."""
    configure_logging(log_level)


def main() -> None:
    cli(auto_envvar_prefix="TAXI")
