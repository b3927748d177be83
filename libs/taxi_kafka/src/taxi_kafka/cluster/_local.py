"""LocalCluster: three combined broker+controller KRaft nodes on 127.0.0.1, one JVM each."""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from taxi_kafka import _admin as topic_admin

# A module, not its names: taxi_kafka._config imports this package (circular).
from taxi_kafka import _config as client_config
from taxi_kafka._acls import ensure_grants, pipeline_grants
from taxi_kafka._admin import NotReadyError
from taxi_kafka._pipeline import INTERNAL_TOPICS, PROJECT_TOPICS, TopicSpec
from taxi_kafka._retry import RetryPolicy
from taxi_kafka.cluster import _procs as procs
from taxi_kafka.cluster._config import (
    BASE_PORT_ENV,
    NODE_IDS,
    ClusterPorts,
    JavaLauncher,
    NodeSecurity,
    new_cluster_id,
    render_properties,
    server_properties,
)
from taxi_kafka.cluster._errors import ClusterError, PortInUseError
from taxi_kafka.cluster._jars import KAFKA_VERSION, KafkaJars, ensure_jars, find_java
from taxi_kafka.cluster._netns import HostNetwork
from taxi_kafka.cluster._secrets import (
    ADMIN_PRINCIPAL,
    BROKER_PRINCIPAL,
    ClusterSecrets,
    ensure_secrets,
    write_private,
)
from taxi_kafka.cluster._status import (
    ClusterStatus,
    NodeStatus,
    PartitionState,
    controller_from_quorum_states,
    partitions_of,
)

log = logging.getLogger(__name__)

RUNTIME_DIR_ENV = "TAXI_RUNTIME_DIR"
JARS_DIR_ENV = "TAXI_CLUSTER_JARS_DIR"
KAFKA_HOME_ENV = "KAFKA_HOME"
# More options for the brokers' JVMs, shell-quoted; say, the quick JIT for clusters that live
# for seconds (the test plugin uses it).
JVM_OPTIONS_ENV = "TAXI_CLUSTER_JVM_OPTIONS"
# `sasl_ssl` makes `taxi cluster up` start the secure cluster, as --secure does.
SECURITY_ENV = "TAXI_CLUSTER_SECURITY"
PLAINTEXT, SASL_SSL = "plaintext", "sasl_ssl"

# What the cluster creates in its runtime directory; `down --purge` deletes only these.
CLUSTER_FILE = "cluster.json"
LOG4J_CONFIG = "log4j2.xml"
_NODE_DIR = "node-{}"
_LOG_TAIL = 25


def find_workspace_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` whose pyproject.toml declares a uv workspace."""
    for directory in (start, *start.parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text():
            return directory
    return None


def _taxi_dir(env: Mapping[str, str], cwd: Path | None) -> Path:
    if env.get(RUNTIME_DIR_ENV):
        return Path(env[RUNTIME_DIR_ENV])
    here = cwd or Path.cwd()
    return (find_workspace_root(here) or here) / ".taxi"


def default_runtime_dir(env: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path:
    """$TAXI_RUNTIME_DIR/cluster, else <workspace root>/.taxi/cluster (git-ignored)."""
    return _taxi_dir(env, cwd) / "cluster"


def default_secrets_dir(env: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path:
    """$TAXI_RUNTIME_DIR/secrets, else <workspace root>/.taxi/secrets: the secure cluster's CA,
    certificates and passwords, and each principal's client config."""
    return _taxi_dir(env, cwd) / "secrets"


def requested_security(secure: bool, env: Mapping[str, str] = os.environ) -> str | None:
    """SASL_SSL when --secure or TAXI_CLUSTER_SECURITY=sasl_ssl asks for it, else None: what
    the cluster was made with."""
    value = env.get(SECURITY_ENV, "").strip().lower()
    if value not in ("", PLAINTEXT, SASL_SSL):
        raise ClusterError(f"{SECURITY_ENV}={value!r}: expected {PLAINTEXT} or {SASL_SSL}")
    return SASL_SSL if secure else (value or None)


@dataclass(frozen=True)
class UpResult:
    started: tuple[int, ...]
    created_topics: tuple[str, ...]
    seconds: float

    @property
    def already_running(self) -> bool:
        return not self.started


def _polling(timeout: float) -> RetryPolicy:
    """Polls for brokers coming up: frequent at first, at most once a second."""
    return RetryPolicy(
        initial=0.2, multiplier=1.5, max_delay=1.0, deadline=max(timeout, 0.0), jitter=0.1
    )


class LocalCluster:
    """The local 3-node cluster whose config, data, logs and pids live in `runtime_dir`.

    Arguments left as None come from the environment: TAXI_RUNTIME_DIR, TAXI_CLUSTER_BASE_PORT,
    TAXI_CLUSTER_JARS_DIR and KAFKA_HOME; TAXI_CLUSTER_JVM_OPTIONS adds options to the brokers'
    JVMs. An existing runtime directory remembers its ports.
    """

    def __init__(
        self,
        runtime_dir: Path | None = None,
        *,
        base_port: int | None = None,
        version: str = KAFKA_VERSION,
        jars_dir: Path | None = None,
        kafka_home: Path | None = None,
        topics: Sequence[TopicSpec] = PROJECT_TOPICS,
        broker_overrides: Mapping[str, str] | None = None,
        security: str | None = None,
        secrets_dir: Path | None = None,
        network: HostNetwork | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        """With `network`, each node runs on a test host of its own (node-1, node-2, node-3),
        made here, where the network can cut it off (a scratch cluster's --hosts mode)."""
        self.runtime_dir = (runtime_dir or default_runtime_dir(env)).absolute()
        # Beside the default runtime dir, as .taxi/secrets; inside any other (a scratch one).
        default = self.runtime_dir == default_runtime_dir(env).absolute()
        beside = default_secrets_dir(env) if default else self.runtime_dir / "secrets"
        self.secrets_dir = (secrets_dir or beside).absolute()
        self.version = version
        self.topics = tuple(topics)
        self.broker_overrides = dict(broker_overrides or {})
        self.jvm_options = tuple(shlex.split(env.get(JVM_OPTIONS_ENV, "")))
        self._jars_dir = jars_dir or (Path(env[JARS_DIR_ENV]) if env.get(JARS_DIR_ENV) else None)
        self._kafka_home = kafka_home or (
            Path(env[KAFKA_HOME_ENV]) if env.get(KAFKA_HOME_ENV) else None
        )
        record = self._recorded()
        recorded = record.get("base_port")
        requested = base_port or (int(env[BASE_PORT_ENV]) if env.get(BASE_PORT_ENV) else None)
        if recorded and requested and recorded != requested:
            raise ClusterError(
                f"the cluster in {self.runtime_dir} uses base port {recorded}, not {requested}; "
                f"use --base-port {recorded}, or remove it first with `taxi cluster down --purge`"
            )
        self.network = network
        hosts = tuple(network.add_host(node_host(n)) for n in NODE_IDS) if network else ()
        self.ports = ClusterPorts(requested or recorded or ClusterPorts().base, hosts)
        # A cluster keeps the security it was made with: its storage holds the credentials.
        # Recorded before secure clusters existed: PLAINTEXT.
        made_with = record.get("security") or (PLAINTEXT if record else None)
        if made_with and security and made_with != security:
            raise ClusterError(
                f"the cluster in {self.runtime_dir} was made {_describe(made_with)}, not "
                f"{_describe(security)}; remove it first with `taxi cluster down --purge`"
            )
        self.security = security or made_with or PLAINTEXT
        if network and self.secure:
            # The nodes' certificates name 127.0.0.1 only.
            raise ClusterError("test hosts run PLAINTEXT clusters only")
        self._secrets: ClusterSecrets | None = None
        self._jars: KafkaJars | None = None
        self._java: str | None = None
        self._admin: AdminClient | None = None

    # -- paths -------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return self.ports.bootstrap_servers

    def node_dir(self, node_id: int) -> Path:
        self.ports.broker(node_id)  # validates the id
        return self.runtime_dir / _NODE_DIR.format(node_id)

    def log_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.log"

    def _data_dir(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "data"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "pid"

    def _properties(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def _console_file(self, node_id: int) -> Path:
        # What the JVM itself prints (crashes, class-path trouble) before log4j takes over.
        return self.node_dir(node_id) / "kafka.out"

    def _recorded(self) -> dict[str, Any]:
        try:
            recorded: dict[str, Any] = json.loads((self.runtime_dir / CLUSTER_FILE).read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ClusterError(f"{self.runtime_dir / CLUSTER_FILE} is unreadable: {exc}") from exc
        return recorded

    @property
    def secure(self) -> bool:
        return self.security == SASL_SSL

    def secrets(self) -> ClusterSecrets:
        """The secure cluster's CA, certificates and passwords, made on first use."""
        if not self.secure:
            raise ClusterError(f"the cluster in {self.runtime_dir} is not a secure one")
        if self._secrets is None:
            self._secrets = ensure_secrets(self.secrets_dir, NODE_IDS)
        return self._secrets

    def client_settings(self, principal: str = ADMIN_PRINCIPAL) -> dict[str, str]:
        """librdkafka settings that reach the cluster, as `principal` when it is secure."""
        secured = self.secrets().client_settings(principal) if self.secure else {}
        return {"bootstrap.servers": self.bootstrap_servers, **secured}

    def kafka_config(self, principal: str = ADMIN_PRINCIPAL) -> client_config.KafkaConfig:
        """client_settings as a KafkaConfig."""
        settings = self.client_settings(principal)
        return client_config.KafkaConfig(settings.pop("bootstrap.servers"), settings)

    def service_env(self, principal: str) -> dict[str, str]:
        """What a service process needs in its environment to reach the cluster: the brokers
        and, when it is secure, the file of `principal`'s client config (its credentials stay
        off the command line and out of the environment)."""
        env = {client_config.BOOTSTRAP_ENV: self.bootstrap_servers}
        if self.secure:
            env[client_config.CONFIG_FILE_ENV] = str(self.secrets().client_config(principal))
        return env

    def _node_security(self, node_id: int) -> NodeSecurity | None:
        if not self.secure:
            return None
        found = self.secrets()
        return NodeSecurity(
            key_store=found.node_key_store(node_id),
            ca_file=found.ca_file,
            broker_principal=BROKER_PRINCIPAL,
            broker_password=found.passwords[BROKER_PRINCIPAL],
            admins=(ADMIN_PRINCIPAL,),
        )

    def _formatted(self, node_id: int) -> bool:
        return (self._data_dir(node_id) / "meta.properties").exists()

    # -- prerequisites ----------------------------------------------------------------------

    def ensure_jars(self) -> KafkaJars:
        """The broker jars, fetched from Maven Central the first time (needs mvn)."""
        if self._jars is None:
            self._jars = ensure_jars(self.version, self._jars_dir, self._kafka_home)
        return self._jars

    def ensure_java(self) -> str:
        """The java executable, checked to be Java 17+."""
        if self._java is None:
            self._java = find_java()
        return self._java

    # -- processes ---------------------------------------------------------------------------

    def pid(self, node_id: int) -> int | None:
        """The pid of the node's running JVM. A pid file naming a process that is gone, or that
        is not this node, is stale: it is removed, with a message. A node running without a pid
        file (deleted, or never written) is found by its command line and recorded again."""
        pid_file, properties = self._pid_file(node_id), self._properties(node_id)
        pid = procs.read_pid(pid_file)
        if pid is not None and procs.pid_alive(pid):
            argv = procs.read_cmdline(pid)
            # No command line: a JVM mid-exec shows none for a moment; give it the benefit.
            if argv is None or procs.is_kafka_node(argv, properties):
                return pid
            stale = f"pid {pid} is not this Kafka node but {' '.join(argv)[:120]}"
        else:
            stale = f"pid {pid} has exited" if pid is not None else "it is unreadable"
        if pid_file.exists():
            log.warning("node %d: removing stale pid file %s: %s", node_id, pid_file, stale)
            pid_file.unlink()
        found = procs.find_kafka_node(properties)
        if found is not None and pid_file.parent.is_dir():
            log.warning("node %d runs as pid %d without a pid file; recording it", node_id, found)
            pid_file.write_text(f"{found}\n")
        return found

    def _check_ports(self, node_id: int) -> None:
        if self.network:
            return  # a test host is a fresh namespace: its ports are free
        for role, port in zip(("broker", "controller"), self.ports.of_node(node_id), strict=True):
            if not procs.port_free(port):
                owner = procs.port_owner(port) or "a process this user cannot see"
                raise PortInUseError(
                    f"port {port} (node {node_id} {role}) is already in use by {owner}. Stop it, "
                    "or move the cluster with --base-port / TAXI_CLUSTER_BASE_PORT."
                )

    def _prepare(self, node_id: int) -> None:
        """Write the node's server.properties (from the current code, so upgrades apply)."""
        self.node_dir(node_id).mkdir(parents=True, exist_ok=True)
        settings = server_properties(
            node_id,
            self.ports,
            self._data_dir(node_id),
            self.broker_overrides,
            self._node_security(node_id),
        )
        # Private: a secure node's holds the nodes' password.
        write_private(self._properties(node_id), render_properties(settings))

    def _log4j_config(self) -> Path:
        target = self.runtime_dir / LOG4J_CONFIG
        source = importlib.resources.files("taxi_kafka.cluster").joinpath(LOG4J_CONFIG)
        target.write_bytes(source.read_bytes())
        return target

    def _launcher(self) -> JavaLauncher:
        return JavaLauncher(self.ensure_java(), self.ensure_jars().directory, self._log4j_config())

    def _format(self, node_ids: Sequence[int], cluster_id: str) -> None:
        """Format the nodes' storage, all at once (each is a JVM start of its own)."""
        launcher = self._launcher()
        # The SCRAM credentials go into the metadata log as it is made (KRaft has nowhere else
        # to keep them before the brokers, which need theirs, are up).
        passwords = self.secrets().passwords if self.secure else None
        runs = {
            n: subprocess.Popen(
                launcher.format_storage(
                    self._properties(n), cluster_id, self.log_file(n), passwords
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for n in node_ids
        }
        for node_id, run in runs.items():
            output, _ = run.communicate()
            if run.returncode != 0:
                raise ClusterError(f"formatting node {node_id} failed:\n{output.strip()}")
            log.debug("node %d: %s", node_id, output.strip())

    def _start(self, node_ids: Sequence[int]) -> None:
        """Start the nodes (formatting any that has no storage yet), without waiting."""
        # The cheap checks first, and all before anything is written.
        for node_id in node_ids:
            self._check_ports(node_id)
        self.ensure_java()
        jars = self.ensure_jars()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = self._recorded().get("cluster_id") or new_cluster_id()
        self._write_record(cluster_id, jars)
        for node_id in node_ids:
            self._prepare(node_id)
        unformatted = [n for n in node_ids if not self._formatted(n)]
        if unformatted:
            log.info("formatting storage of node(s) %s", ", ".join(map(str, unformatted)))
            self._format(unformatted, cluster_id)
        launcher = self._launcher()
        for node_id in node_ids:
            command = launcher.broker(
                self._properties(node_id), self.log_file(node_id), self.jvm_options
            )
            pid = procs.start_detached(
                command,
                self.node_dir(node_id),
                self._console_file(node_id),
                self.network.preexec(node_host(node_id)) if self.network else None,
            )
            self._pid_file(node_id).write_text(f"{pid}\n")
            log.info("node %d started: pid %d, log %s", node_id, pid, self.log_file(node_id))

    def _write_record(self, cluster_id: str, jars: KafkaJars) -> None:
        record = {
            "cluster_id": cluster_id,
            "kafka_version": jars.version,
            "jars_dir": str(jars.directory),
            "base_port": self.ports.base,
            "hosts": {str(n): self.ports.host(n) for n in NODE_IDS},
            "bootstrap_servers": self.bootstrap_servers,
            "brokers": {str(n): self.ports.broker(n) for n in NODE_IDS},
            "controllers": {str(n): self.ports.controller(n) for n in NODE_IDS},
            "security": self.security,
        }
        (self.runtime_dir / CLUSTER_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def _stop(self, node_ids: Sequence[int], sig: signal.Signals, timeout: float) -> list[int]:
        """Signal the running ones among the nodes and wait for them to exit (SIGKILL after
        `timeout`). Returns the nodes that were running."""
        pids = {n: pid for n in node_ids if (pid := self.pid(n)) is not None}
        for pid in pids.values():
            procs.send_signal(pid, sig)
        stuck = procs.wait_gone(list(pids.values()), timeout)
        for node_id, pid in pids.items():
            if pid in stuck:
                log.warning(
                    "node %d (pid %d) ignored %s for %.0f s; killing it",
                    node_id,
                    pid,
                    sig.name,
                    timeout,
                )
                procs.send_signal(pid, signal.SIGKILL)
        procs.wait_gone(stuck, 10.0)
        for node_id in pids:
            self._pid_file(node_id).unlink(missing_ok=True)
        return list(pids)

    def _raise_if_died(self, node_ids: Sequence[int]) -> None:
        for node_id in node_ids:
            if self.pid(node_id) is None:
                raise ClusterError(
                    f"node {node_id} exited while starting. The end of its logs:\n"
                    + self._log_tail(node_id)
                )

    def _log_tail(self, node_id: int) -> str:
        lines: list[str] = []
        for path in (self._console_file(node_id), self.log_file(node_id)):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-_LOG_TAIL:]
                lines += [f"--- {path}", *text]
        return "\n".join(lines) or "(no log written)"

    # -- metadata ----------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        """An AdminClient for the cluster, kept for reuse."""
        if self._admin is None:
            # Reconnect quickly: brokers here come back within seconds, not minutes.
            settings = self.client_settings()
            self._admin = topic_admin.admin_client(
                settings.pop("bootstrap.servers"), **settings, **{"reconnect.backoff.max.ms": 1000}
            )
        return self._admin

    def _serving(self, node_id: int) -> bool:
        """Whether the node's broker answers. Kafka opens the broker port only once the broker
        is registered and unfenced, so an open port also tells a restarted node from a killed
        incarnation that the controller has not fenced yet."""
        return procs.port_open(self.ports.broker(node_id), self.ports.host(node_id))

    def _wait_serving(self, node_ids: Sequence[int], timeout: float) -> None:
        def check() -> None:
            self._raise_if_died(node_ids)
            waiting = [n for n in node_ids if not self._serving(n)]
            if waiting:
                raise NotReadyError(f"node(s) {', '.join(map(str, waiting))} not serving yet")

        try:
            _polling(timeout).call(check, retry_on=(NotReadyError,), what="wait for brokers")
        except NotReadyError as exc:
            raise ClusterError(
                f"{exc} after {timeout:.0f} s. A node needs a majority of the controllers "
                f"(2 of 3) running; see the logs in {self.runtime_dir}/node-*/kafka.log"
            ) from exc

    def status(self, timeout: float = 5.0) -> ClusterStatus:
        """Each node's process, port and registration; partitions; the active controller."""
        pids = {n: self.pid(n) for n in NODE_IDS}
        metadata: ClusterMetadata | None = None
        error = None
        if any(pids.values()):
            try:
                metadata = self.admin().list_topics(timeout=timeout)
            except KafkaException as exc:
                error = str(exc.args[0].str() if exc.args else exc)
        else:
            error = "no node is running"
        quorum_states = {}
        for node_id, pid in pids.items():
            state_file = self._data_dir(node_id) / "__cluster_metadata-0" / "quorum-state"
            if pid is not None and state_file.exists():
                quorum_states[node_id] = state_file.read_text()
        controller, epoch = controller_from_quorum_states(quorum_states)
        recorded = self._recorded()
        return ClusterStatus(
            runtime_dir=str(self.runtime_dir),
            cluster_id=recorded.get("cluster_id"),
            kafka_version=recorded.get("kafka_version"),
            bootstrap_servers=self.bootstrap_servers,
            security=self.security,
            secrets_dir=str(self.secrets_dir) if self.secure else None,
            nodes=tuple(
                NodeStatus(
                    node_id=n,
                    broker_port=self.ports.broker(n),
                    controller_port=self.ports.controller(n),
                    pid=pids[n],
                    port_open=procs.port_open(self.ports.broker(n), self.ports.host(n)),
                    registered=metadata is not None and n in metadata.brokers,
                )
                for n in NODE_IDS
            ),
            controller=controller,
            controller_epoch=epoch,
            partitions=partitions_of(metadata) if metadata is not None else (),
            metadata_error=error,
        )

    def wait_healthy(self, timeout: float = 60.0) -> ClusterStatus:
        """Wait until all nodes are up and no partition is under-replicated or offline."""

        def check() -> ClusterStatus:
            status = self.status()
            if not status.healthy:
                raise NotReadyError(
                    f"{sum(n.state == 'up' for n in status.nodes)} of {len(NODE_IDS)} nodes up, "
                    f"{len(status.under_replicated)} under-replicated and "
                    f"{len(status.offline)} offline partitions"
                    + (f", metadata: {status.metadata_error}" if status.metadata_error else "")
                )
            return status

        try:
            return _polling(timeout).call(check, retry_on=(NotReadyError,), what="wait healthy")
        except NotReadyError as exc:
            raise ClusterError(f"cluster not healthy after {timeout:.0f} s: {exc}") from exc

    def wait_in_sync(self, timeout: float = 60.0) -> None:
        """Wait until each broker, asked on its own, sees every partition led and fully in
        sync, with the same leaders as the others. A broker back from a network partition
        answers from what it knew before the cut until it catches up (it was fenced without
        knowing it), so `status()`, asking any one broker, can be told a stale story."""
        settings = self.client_settings()
        settings.pop("bootstrap.servers")

        def views() -> dict[int, tuple[PartitionState, ...]]:
            seen = {}
            for node in NODE_IDS:
                # A client that knows only this broker asks it for the metadata.
                address = f"{self.ports.host(node)}:{self.ports.broker(node)}"
                client = topic_admin.admin_client(address, **settings)
                try:
                    seen[node] = partitions_of(client.list_topics(timeout=5))
                except KafkaException as exc:
                    raise NotReadyError(f"broker {node}: {exc}") from exc
            return seen

        def check() -> None:
            seen = views()
            lagging = {
                node: sum(1 for p in view if p.offline or p.under_replicated)
                for node, view in seen.items()
            }
            if any(lagging.values()):
                raise NotReadyError(
                    "partitions not led or not fully in sync, as each broker sees them: "
                    + ", ".join(f"broker {n}: {count}" for n, count in lagging.items())
                )
            if (
                len({frozenset((p.topic, p.partition, p.leader) for p in v) for v in seen.values()})
                > 1
            ):
                raise NotReadyError("the brokers disagree on the partitions' leaders")

        try:
            _polling(timeout).call(check, retry_on=(NotReadyError,), what="wait in sync")
        except NotReadyError as exc:
            raise ClusterError(f"cluster not in sync after {timeout:.0f} s: {exc}") from exc

    def leader_of_most_partitions(
        self, topics: Sequence[str] | None = None, timeout: float = 30.0
    ) -> int:
        """The broker leading the most partitions of `topics` (default: all non-internal).
        Waits for leaders to show in the metadata: a new topic's take a moment."""

        def check() -> int:
            counts = self.status().leader_counts(topics)
            if not counts:
                raise NotReadyError(
                    "no partition has a leader" + (f" in {topics}" if topics else "")
                )
            return counts.most_common(1)[0][0]

        try:
            return _polling(timeout).call(check, retry_on=(NotReadyError,), what="find leaders")
        except NotReadyError as exc:
            raise ClusterError(f"{exc} after {timeout:.0f} s") from exc

    # -- the commands ------------------------------------------------------------------------

    def up(self, timeout: float = 180.0) -> UpResult:
        """Start whatever nodes are not running, ensure the project topics and Kafka's internal
        topics, and wait until the cluster is healthy. Running nodes are left alone."""
        started_at = time.monotonic()
        deadline = started_at + timeout
        to_start = [n for n in NODE_IDS if self.pid(n) is None]
        if to_start:
            self._start(to_start)
            self._wait_serving(list(NODE_IDS), deadline - time.monotonic())
        else:
            log.info("the cluster in %s is already running; checking its health", self.runtime_dir)
        admin = self.admin()
        created = topic_admin.ensure_topics(admin, self.topics)
        topic_admin.create_internal_topics(self.client_settings())
        if self.secure:
            granted = ensure_grants(admin, pipeline_grants())
            log.info("ACLs: %d grants to the services' principals", granted)
        problems = topic_admin.internal_topic_problems(
            topic_admin.topic_states(admin, INTERNAL_TOPICS)
        )
        for problem in problems:
            log.warning("internal topic: %s (it was created with other settings)", problem)
        self.wait_healthy(deadline - time.monotonic())
        return UpResult(tuple(to_start), tuple(created), time.monotonic() - started_at)

    def down(self, timeout: float = 30.0, purge: bool = False) -> list[int]:
        """Stop all nodes (SIGTERM, SIGKILL after `timeout`); `purge` also deletes their data,
        logs and config. Returns the nodes that were running."""
        stopped = self._stop(list(NODE_IDS), signal.SIGTERM, timeout)
        if purge:
            for node_id in NODE_IDS:
                shutil.rmtree(self.node_dir(node_id), ignore_errors=True)
            for name in (CLUSTER_FILE, LOG4J_CONFIG):
                (self.runtime_dir / name).unlink(missing_ok=True)
            if self.runtime_dir.exists() and not any(self.runtime_dir.iterdir()):
                self.runtime_dir.rmdir()
        return stopped

    def stop_broker(self, node_id: int, timeout: float = 30.0) -> bool:
        """Stop one node cleanly (SIGTERM: it hands its leaderships over first)."""
        return bool(self._stop([node_id], signal.SIGTERM, timeout))

    def kill_broker(self, node_id: int) -> bool:
        """SIGKILL one node: a crash, leaderships stay until the controller fences it."""
        return bool(self._stop([node_id], signal.SIGKILL, 10.0))

    def start_broker(self, node_id: int, timeout: float = 60.0) -> bool:
        """Bring a stopped node back on its existing data and wait until it serves.
        Returns False when it was running already."""
        if self.pid(node_id) is not None:
            return False
        if not self._formatted(node_id):
            raise ClusterError(
                f"node {node_id} has no data in {self._data_dir(node_id)}; "
                "create the cluster with `taxi cluster up`"
            )
        self._start([node_id])
        self._wait_serving([node_id], timeout)
        return True


def node_host(node_id: int) -> str:
    """The name of node `node_id`'s test host."""
    return f"node-{node_id}"


def _describe(security: str) -> str:
    return "secure (SASL_SSL)" if security == SASL_SSL else "without security (PLAINTEXT)"
