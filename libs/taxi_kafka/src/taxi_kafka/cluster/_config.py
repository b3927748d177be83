"""Pure configuration of the local cluster: ports, server.properties, ids and JVM command lines."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taxi_kafka._pipeline import DEFAULT_PARTITIONS, MIN_INSYNC_REPLICAS, REPLICATION_FACTOR

HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 19092
# Moves the local cluster (and so the clients' default brokers) to other ports.
BASE_PORT_ENV = "TAXI_CLUSTER_BASE_PORT"
# Controllers listen this far above the brokers: 19092..19094 -> 19192..19194.
CONTROLLER_PORT_OFFSET = 100
NODE_IDS: tuple[int, ...] = (1, 2, 3)

# Broker settings beyond ports and paths. Every topic, Kafka's internal ones included, gets
# RF 3 / min ISR 2 so that any one broker may die without stalling anything.
BROKER_SETTINGS: Mapping[str, str] = {
    "default.replication.factor": str(REPLICATION_FACTOR),
    "min.insync.replicas": str(MIN_INSYNC_REPLICAS),
    "offsets.topic.replication.factor": str(REPLICATION_FACTOR),
    "transaction.state.log.replication.factor": str(REPLICATION_FACTOR),
    "transaction.state.log.min.isr": str(MIN_INSYNC_REPLICAS),
    # Kafka's internal topics default to 50 partitions each: 100 of a new cluster's 142. A
    # follower's fetch and its wait in the purgatory touch every partition it follows from that
    # leader: on 2 cores, 726 idle partitions more took the brokers' CPU per transaction from 68
    # to 120 ms (benchmarks/transaction_cost.py). With 6 each, p99 at 2,000 trips/s was 336-405
    # ms against 410-429 (docs/performance.md). Two per broker still spread the group and
    # transaction coordinators over all three. Takes effect when a cluster is first started.
    "offsets.topic.num.partitions": "6",
    "transaction.state.log.num.partitions": "6",
    "unclean.leader.election.enable": "false",
    "num.partitions": str(DEFAULT_PARTITIONS),
    # Topics are created on purpose, with checked settings (taxi_kafka._admin.ensure_topics).
    "auto.create.topics.enable": "false",
    # A lone consumer group member should not wait 3 s for company.
    "group.initial.rebalance.delay.ms": "0",
    # A SIGKILLed broker keeps its partition leaderships until the controller fences it, after
    # broker.session.timeout.ms. Killing a leader on a 2-core box stalled acks=all writes for
    # 6.6 s at 6000/1000 and 3.4 s at 4000/1000, about 2 s more when the node was also the
    # active controller (11.2 s with the defaults 9000/2000). On loopback, 4 s still leaves
    # three missed heartbeats of slack for a busy JVM.
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "1000",
    # A transactional producer that dies and never returns holds read_committed readers back
    # until its transaction.timeout.ms passes and the coordinator's next sweep aborts it. With
    # the default 10 s sweep, a 10 s transaction timeout blocked readers for 17.5 s; now 10.5 s.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    # A coordinator sends a transaction's markers to the partitions' leaders and waits this long
    # for a leader cut off by the network, even after it is fenced (+4 s) and its partitions have
    # new leaders; until the markers are written, that producer's next transaction gets only
    # CONCURRENT_TRANSACTIONS, and read_committed readers of the partitions wait. With the
    # default 30 s, a producer stalled for a whole 30 s partition (`taxi chaos partition-leader`,
    # 30.9 s without test trips). Also the coordinator's wait for its own log appends and the
    # replica fetchers' request timeout: both answer within a second here.
    "request.timeout.ms": "8000",
}

# Modest heaps: three brokers share a small machine with the pipeline's services.
JVM_OPTIONS: tuple[str, ...] = (
    # The quick JIT only. C2 compiling three fresh brokers took a whole core of two for minutes
    # (its threads' CPU time), all through a run started with the cluster. `taxi bench --only
    # passthrough,predictor,latency` on 2 cores, same commit: passthrough 138k -> 201k
    # records/s, predictor 52k -> 68k, p99 at 2,000 trips/s 1,118 -> 561 ms. Bigger machines
    # can put C2 back: TAXI_CLUSTER_JVM_OPTIONS=-XX:TieredStopAtLevel=4.
    "-XX:TieredStopAtLevel=1",
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-Djava.awt.headless=true",
)

# Short-lived tools start faster with the quick JIT and the simple collector: formatting three
# nodes at once took 2.1 s instead of 4.7 s on 2 cores.
TOOL_JVM_OPTIONS: tuple[str, ...] = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


@dataclass(frozen=True)
class ClusterPorts:
    """Broker N (1-based) listens on base + N - 1, its controller CONTROLLER_PORT_OFFSET higher,
    on 127.0.0.1, or with `hosts`, on the address of its own test host (hosts[N - 1])."""

    base: int = DEFAULT_BASE_PORT
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        highest = self.base + CONTROLLER_PORT_OFFSET + len(NODE_IDS) - 1
        if self.base < 1024 or highest > 65535:
            raise ValueError(f"base port {self.base} puts the cluster outside 1024..65535")
        if self.hosts and len(self.hosts) != len(NODE_IDS):
            raise ValueError(f"{len(self.hosts)} hosts for {len(NODE_IDS)} nodes")

    def host(self, node_id: int) -> str:
        return self.hosts[_index(node_id)] if self.hosts else HOST

    def broker(self, node_id: int) -> int:
        return self.base + _index(node_id)

    def controller(self, node_id: int) -> int:
        return self.base + CONTROLLER_PORT_OFFSET + _index(node_id)

    def of_node(self, node_id: int) -> tuple[int, int]:
        return self.broker(node_id), self.controller(node_id)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host(n)}:{self.broker(n)}" for n in NODE_IDS)

    @property
    def quorum_voters(self) -> str:
        return ",".join(f"{n}@{self.host(n)}:{self.controller(n)}" for n in NODE_IDS)


def _index(node_id: int) -> int:
    if node_id not in NODE_IDS:
        raise ValueError(f"no node {node_id}: the nodes are {', '.join(map(str, NODE_IDS))}")
    return node_id - NODE_IDS[0]


@dataclass(frozen=True)
class NodeSecurity:
    """What a node of the secure cluster needs: its PEM key store (key, then certificate
    chain), the CA its peers' certificates must chain to, and the nodes' own password."""

    key_store: Path
    ca_file: Path
    broker_principal: str
    broker_password: str
    # Principals besides the nodes' that the authorizer lets do anything.
    admins: tuple[str, ...] = ()


# The authorizer of KRaft clusters. No ACL, no access: every principal gets only its grants.
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM = "SCRAM-SHA-512"


def server_properties(
    node_id: int,
    ports: ClusterPorts,
    data_dir: Path,
    overrides: Mapping[str, str] | None = None,
    security: NodeSecurity | None = None,
) -> dict[str, str]:
    """The settings of one combined broker+controller node: PLAINTEXT, or with `security`,
    SASL_SSL everywhere and ACLs enforced."""
    broker, controller = ports.of_node(node_id)
    host = ports.host(node_id)
    listener = "SASL_SSL" if security else "PLAINTEXT"
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ports.quorum_voters,
        "listeners": f"{listener}://{host}:{broker},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"{listener}://{host}:{broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:{listener}",
        "log.dirs": str(data_dir),
        **BROKER_SETTINGS,
        **(secure_settings(security) if security else {}),
        **(overrides or {}),
    }


def secure_settings(security: NodeSecurity) -> dict[str, str]:
    """TLS on both listeners; SCRAM for clients and brokers, and PLAIN (under TLS) between
    controllers, since KRaft keeps SCRAM credentials in the metadata the controllers serve and
    so cannot check them on its own quorum's connections."""
    user, password = security.broker_principal, security.broker_password
    scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain_login = "org.apache.kafka.common.security.plain.PlainLoginModule"
    return {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.key_store),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(security.ca_file),
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            f'{scram_login} required username="{user}" password="{password}";'
        ),
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{plain_login} required username="{user}" password="{password}" '
            f'user_{user}="{password}";'
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{name}" for name in (user, *security.admins)),
    }


def render_properties(
    settings: Mapping[str, str],
    header: str = "Written by taxi_kafka.cluster; rewritten on every start of this node.",
) -> str:
    """Java properties text. Values here are ports, paths and numbers, but escape anyway."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n")

    lines = [f"# {header}"]
    lines += [f"{key}={escape(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, as Kafka's Uuid makes
    them (which also never starts with '-', so it cannot be mistaken for a flag)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class JavaLauncher:
    """Command lines running Kafka's main classes on a classpath, with our log4j2 config."""

    java: str
    jars_dir: Path
    log4j_config: Path

    def command(
        self,
        main_class: str,
        args: Sequence[str],
        log_file: Path,
        jvm_options: Sequence[str] = JVM_OPTIONS,
    ) -> list[str]:
        return [
            self.java,
            *jvm_options,
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            f"-Dtaxi.kafka.log={log_file}",
            "-cp",
            f"{self.jars_dir}/*",
            main_class,
            *args,
        ]

    def broker(
        self, properties: Path, log_file: Path, extra_options: Sequence[str] = ()
    ) -> list[str]:
        """`extra_options` go after JVM_OPTIONS, so they win where the two disagree."""
        return self.command(
            "kafka.Kafka", [str(properties)], log_file, (*JVM_OPTIONS, *extra_options)
        )

    def format_storage(
        self,
        properties: Path,
        cluster_id: str,
        log_file: Path,
        scram_passwords: Mapping[str, str] | None = None,
    ) -> list[str]:
        """`scram_passwords` (principal -> password) become the SCRAM credentials the cluster
        starts with: KRaft's brokers need theirs before any client could add it."""
        args = ["format", "-t", cluster_id, "-c", str(properties)]
        for name, password in (scram_passwords or {}).items():
            args += ["--add-scram", f"{SCRAM}=[name={name},password={password}]"]
        return self.command("kafka.tools.StorageTool", args, log_file, TOOL_JVM_OPTIONS)
