"""The command-line glue every entry point that talks to Kafka shares: click options for the
cluster, librdkafka settings, the metrics endpoint and the log level, and one log format.

Each option reads an environment variable too, named after the command: `env_option("predictor")`
makes `--batch-size` read TAXI_PREDICTOR_BATCH_SIZE.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from taxi_kafka._config import (
    BOOTSTRAP_ENV,
    CONFIG_FILE_ENV,
    ConfigError,
    KafkaConfig,
    is_secret,
    parse_properties,
)

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)

LOG_LEVEL_ENV = "TAXI_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def option_variable(command: str, flag: str) -> str:
    """The environment variable of `command`'s `flag`: TAXI_<COMMAND>_<OPTION>."""
    return f"TAXI_{command}_{flag.lstrip('-')}".upper().replace("-", "_")


def env_option(command: str) -> Callable[..., Callable[[F], F]]:
    """click.option whose variable is `option_variable(command, flag)`, shown in --help with
    the default."""

    def option(flag: str, **kwargs: Any) -> Callable[[F], F]:
        kwargs.setdefault("show_default", True)
        return click.option(flag, envvar=option_variable(command, flag), show_envvar=True, **kwargs)

    return option


def kafka_options(command: F) -> F:
    """--bootstrap-servers and -X (plus TAXI_KAFKA_* variables); the command receives
    `kafka: KafkaConfig`."""

    @click.option(
        "--bootstrap-servers",
        envvar=BOOTSTRAP_ENV,
        show_envvar=True,
        help="Every broker, comma-separated [default: the three local brokers].",
    )
    @click.option(
        "-X",
        "kafka_settings",
        multiple=True,
        metavar="KEY=VALUE",
        help="Any librdkafka setting (repeatable), e.g. -X security.protocol=SSL. "
        "TAXI_KAFKA_<NAME> variables do the same: TAXI_KAFKA_SASL_MECHANISM=PLAIN.",
    )
    @click.option(
        "--kafka-config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar=CONFIG_FILE_ENV,
        show_envvar=True,
        help="A file of librdkafka settings, key=value per line (a principal's credentials, "
        "say: `taxi cluster up --secure` writes one per service). Variables and -X win over it.",
    )
    @functools.wraps(command)
    def wrapper(
        bootstrap_servers: str | None,
        kafka_settings: tuple[str, ...],
        config_file: Path | None,
        **kwargs: Any,
    ) -> Any:
        try:
            from_file = read_config_file(config_file) if config_file else None
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--kafka-config") from exc
        try:
            kafka = KafkaConfig.from_env(
                bootstrap_servers=bootstrap_servers,
                overrides=kafka_settings,
                file_settings=from_file,
            )
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="-X") from exc
        return command(kafka=kafka, **kwargs)

    # functools.wraps types the wrapper with its own (bootstrap_servers, kafka_settings,
    # **kwargs) signature, which click fills from the options: to callers it is still F.
    return wrapper  # type: ignore[return-value]  # see above: wraps() is not typed as F


def read_config_file(path: Path) -> dict[str, str]:
    """A --kafka-config file's settings; a warning when others may read a file with secrets."""
    settings = parse_properties(path.read_text(), str(path))
    if any(is_secret(key) for key in settings) and path.stat().st_mode & 0o077:
        log.warning("%s holds secrets but others may read it: chmod 600 %s", path, path)
    return settings


def metrics_options(command: str, port: int, address: str) -> Callable[[F], F]:
    """--metrics-port and --metrics-address of `command`'s Prometheus endpoint; the command
    receives `metrics_port: int` and `metrics_address: str`."""
    option = env_option(command)

    def decorate(function: F) -> F:
        function = option(
            "--metrics-address",
            default=address,
            help="Interface of the /metrics endpoint (0.0.0.0: every one, as a container "
            "publishing the port needs).",
        )(function)
        return option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            default=port,
            help="Port of the Prometheus /metrics endpoint (0: none).",
        )(function)

    return decorate


def log_level_option(function: F) -> F:
    """--log-level (TAXI_LOG_LEVEL); the command receives `log_level` as LOG_LEVELS spells it
    (click maps "debug" to "DEBUG")."""
    return click.option(
        "--log-level",
        envvar=LOG_LEVEL_ENV,
        default="INFO",
        show_default=True,
        show_envvar=True,
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        help="How much to log.",
    )(function)


def configure_logging(level: str, *, loggers: Sequence[str] | None = None) -> None:
    """The project's one log format, on stderr, at `level`: for every logger, or only for
    `loggers` in a process whose framework sets up the root logger itself (Streamlit)."""
    if loggers is None:
        logging.basicConfig(
            level=level.upper(),
            format=LOG_FORMAT,
            datefmt="%H:%M:%S",
            stream=sys.stderr,
            force=True,
        )
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    for name in loggers:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        logger.handlers = [handler]
        logger.propagate = False
