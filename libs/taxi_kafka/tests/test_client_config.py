"""Client configuration: environment pass-through, -X overrides, precedence, secret masking."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka._config import (
    DEFAULT_BOOTSTRAP_SERVERS,
    MASK,
    ConfigError,
    KafkaConfig,
    describe,
    env_name,
    env_settings,
    masked,
    merge,
    parse_overrides,
    setting_name,
)

setting_names = st.from_regex(
    r"[a-z][a-z0-9]*(_[a-z0-9]+)?(\.[a-z][a-z0-9]*(_[a-z0-9]+)?){0,4}", fullmatch=True
)


def test_default_bootstrap_lists_all_three_local_brokers():
    assert DEFAULT_BOOTSTRAP_SERVERS == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert KafkaConfig.from_env({}).bootstrap_servers == DEFAULT_BOOTSTRAP_SERVERS
    moved = KafkaConfig.from_env({"TAXI_CLUSTER_BASE_PORT": "29092"}).bootstrap_servers
    assert moved == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"


def test_env_passes_librdkafka_settings_through():
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9092,c:9092",
        "TAXI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TAXI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TAXI_KAFKA_SASL_PASSWORD": "hunter2",
        "TAXI_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        "TAXI_LOG_LEVEL": "DEBUG",  # the project's own setting, not librdkafka's
        "TAXI_KAFKA_": "ignored",
    }
    config = KafkaConfig.from_env(env)
    assert config.bootstrap_servers == "a:9092,b:9092,c:9092"
    assert config.settings == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "hunter2",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_flags_beat_the_environment():
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:1", "TAXI_KAFKA_LINGER_MS": "5"}
    config = KafkaConfig.from_env(
        env, bootstrap_servers="flag:1,flag:2", overrides=["linger.ms=50", "client.id=x=y"]
    )
    assert config.bootstrap_servers == "flag:1,flag:2"
    assert config.settings == {"linger.ms": "50", "client.id": "x=y"}


def test_bootstrap_given_as_a_setting_counts_like_the_variable():
    config = KafkaConfig.from_env({}, overrides=["bootstrap.servers=x:1,y:1"])
    assert config.bootstrap_servers == "x:1,y:1"
    assert "bootstrap.servers" not in config.settings


@pytest.mark.parametrize("bad", ["linger.ms", "=5", "Linger.Ms=5", "a..b=1", ""])
def test_malformed_overrides_are_rejected(bad):
    with pytest.raises(ConfigError):
        parse_overrides([bad])


@given(setting_names)
def test_env_names_round_trip(name):
    assert setting_name(env_name(name)[len("TAXI_KAFKA_") :]) == name
    assert env_settings({env_name(name): "v"}) == {name: "v"}


def test_double_underscore_is_a_literal_underscore():
    assert setting_name("SSL_ENGINE__ID") == "ssl.engine_id"


@pytest.mark.parametrize(
    "key",
    [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "sasl.jaas.config",
    ],
)
def test_secrets_are_masked(key):
    assert masked({key: "s3cret"}) == {key: MASK}
    assert "s3cret" not in describe({key: "s3cret", "acks": "all"})


def test_masking_keeps_the_rest_readable():
    assert masked({"sasl.username": "me", "linger.ms": 5, "stats_cb": print}) == {
        "sasl.username": "me",
        "linger.ms": "5",
        "stats_cb": "<builtin_function_or_method>",
    }


def test_enforced_settings_win_and_are_reported():
    settings, ignored = merge(
        {"linger.ms": 5, "acks": "1"},
        {"linger.ms": 20, "acks": "0", "enable.idempotence": "true"},
        {"acks": "all", "enable.idempotence": True},
    )
    assert settings == {"linger.ms": 20, "acks": "all", "enable.idempotence": True}
    assert ignored == ["acks"]


def test_client_settings_log_without_secrets(caplog):
    config = KafkaConfig("a:1,b:1", {"sasl.password": "hunter2", "isolation.level": "x"})
    with caplog.at_level(logging.INFO, logger="taxi_kafka._config"):
        settings = config.client_settings(
            {"linger.ms": 5}, {"isolation.level": "read_committed"}, what="test consumer"
        )
    assert settings["sasl.password"] == "hunter2"
    assert settings["isolation.level"] == "read_committed"
    assert settings["bootstrap.servers"] == "a:1,b:1"
    assert "hunter2" not in caplog.text
    assert "ignoring isolation.level=x" in caplog.text
