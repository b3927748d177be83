"""The secrets of docker-compose.secure.yml: the local secure cluster's, for containers.

One directory, written as `ensure_secrets` writes the local cluster's (mode 0700, every file
0600, reused on the next run), plus each broker's server.properties. The brokers' settings are
the local secure cluster's (`server_properties` with `secure_settings`) with compose's host
names and ports, and paths under /run/secrets, where docker compose mounts each secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from taxi_kafka.cluster._config import (
    NODE_IDS,
    ClusterPorts,
    NodeSecurity,
    render_properties,
    server_properties,
)
from taxi_kafka.cluster._local import default_secrets_dir
from taxi_kafka.cluster._secrets import (
    ADMIN_PRINCIPAL,
    BROKER_PRINCIPAL,
    CA_FILE,
    PRINCIPALS,
    ClusterSecrets,
    ensure_secrets,
    write_private,
)

# Where docker compose mounts a service's secrets: /run/secrets/<secret name>. The compose
# file names each secret after its file here.
SECRETS_MOUNT = PurePosixPath("/run/secrets")
# The apache/kafka image's data volume (docker-compose.yml mounts kafka-N-data there).
COMPOSE_DATA_DIR = PurePosixPath("/var/lib/kafka/data")
COMPOSE_BROKER_PORT = 9092
COMPOSE_CONTROLLER_PORT = 9093
# The brokers' listener for clients on the host, published on 127.0.0.1 (docker-compose.yml).
COMPOSE_EXTERNAL_PORTS: Mapping[int, int] = {1: 29092, 2: 29093, 3: 29094}
EXTERNAL = "EXTERNAL"
SECURE_LISTENER = "SASL_SSL"
# Moves the folder the compose file reads its secrets from (docker-compose.secure.yml).
COMPOSE_SECRETS_ENV = "TAXI_COMPOSE_SECRETS"
# The user both images run as: appuser in apache/kafka, taxi in ./Dockerfile. Compose mounts a
# file secret as it is on the host (owner and mode kept), so that uid must be able to read it.
CONTAINER_UID = 1000


def default_compose_secrets_dir(cwd: Path | None = None) -> Path:
    """<workspace root>/.taxi/compose-secrets: where docker-compose.secure.yml looks, beside
    itself, so TAXI_RUNTIME_DIR (which moves the local cluster's files) does not move it."""
    return default_secrets_dir({}, cwd).parent / "compose-secrets"


def compose_host(node_id: int) -> str:
    """Node N's service (and host) name in docker-compose.yml."""
    return f"kafka-{node_id}"


def broker_properties_file(node_id: int) -> str:
    return f"{compose_host(node_id)}.properties"


def password_file(principal: str) -> str:
    return f"{principal}.password"


def client_config_file(principal: str) -> str:
    return f"{principal}.properties"


def node_key_store_file(node_id: int) -> str:
    return f"node-{node_id}.pem"


def mounted(name: str) -> str:
    return str(SECRETS_MOUNT / name)


def compose_server_properties(node_id: int, broker_password: str) -> dict[str, str]:
    """Broker `node_id`'s settings in docker compose: the local secure cluster's, with the
    containers' host names and ports, EXTERNAL (the host's clients) secured like SASL_SSL."""
    security = NodeSecurity(
        key_store=Path(mounted(node_key_store_file(node_id))),
        ca_file=Path(mounted(CA_FILE)),
        broker_principal=BROKER_PRINCIPAL,
        broker_password=broker_password,
        admins=(ADMIN_PRINCIPAL,),
    )
    local = server_properties(node_id, ClusterPorts(), Path(COMPOSE_DATA_DIR), security=security)
    host, external = compose_host(node_id), COMPOSE_EXTERNAL_PORTS[node_id]
    # The client listener's SASL settings, for EXTERNAL too: each SASL listener needs its own.
    prefix = f"listener.name.{SECURE_LISTENER.lower()}."
    external_sasl = {
        f"listener.name.{EXTERNAL.lower()}.{key.removeprefix(prefix)}": value
        for key, value in local.items()
        if key.startswith(prefix)
    }
    return {
        **local,
        "controller.quorum.voters": ",".join(
            f"{n}@{compose_host(n)}:{COMPOSE_CONTROLLER_PORT}" for n in NODE_IDS
        ),
        # 0.0.0.0 inside the container: the other containers and the published port reach it
        # on the container's own interface, not its loopback.
        "listeners": f"{SECURE_LISTENER}://0.0.0.0:{COMPOSE_BROKER_PORT},"
        f"CONTROLLER://0.0.0.0:{COMPOSE_CONTROLLER_PORT},{EXTERNAL}://0.0.0.0:{external}",
        "advertised.listeners": f"{SECURE_LISTENER}://{host}:{COMPOSE_BROKER_PORT},"
        f"{EXTERNAL}://localhost:{external}",
        "listener.security.protocol.map": f"{SECURE_LISTENER}:{SECURE_LISTENER},"
        f"CONTROLLER:{SECURE_LISTENER},{EXTERNAL}:{SECURE_LISTENER}",
        **external_sasl,
    }


@dataclass(frozen=True)
class ComposeSecrets:
    """What one run wrote: the files it made, changed, and found as they should be."""

    secrets: ClusterSecrets
    made: tuple[str, ...]
    changed: tuple[str, ...]
    kept: tuple[str, ...]

    @property
    def directory(self) -> Path:
        return self.secrets.directory


def _digests(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        return {}
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in directory.iterdir()
        if path.is_file()
    }


def ensure_compose_secrets(directory: Path) -> ComposeSecrets:
    """The secrets docker-compose.secure.yml mounts, in `directory`: the CA, a certificate per
    broker (kafka-N, localhost and 127.0.0.1), each principal's password and client config,
    and each broker's server.properties. What exists and is still valid is reused."""
    before = _digests(directory)
    found = ensure_secrets(
        directory,
        NODE_IDS,
        PRINCIPALS,
        node_hosts={n: (compose_host(n),) for n in NODE_IDS},
        ca_location=Path(mounted(CA_FILE)),
        cluster="docker compose's secure cluster (docker-compose.secure.yml)",
    )
    for node_id in NODE_IDS:
        settings = compose_server_properties(node_id, found.passwords[BROKER_PRINCIPAL])
        text = render_properties(
            settings, "Written by `taxi cluster compose-secrets`, rewritten on every run."
        )
        write_private(directory / broker_properties_file(node_id), text)
    after = _digests(directory)
    return ComposeSecrets(
        found,
        made=tuple(sorted(set(after) - set(before))),
        changed=tuple(sorted(n for n in after if n in before and before[n] != after[n])),
        kept=tuple(sorted(n for n in after if before.get(n) == after[n])),
    )
