"""taxi_kafka.cli: the options and the log format every command line shares, through click's
own test runner."""

from __future__ import annotations

import logging
from typing import Any

import click
import pytest
from click.testing import CliRunner

from taxi_kafka import KafkaConfig
from taxi_kafka.cli import (
    configure_logging,
    env_option,
    kafka_options,
    log_level_option,
    metrics_options,
)


def run(command: click.Command, *args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(command, list(args), env=env, catch_exceptions=False)
    return result


def echo_command() -> click.Command:
    """A command with every shared option that prints what it received."""

    @click.command()
    @env_option("demo")("--batch-size", type=int, default=10)
    @kafka_options
    @metrics_options("demo", 9999, "127.0.0.1")
    @log_level_option
    def command(**received: Any) -> None:
        kafka = received.pop("kafka")
        click.echo(repr(sorted(received.items())))
        click.echo(kafka.bootstrap_servers)
        click.echo(repr(sorted(kafka.settings.items())))

    return command


def test_each_option_reads_a_variable_named_after_the_command_and_the_flag():
    result = run(
        echo_command(),
        env={
            "TAXI_DEMO_BATCH_SIZE": "7",
            "TAXI_DEMO_METRICS_PORT": "0",
            "TAXI_DEMO_METRICS_ADDRESS": "0.0.0.0",
            "TAXI_LOG_LEVEL": "debug",
            "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092",
        },
    )
    assert result.exit_code == 0, result.output
    options, servers, _ = result.output.splitlines()
    assert options == repr(
        [
            ("batch_size", 7),
            ("log_level", "DEBUG"),
            ("metrics_address", "0.0.0.0"),
            ("metrics_port", 0),
        ]
    )
    assert servers == "kafka-1:9092"


def test_defaults_are_loopback_and_info():
    result = run(echo_command(), env={"KAFKA_BOOTSTRAP_SERVERS": "b:1"})
    options = result.output.splitlines()[0]
    assert "('metrics_address', '127.0.0.1')" in options
    assert "('metrics_port', 9999)" in options
    assert "('log_level', 'INFO')" in options


def test_librdkafka_settings_pass_through_and_a_malformed_one_is_a_usage_error():
    good = run(
        echo_command(),
        "--bootstrap-servers",
        "a:1,b:2",
        "-X",
        "security.protocol=SSL",
        "-X",
        "ssl.ca.location=/ca.pem",
    )
    assert good.exit_code == 0, good.output
    _, servers, overrides = good.output.splitlines()
    assert servers == "a:1,b:2"
    assert "('security.protocol', 'SSL')" in overrides
    assert "('ssl.ca.location', '/ca.pem')" in overrides
    bad = run(echo_command(), "-X", "no-equals-sign")
    assert bad.exit_code == 2
    assert "-X" in bad.output


def test_a_config_file_is_beneath_the_variables_and_the_flags(tmp_path, caplog):
    config = tmp_path / "predictor.properties"
    config.write_text(
        "# the predictor on the secure cluster\n\n"
        "security.protocol=SASL_SSL\n"
        "sasl.username = predictor\n"
        "sasl.password=pa=ss\n"
        "bootstrap.servers=file:1\n"
        "client.id=from-file\n"
    )
    config.chmod(0o600)
    env = {"TAXI_KAFKA_CLIENT_ID": "from-env"}
    result = run(kafka_command(), "--kafka-config", str(config), "-X", "acks=1", env=env)
    assert result.exit_code == 0, result.output
    shown = result.output
    assert "bootstrap=file:1" in shown  # as the variable would: a flag still beats it
    assert "security.protocol=SASL_SSL" in shown
    assert "sasl.username=predictor" in shown
    assert "sasl.password=pa=ss" in shown  # the value may hold '='
    assert "client.id=from-env" in shown
    assert "acks=1" in shown
    assert "others may read it" not in caplog.text
    flag = run(kafka_command(), "--kafka-config", str(config), "--bootstrap-servers", "flag:2")
    assert "bootstrap=flag:2" in flag.output


def test_a_readable_config_file_with_secrets_is_warned_about(tmp_path, caplog):
    config = tmp_path / "open.properties"
    config.write_text("sasl.password=hunter2\n")
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert run(kafka_command(), "--kafka-config", str(config)).exit_code == 0
    assert f"chmod 600 {config}" in caplog.text


def test_a_malformed_config_file_is_a_usage_error_that_shows_no_secret(tmp_path):
    config = tmp_path / "bad.properties"
    config.write_text("security.protocol=SASL_SSL\nhunter2-the-password\n")
    result = run(kafka_command(), "--kafka-config", str(config))
    assert result.exit_code == 2
    assert "line 2: expected key=value" in result.output
    assert "hunter2" not in result.output
    missing = run(kafka_command(), "--kafka-config", str(tmp_path / "none"))
    assert missing.exit_code == 2


def kafka_command() -> click.Command:
    """A command with the Kafka options that prints its KafkaConfig, secrets included."""

    @click.command()
    @kafka_options
    def show(kafka: KafkaConfig) -> None:
        click.echo(f"bootstrap={kafka.bootstrap_servers}")
        for key, value in sorted(kafka.settings.items()):
            click.echo(f"{key}={value}")

    return show


def test_help_names_every_variable():
    text = " ".join(run(echo_command(), "--help").output.split())
    for variable in (
        "TAXI_DEMO_BATCH_SIZE",
        "TAXI_DEMO_METRICS_PORT",
        "TAXI_DEMO_METRICS_ADDRESS",
        "TAXI_LOG_LEVEL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CONFIG_FILE",
    ):
        assert variable in text


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    named = {name: logging.getLogger(name) for name in ("taxi", "taxi_kafka", "other")}
    named_saved = {n: (lg.level, list(lg.handlers), lg.propagate) for n, lg in named.items()}
    yield
    root.setLevel(saved[0])
    root.handlers = saved[1]
    for name, (level, handlers, propagate) in named_saved.items():
        named[name].setLevel(level)
        named[name].handlers = handlers
        named[name].propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_logging_only_for_named_loggers_leaves_the_root_alone(capsys):
    root_handlers = list(logging.getLogger().handlers)
    configure_logging("warning", loggers=("taxi", "taxi_kafka"))
    configure_logging("warning", loggers=("taxi", "taxi_kafka"))  # twice: still one handler
    assert logging.getLogger().handlers == root_handlers
    logging.getLogger("taxi.predictor").warning("shown")
    logging.getLogger("taxi.predictor").info("hidden")
    err = capsys.readouterr().err
    assert err.count("shown") == 1
    assert "WARNING taxi.predictor: shown" in err
    assert "hidden" not in err


@pytest.mark.usefixtures("restore_logging")
def test_logging_for_every_logger(capsys):
    configure_logging("info")
    logging.getLogger("other").info("from anywhere")
    assert "INFO    other: from anywhere" in capsys.readouterr().err
