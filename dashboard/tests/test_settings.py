"""Settings carried from the command to the app in environment variables."""

from __future__ import annotations

from taxi_dashboard.settings import DashboardSettings, broker_count
from taxi_kafka import KafkaConfig


def test_settings_survive_the_trip_through_the_environment():
    settings = DashboardSettings(
        kafka=KafkaConfig(
            "a:1,b:2",
            {"security.protocol": "SSL", "ssl.ca.location": "/ca.pem", "ssl_engine.id": "x"},
        ),
        metrics_port=0,
        metrics_address="0.0.0.0",
        expected_brokers=5,
        refresh_s=1.5,
        lookback_s=30.0,
        health_interval_s=2.0,
        log_level="DEBUG",
    )
    env = settings.to_env()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "a:1,b:2"
    assert env["TAXI_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert DashboardSettings.from_env(env) == settings


def test_defaults_from_an_empty_environment():
    settings = DashboardSettings.from_env({})
    assert settings == DashboardSettings()
    assert settings.metrics_port == 9105
    assert settings.metrics_address == "127.0.0.1"
    assert settings.brokers == 3  # the three local brokers


def test_the_expected_broker_count_follows_the_bootstrap_list_unless_given():
    assert DashboardSettings(kafka=KafkaConfig("a:1")).brokers == 1
    assert DashboardSettings(kafka=KafkaConfig("a:1"), expected_brokers=3).brokers == 3
    assert broker_count(" a:1 , b:2,,") == 2
