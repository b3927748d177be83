"""The dashboard's settings, carried from the `taxi-dashboard` command to the Streamlit app in
environment variables (pure: reads and writes plain mappings).

The command resolves its flags; `to_env` writes them as the variables `from_env` reads back in
the app, which Streamlit runs in the same environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from taxi_kafka import (
    BOOTSTRAP_ENV,
    DASHBOARD_PORT,
    METRICS_ADDRESS,
    METRICS_PORTS,
    KafkaConfig,
    env_name,
)
from taxi_kafka.cli import LOG_LEVEL_ENV, option_variable

# The command's name in its variables: --refresh is TAXI_DASHBOARD_REFRESH.
COMMAND = "dashboard"
PORT_ENV = option_variable(COMMAND, "--port")
METRICS_PORT_ENV = option_variable(COMMAND, "--metrics-port")
METRICS_ADDRESS_ENV = option_variable(COMMAND, "--metrics-address")
BROKERS_ENV = option_variable(COMMAND, "--brokers")
REFRESH_ENV = option_variable(COMMAND, "--refresh")
LOOKBACK_ENV = option_variable(COMMAND, "--lookback")
HEALTH_INTERVAL_ENV = option_variable(COMMAND, "--health-interval")

DEFAULT_PORT = DASHBOARD_PORT
DEFAULT_METRICS_PORT = METRICS_PORTS["dashboard"]
# The page and the metrics listen on loopback unless told otherwise; a container passes 0.0.0.0.
DEFAULT_ADDRESS = METRICS_ADDRESS
DEFAULT_REFRESH_S = 1.0
DEFAULT_LOOKBACK_S = 60.0
DEFAULT_HEALTH_INTERVAL_S = 3.0


def broker_count(bootstrap_servers: str) -> int:
    """How many brokers the bootstrap list names."""
    return len([server for server in bootstrap_servers.split(",") if server.strip()])


@dataclass(frozen=True)
class DashboardSettings:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_address: str = DEFAULT_ADDRESS
    # None: as many as the bootstrap list names.
    expected_brokers: int | None = None
    refresh_s: float = DEFAULT_REFRESH_S
    # Seconds of trips read back at start-up, before the live ones.
    lookback_s: float = DEFAULT_LOOKBACK_S
    health_interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    log_level: str = "INFO"

    @property
    def brokers(self) -> int:
        return self.expected_brokers or broker_count(self.kafka.bootstrap_servers)

    def to_env(self) -> dict[str, str]:
        env = {
            BOOTSTRAP_ENV: self.kafka.bootstrap_servers,
            METRICS_PORT_ENV: str(self.metrics_port),
            METRICS_ADDRESS_ENV: self.metrics_address,
            REFRESH_ENV: str(self.refresh_s),
            LOOKBACK_ENV: str(self.lookback_s),
            HEALTH_INTERVAL_ENV: str(self.health_interval_s),
            LOG_LEVEL_ENV: self.log_level,
            **{env_name(key): value for key, value in self.kafka.settings.items()},
        }
        if self.expected_brokers is not None:
            env[BROKERS_ENV] = str(self.expected_brokers)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DashboardSettings:
        brokers = env.get(BROKERS_ENV)
        return cls(
            kafka=KafkaConfig.from_env(env),
            metrics_port=int(env.get(METRICS_PORT_ENV, DEFAULT_METRICS_PORT)),
            metrics_address=env.get(METRICS_ADDRESS_ENV, DEFAULT_ADDRESS),
            expected_brokers=int(brokers) if brokers else None,
            refresh_s=float(env.get(REFRESH_ENV, DEFAULT_REFRESH_S)),
            lookback_s=float(env.get(LOOKBACK_ENV, DEFAULT_LOOKBACK_S)),
            health_interval_s=float(env.get(HEALTH_INTERVAL_ENV, DEFAULT_HEALTH_INTERVAL_S)),
            log_level=env.get(LOG_LEVEL_ENV, "INFO").upper(),
        )
