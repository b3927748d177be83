"""Options every service shares: where Kafka is, librdkafka pass-through, metrics, identity."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from taxi_kafka.config import BOOTSTRAP_ENV, ConfigError, KafkaConfig
from taxi_model.artifact import DEFAULT_MODEL_PATH
from taxi_services.logs import configure_logging
from taxi_services.ports import METRICS_ADDRESS

F = TypeVar("F", bound=Callable[..., Any])


def env_option(service: str) -> Callable[..., Callable[[F], F]]:
    """click.option whose variable is TAXI_<SERVICE>_<OPTION>, shown in --help with the
    default."""

    def option(flag: str, **kwargs: Any) -> Callable[[F], F]:
        variable = f"TAXI_{service}_{flag.lstrip('-')}".upper().replace("-", "_")
        kwargs.setdefault("show_default", True)
        return click.option(flag, envvar=variable, show_envvar=True, **kwargs)

    return option


def model_option(help_text: str, name: str = "model_path", **kwargs: Any) -> Callable[[F], F]:
    """--model: the trained pipeline file, passed to the command as `name`."""
    return click.option(
        "--model",
        name,
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_MODEL_PATH,
        show_default=True,
        help=help_text,
        **kwargs,
    )


def topic_prefix_option() -> Callable[[F], F]:
    """--topic-prefix: a namespace for the topic and consumer group names a service uses."""
    return click.option(
        "--topic-prefix",
        envvar="TAXI_TOPIC_PREFIX",
        default="",
        show_envvar=True,
        help="Put this before every topic and consumer group name, so that a second pipeline "
        "shares a cluster without touching the first (`taxi bench` runs its own) [default: none].",
    )


def prefixed(topic_prefix: str, *names: str) -> list[str]:
    """Topic and consumer group names in the namespace of --topic-prefix."""
    return [topic_prefix + name for name in names]


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
    @functools.wraps(command)
    def wrapper(
        bootstrap_servers: str | None, kafka_settings: tuple[str, ...], **kwargs: Any
    ) -> Any:
        try:
            kafka = KafkaConfig.from_env(
                bootstrap_servers=bootstrap_servers, overrides=kafka_settings
            )
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="-X") from exc
        return command(kafka=kafka, **kwargs)

    return wrapper  # type: ignore[return-value]


def service_options(service: str, metrics_port: int) -> Callable[[F], F]:
    """--bootstrap-servers, -X, --metrics-port, --metrics-address, --instance and --log-level,
    for `service`.

    Logging is configured before the command runs.

    The decorated command receives `kafka: KafkaConfig`, `metrics_port: int`,
    `metrics_address: str` and `instance: str`.
    """

    option = env_option(service)

    def decorate(command: F) -> F:
        @option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            default=metrics_port,
            help="Port of the Prometheus /metrics endpoint (0: none).",
        )
        @option(
            "--metrics-address",
            default=METRICS_ADDRESS,
            help="Interface of the /metrics endpoint (0.0.0.0: every one, as a container "
            "publishing the port needs).",
        )
        @click.option(
            "--instance",
            default=socket.gethostname,
            show_default="the host name",
            envvar="TAXI_INSTANCE",
            show_envvar=True,
            help="This instance's stable name. A restarted instance must reuse it, so that it "
            "fences its predecessor; two live instances must not share it.",
        )
        @click.option(
            "--log-level",
            envvar="TAXI_LOG_LEVEL",
            default="INFO",
            show_default=True,
            show_envvar=True,
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        )
        @kafka_options
        @functools.wraps(command)
        def wrapper(log_level: str, **kwargs: Any) -> Any:
            configure_logging(log_level)
            return command(**kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
