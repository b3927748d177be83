"""Client configuration from the environment and command-line flags (pure: no I/O).

- `KAFKA_BOOTSTRAP_SERVERS` lists the brokers. List all of them: a client that knows only one
  broker cannot start while that one is down. The default is the three local brokers.
- `TAXI_KAFKA_<NAME>` passes any librdkafka setting through: `TAXI_KAFKA_SECURITY_PROTOCOL=SSL`
  becomes `security.protocol=SSL` (underscores become dots, a double underscore a literal one).
- Flags add `-X key=value` overrides on top (`parse_overrides`), as kcat and librdkafka do.
- `--kafka-config FILE` (or KAFKA_CONFIG_FILE) names a file of `key=value` settings
  (`parse_properties`) beneath both: a principal's credentials, say.

Precedence, lowest first: the library's defaults, the environment, the flags, then the settings
the library's guarantees rest on (idempotence, acks=all, read_committed, manual commits), which
cannot be overridden.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from taxi_kafka.cluster._config import BASE_PORT_ENV, DEFAULT_BASE_PORT, ClusterPorts

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
CONFIG_FILE_ENV = "KAFKA_CONFIG_FILE"
PASSTHROUGH_PREFIX = "TAXI_KAFKA_"
BOOTSTRAP_KEY = "bootstrap.servers"
DEFAULT_BOOTSTRAP_SERVERS = ClusterPorts(DEFAULT_BASE_PORT).bootstrap_servers

MASK = "*****"
# Setting names holding credentials or private keys: never logged in clear.
_SECRET_KEY = re.compile(r"password|secret|ssl\.key\.pem|jaas\.config|oauthbearer\.config|token")
_SETTING_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


class ConfigError(ValueError):
    """A setting that cannot be parsed; the message names it."""


# A broker cut off by the network answers nothing, and the controller moves its leaderships
# and coordinators away within broker.session.timeout.ms (4 s here). Clients learn of that
# from a metadata refresh, librdkafka's every 5 minutes unless a request fails, and a request
# to the cut broker fails only when it times out, after 60 s. With both, partition-leader's
# longest gap without predictions was the whole 30 s cut (`taxi chaos`). A reconnection to a
# cut broker hangs too, its SYNs dropped, for up to socket.connection.setup.timeout.ms (30 s).
PARTITION_TOLERANT_DEFAULTS: Mapping[str, Any] = {
    "socket.timeout.ms": 10000,
    "socket.connection.setup.timeout.ms": 10000,
    "topic.metadata.refresh.interval.ms": 2000,
}


def env_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka settings passed through as TAXI_KAFKA_* variables."""
    settings = {}
    for name, value in env.items():
        if name.startswith(PASSTHROUGH_PREFIX) and len(name) > len(PASSTHROUGH_PREFIX):
            settings[setting_name(name[len(PASSTHROUGH_PREFIX) :])] = value
    return settings


def setting_name(env_suffix: str) -> str:
    """SECURITY_PROTOCOL -> security.protocol; SSL__ENGINE -> ssl_engine."""
    escaped = env_suffix.lower().replace("__", "\0")
    return ".".join(part.replace("\0", "_") for part in escaped.split("_"))


def env_name(setting: str) -> str:
    """The inverse of `setting_name`: security.protocol -> TAXI_KAFKA_SECURITY_PROTOCOL."""
    return PASSTHROUGH_PREFIX + setting.replace("_", "__").replace(".", "_").upper()


def parse_properties(text: str, origin: str = "the config file") -> dict[str, str]:
    """librdkafka settings written as `key=value` lines, as `--kafka-config` files are (and
    as kcat's -F and Java clients' .properties files are): blank lines and lines starting
    with # or ! are skipped, spaces around the key and the value are trimmed."""
    settings = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _SETTING_NAME.fullmatch(key):
            # The line itself may hold a secret: name its number only.
            raise ConfigError(f"{origin}, line {number}: expected key=value with a setting name")
        settings[key] = value.strip()
    return settings


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`-X key=value` arguments as settings; the value may itself contain '='."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _SETTING_NAME.fullmatch(key):
            raise ConfigError(f"expected key=value with a librdkafka setting name, got {item!r}")
        settings[key] = value
    return settings


def is_secret(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def masked(settings: Mapping[str, Any]) -> dict[str, str]:
    """Settings fit for a log line: secrets masked, callbacks named rather than shown."""
    shown = {}
    for key, value in settings.items():
        if is_secret(key):
            shown[key] = MASK
        elif callable(value) or hasattr(value, "log"):
            shown[key] = f"<{type(value).__name__}>"
        else:
            shown[key] = str(value)
    return shown


def merge(
    defaults: Mapping[str, Any], user: Mapping[str, Any], enforced: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Defaults < user settings < enforced ones. Also returns the user settings that were
    overridden because an enforced setting wins (for a warning)."""
    # librdkafka reads True and "true" alike.
    ignored = [
        key
        for key, value in user.items()
        if key in enforced and str(value).lower() != str(enforced[key]).lower()
    ]
    return {**defaults, **user, **enforced}, ignored


def local_bootstrap_servers(env: Mapping[str, str] = os.environ) -> str:
    """The local cluster's brokers: on the default ports, or where TAXI_CLUSTER_BASE_PORT
    moved them (`taxi cluster up` and `taxi up` start them there)."""
    base = env.get(BASE_PORT_ENV)
    return ClusterPorts(int(base)).bootstrap_servers if base else DEFAULT_BOOTSTRAP_SERVERS


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are and any librdkafka settings to pass through (TLS, SASL, tuning)."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    settings: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] = os.environ,
        *,
        bootstrap_servers: str | None = None,
        overrides: Iterable[str] = (),
        file_settings: Mapping[str, str] | None = None,
    ) -> KafkaConfig:
        """A config file's settings (`--kafka-config`), then the environment, then flags:
        `bootstrap_servers` (a --bootstrap-servers flag) and `overrides` (-X key=value flags)
        win over the environment, which wins over the file."""
        settings = {**(file_settings or {}), **env_settings(env), **parse_overrides(overrides)}
        # bootstrap.servers given as a setting counts like the variable, a flag beats both.
        from_settings = settings.pop(BOOTSTRAP_KEY, None)
        bootstrap = (
            bootstrap_servers
            or from_settings
            or env.get(BOOTSTRAP_ENV)
            or local_bootstrap_servers(env)
        )
        return cls(bootstrap.strip(), settings)

    def client_settings(
        self,
        defaults: Mapping[str, Any] | None = None,
        enforced: Mapping[str, Any] | None = None,
        *,
        what: str = "client",
    ) -> dict[str, Any]:
        """The full settings of one client; logs them, masked, and any user setting that an
        enforced one overrides."""
        user = {BOOTSTRAP_KEY: self.bootstrap_servers, **self.settings}
        required = enforced or {}
        settings, ignored = merge(defaults or {}, user, required)
        for key in ignored:
            log.warning(
                "%s: ignoring %s=%s, the library needs %s", what, key, user[key], required[key]
            )
        log.info("%s settings: %s", what, describe(settings))
        return settings


def throwaway_group(kind: str, settings: Mapping[str, Any]) -> str:
    """A group.id for a client that reads by assignment and never commits. It names the SASL
    user of `settings`, if any, so that each principal's groups share a prefix its ACLs can
    grant: taxi-<user>-<kind>-<random>, else taxi-<kind>-<random>. (Brokers still look up a
    coordinator for the group, which needs DESCRIBE on it.)"""
    user = settings.get("sasl.username")
    return "-".join(["taxi", *([str(user)] if user else []), kind, uuid.uuid4().hex[:8]])


def describe(settings: Mapping[str, Any]) -> str:
    """One log-safe line: `key=value` pairs, secrets masked."""
    return ", ".join(f"{key}={value}" for key, value in sorted(masked(settings).items()))
