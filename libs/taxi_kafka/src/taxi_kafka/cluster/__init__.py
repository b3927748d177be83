"""The local 3-broker KRaft cluster: `LocalCluster`, its settings, and what it reports.

The public names are the ones below (`__all__`); the underscored modules are implementation."""

from taxi_kafka.cluster._compose import (
    COMPOSE_EXTERNAL_PORTS,
    COMPOSE_SECRETS_ENV,
    CONTAINER_UID,
    SECRETS_MOUNT,
    ComposeSecrets,
    broker_properties_file,
    client_config_file,
    compose_host,
    compose_server_properties,
    default_compose_secrets_dir,
    ensure_compose_secrets,
    node_key_store_file,
    password_file,
)
from taxi_kafka.cluster._config import (
    BROKER_SETTINGS,
    DEFAULT_BASE_PORT,
    JVM_OPTIONS,
    NODE_IDS,
    ClusterPorts,
    server_properties,
)
from taxi_kafka.cluster._errors import ClusterError, PortInUseError, PrerequisiteError
from taxi_kafka.cluster._jars import KAFKA_VERSION, KafkaJars
from taxi_kafka.cluster._local import (
    JVM_OPTIONS_ENV,
    PLAINTEXT,
    SASL_SSL,
    SECURITY_ENV,
    LocalCluster,
    UpResult,
    default_runtime_dir,
    default_secrets_dir,
    requested_security,
)
from taxi_kafka.cluster._procs import pid_alive, port_free, read_cmdline, send_signal, wait_gone
from taxi_kafka.cluster._scratch import free_base_port, scratch_cluster
from taxi_kafka.cluster._secrets import (
    ADMIN_PRINCIPAL,
    PRINCIPALS,
    SERVICE_PRINCIPALS,
    ClusterSecrets,
    ensure_secrets,
)
from taxi_kafka.cluster._status import (
    ClusterStatus,
    NodeStatus,
    PartitionState,
    format_status,
    partitions_of,
)

__all__ = [
    "ADMIN_PRINCIPAL",
    "BROKER_SETTINGS",
    "COMPOSE_EXTERNAL_PORTS",
    "COMPOSE_SECRETS_ENV",
    "CONTAINER_UID",
    "DEFAULT_BASE_PORT",
    "JVM_OPTIONS",
    "JVM_OPTIONS_ENV",
    "KAFKA_VERSION",
    "NODE_IDS",
    "PLAINTEXT",
    "PRINCIPALS",
    "SASL_SSL",
    "SECRETS_MOUNT",
    "SECURITY_ENV",
    "SERVICE_PRINCIPALS",
    "ClusterError",
    "ClusterPorts",
    "ClusterSecrets",
    "ClusterStatus",
    "ComposeSecrets",
    "KafkaJars",
    "LocalCluster",
    "NodeStatus",
    "PartitionState",
    "PortInUseError",
    "PrerequisiteError",
    "UpResult",
    "broker_properties_file",
    "client_config_file",
    "compose_host",
    "compose_server_properties",
    "default_compose_secrets_dir",
    "default_runtime_dir",
    "default_secrets_dir",
    "ensure_compose_secrets",
    "ensure_secrets",
    "format_status",
    "free_base_port",
    "node_key_store_file",
    "partitions_of",
    "password_file",
    "pid_alive",
    "port_free",
    "read_cmdline",
    "requested_security",
    "scratch_cluster",
    "send_signal",
    "server_properties",
    "wait_gone",
]
