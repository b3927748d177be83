"""Options the services share, beyond taxi_kafka.cli's: the model, the topic namespace, and
`service_options` (Kafka, metrics, identity and logging in one decorator)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from taxi_kafka import METRICS_ADDRESS
from taxi_kafka.cli import configure_logging, kafka_options, log_level_option, metrics_options
from taxi_model import DEFAULT_MODEL_PATH

F = TypeVar("F", bound=Callable[..., Any])


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


def service_options(service: str, metrics_port: int) -> Callable[[F], F]:
    """--bootstrap-servers, -X, --metrics-port, --metrics-address, --instance and --log-level,
    for `service`.

    Logging is configured before the command runs.

    The decorated command receives `kafka: KafkaConfig`, `metrics_port: int`,
    `metrics_address: str` and `instance: str`.
    """

    def decorate(command: F) -> F:
        @metrics_options(service, metrics_port, METRICS_ADDRESS)
        @click.option(
            "--instance",
            default=socket.gethostname,
            show_default="the host name",
            envvar="TAXI_INSTANCE",
            show_envvar=True,
            help="This instance's stable name. A restarted instance must reuse it, so that it "
            "fences its predecessor; two live instances must not share it.",
        )
        @log_level_option
        @kafka_options
        @functools.wraps(command)
        def wrapper(log_level: str, **kwargs: Any) -> Any:
            configure_logging(log_level)
            return command(**kwargs)

        # functools.wraps types the wrapper with its own (log_level, **kwargs) signature, which
        # click fills from the options: to callers the command is still F.
        return wrapper  # type: ignore[return-value]  # see above: wraps() is not typed as F

    return decorate
