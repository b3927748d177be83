"""The local 3-broker KRaft cluster: `LocalCluster`, and what it reports."""

from taxi_kafka.cluster.config import DEFAULT_BASE_PORT, NODE_IDS, ClusterPorts
from taxi_kafka.cluster.errors import ClusterError, PortInUseError, PrerequisiteError
from taxi_kafka.cluster.jars import KAFKA_VERSION, KafkaJars
from taxi_kafka.cluster.local import LocalCluster, UpResult, default_runtime_dir
from taxi_kafka.cluster.scratch import free_base_port, scratch_cluster
from taxi_kafka.cluster.status import ClusterStatus, NodeStatus, PartitionState, format_status

__all__ = [
    "DEFAULT_BASE_PORT",
    "KAFKA_VERSION",
    "NODE_IDS",
    "ClusterError",
    "ClusterPorts",
    "ClusterStatus",
    "KafkaJars",
    "LocalCluster",
    "NodeStatus",
    "PartitionState",
    "PortInUseError",
    "PrerequisiteError",
    "UpResult",
    "default_runtime_dir",
    "format_status",
    "free_base_port",
    "scratch_cluster",
]
