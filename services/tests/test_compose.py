"""docker-compose.yml, the Dockerfile and .dockerignore, checked against the local
configuration without Docker.

The brokers must carry the local cluster's settings (taxi_kafka.cluster.BROKER_SETTINGS), every
client must list all three brokers, every service's command line must parse as its console
script parses it (ports and instance names as taxi_kafka says), and every file mounted into a
container must exist. Every port is published on the host's loopback only, behind a server told
to listen on all of its container's interfaces, and no password is written in the file. Where
the docker compose plugin is installed, `docker compose config` validates the file as well.

docker-compose.secure.yml is checked merged onto it, as compose merges the two, against the
secrets `taxi cluster compose-secrets` writes: SASL_SSL only, the local secure cluster's broker
settings, each service its own principal's credentials and no one else's, the topics job
granting the ACLs, no password in either file; and Kafka's own storage formatter reads a
generated broker config (marked kafka: it needs the local Kafka jars and Java).
"""

from __future__ import annotations

import base64
import importlib
import importlib.resources
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509

from taxi_kafka import (
    COMPOSE_INSTANCE,
    DASHBOARD_PORT,
    METRICS_PORTS,
    MIN_INSYNC_REPLICAS,
    PROJECT_TOPICS,
    PROMETHEUS_PORT,
    REPLICATION_FACTOR,
    KafkaConfig,
    project_topics,
)
from taxi_kafka.cli import read_config_file
from taxi_kafka.cluster import (
    ADMIN_PRINCIPAL,
    BROKER_SETTINGS,
    COMPOSE_EXTERNAL_PORTS,
    JVM_OPTIONS,
    KAFKA_VERSION,
    NODE_IDS,
    PRINCIPALS,
    SECRETS_MOUNT,
    ClusterPorts,
    LocalCluster,
    broker_properties_file,
    client_config_file,
    compose_host,
    default_compose_secrets_dir,
    node_key_store_file,
    password_file,
    server_properties,
)
from taxi_kafka.cluster._config import JavaLauncher, NodeSecurity, render_properties
from taxi_kafka.cluster._secrets import CA_FILE
from taxi_model import DEFAULT_MODEL_PATH
from taxi_services.commands.cluster import cluster
from taxi_services.commands.model import DEFAULT_TRAIN_DATA

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SECURE_COMPOSE_FILE = REPO / "docker-compose.secure.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PROMETHEUS_CONFIG = REPO / "observability" / "prometheus.compose.yml"
SCRIPT_SOURCES = (REPO / "services" / "pyproject.toml", REPO / "dashboard" / "pyproject.toml")

TAXI_IMAGE = "ml-taxi:local"
BROKERS = {f"kafka-{node}": node for node in NODE_IDS}
KAFKA_CLIENTS = {
    "topics",
    "publish-model",
    "producer-train",
    "producer-test",
    "predictor",
    "aggregator",
    "trainer",
    "dashboard",
}
PRODUCERS = {"producer-train": "train", "producer-test": "test"}
LONG_RUNNING = {"predictor", "aggregator", "trainer", "dashboard"}
ONE_SHOT = {"topics", "train-model", "publish-model"}
EXPECTED_SERVICES = {*BROKERS, *KAFKA_CLIENTS, "train-model", "prometheus", "grafana"}
GRAFANA_PORT = 3000
LOOPBACK = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"

# Variables the apache/kafka image reads itself instead of writing them to server.properties.
IMAGE_VARIABLES = {
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
}
# `taxi`'s entry point is a plain function that runs this group with auto_envvar_prefix="TAXI".
GROUPS = {"taxi": ("taxi_services.cli:cli", "TAXI")}

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<kind>:[-?])(?P<argument>[^}]*))?\}")


def substitute(match: re.Match[str]) -> str:
    """An unset variable's value: its default, or for a required one (${NAME:?error}, which
    compose refuses to run without) a stand-in, <NAME>."""
    if match["kind"] == ":?":
        return f"<{match['name']}>"
    return match["argument"] or ""


def interpolate(node: Any) -> Any:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, as when only the required
    variables are set; $$ is a literal $ (a shell's, in a container's command)."""
    if isinstance(node, str):
        parts = [_VARIABLE.sub(substitute, part) for part in node.split("$$")]
        assert not any("$" in p for p in parts), f"interpolation not understood: {node!r}"
        return "$".join(parts)
    if isinstance(node, dict):
        return {key: interpolate(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value) for value in node]
    return node


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: str(value) for name, value in env.items()}


def property_name(variable: str) -> str:
    """The server.properties name of a KAFKA_ variable, as the apache/kafka image reads it:
    '___' stands for '-', '__' for '_' and '_' for '.'."""
    parts = variable.removeprefix("KAFKA_").lower().split("___")
    return "-".join(".".join(p.replace("__", "\0").split("_")).replace("\0", "_") for p in parts)


def broker_properties(service: Mapping[str, Any]) -> dict[str, str]:
    return {
        property_name(name): value
        for name, value in environment(service).items()
        if name.startswith("KAFKA_") and name not in IMAGE_VARIABLES
    }


def listeners(value: str) -> dict[str, tuple[str, str]]:
    """'PLAINTEXT://kafka-1:9092,CONTROLLER://:9093' -> {name: (host, port)}."""
    parsed = {}
    for listener in value.split(","):
        name, _, address = listener.partition("://")
        host, _, port = address.rpartition(":")
        parsed[name] = (host, port)
    return parsed


def published(service: Mapping[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of the service's short-syntax ports; the
    address is "" where the entry names none (every interface of the host)."""
    found = {}
    for entry in service.get("ports", []):
        *address, host_port, container_port = str(entry).split(":")
        found[int(container_port)] = (":".join(address), int(host_port))
    return found


def mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) of the service's short-syntax volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode == ["ro"])
    return found


def console_scripts() -> dict[str, tuple[str, Path]]:
    """Script name -> (entry point, the pyproject.toml that defines it)."""
    scripts = {}
    for path in SCRIPT_SOURCES:
        for name, target in (
            tomllib.loads(path.read_text()).get("project", {}).get("scripts", {}).items()
        ):
            scripts[name] = (target, path)
    return scripts


def parse_command(argv: list[str], target: str) -> dict[str, Any]:
    """What the console script `argv[0]` (entry point `target`) makes of `argv` and the
    environment: its command path, parameters and where each came from. Nothing runs."""
    info_name, *args = argv
    target, prefix = GROUPS.get(info_name, (target, None))
    module, attribute = target.split(":")
    command = getattr(importlib.import_module(module), attribute)
    parent = None
    try:
        while isinstance(command, click.Group):
            parent = click.Context(
                command, info_name=info_name, parent=parent, auto_envvar_prefix=prefix
            )
            info_name, *args = args
            sub = command.get_command(parent, info_name)
            if sub is None:
                return {"error": f"{parent.command_path} has no command {info_name}"}
            command, prefix = sub, None
        ctx = command.make_context(info_name, args, parent=parent, auto_envvar_prefix=prefix)
    except click.ClickException as exc:
        return {"error": exc.format_message()}
    return {
        "command_path": ctx.command_path,
        "params": json.loads(json.dumps(ctx.params, default=str)),
        "sources": {name: ctx.get_parameter_source(name).name for name in ctx.params},
    }


def _parse_requests() -> None:
    """The subprocess side of `parsed`: JSON requests on stdin, results on stdout."""
    results = {}
    for request in json.load(sys.stdin):
        for variable in [v for v in os.environ if v.startswith(("TAXI_", "KAFKA_"))]:
            del os.environ[variable]
        os.environ.update(request["environment"])
        results[request["service"]] = parse_command(request["command"], request["target"])
    json.dump(results, sys.stdout)


@pytest.fixture(scope="module")
def parsed(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return parse_services(services)


def parse_services(services: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each of our services' command line and environment as its console script parses them.

    The scripts of one distribution are parsed in a fresh interpreter: each package registers
    Prometheus metrics on import, and the services' and the dashboard's share names (on purpose:
    they are separate processes), so they cannot be imported into one process.
    """
    scripts = console_scripts()
    requests: dict[Path, list[dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, service in services.items():
        if service.get("image") != TAXI_IMAGE:
            continue
        script = service["command"][0]
        if script not in scripts:
            sources = ", ".join(str(p.relative_to(REPO)) for p in SCRIPT_SOURCES)
            results[name] = {"error": f"{script} is in no [project.scripts] of {sources}"}
            continue
        target, source = scripts[script]
        requests.setdefault(source, []).append(
            {
                "service": name,
                "command": service["command"],
                "target": target,
                "environment": environment(service),
            }
        )
    for batch in requests.values():
        done = subprocess.run(
            [sys.executable, __file__],
            input=json.dumps(batch),
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        results |= json.loads(done.stdout)
    return results


@pytest.fixture
def parse(parsed: dict[str, dict[str, Any]]) -> Any:
    """parse(name): the service's parsed command; fails the test if it does not parse."""

    def parse_service(name: str) -> dict[str, Any]:
        result = parsed[name]
        assert "error" not in result, f"{name}: {result['error']}"
        return result

    return parse_service


def test_every_expected_service_is_there(services):
    assert set(services) == EXPECTED_SERVICES


@pytest.mark.parametrize(("name", "node_id"), BROKERS.items())
def test_each_broker_has_the_local_clusters_settings(services, name, node_id):
    service = services[name]
    assert service["image"] == f"apache/kafka:{KAFKA_VERSION}"
    props = broker_properties(service)
    local = server_properties(node_id, ClusterPorts(), Path("unused"))
    shared = [*BROKER_SETTINGS, "process.roles", "node.id"]
    shared += ["controller.listener.names", "inter.broker.listener.name"]
    wrong = {key: (props.get(key), local[key]) for key in shared if props.get(key) != local[key]}
    assert not wrong, f"{name}: setting: (compose, local) = {wrong}"
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    local_protocols = dict(p.split(":") for p in local["listener.security.protocol.map"].split(","))
    assert local_protocols.items() <= protocols.items()
    assert set(listeners(props["listeners"])) <= set(protocols)


def test_the_brokers_share_one_cluster_id_and_the_local_heap(services):
    ids = {environment(services[name]).get("CLUSTER_ID") for name in BROKERS}
    assert len(ids) == 1, ids
    (cluster_id,) = ids
    assert cluster_id is not None
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "a cluster id is 16 bytes"
    local_max_heap = [o for o in JVM_OPTIONS if o.startswith("-Xmx")]
    for name in BROKERS:
        heap = environment(services[name]).get("KAFKA_HEAP_OPTS", "").split()
        assert [o for o in heap if o.startswith("-Xmx")] == local_max_heap, name


def test_the_quorum_voters_are_the_brokers_controller_listeners(services):
    voter_lists = {
        broker_properties(services[name])["controller.quorum.voters"] for name in BROKERS
    }
    assert len(voter_lists) == 1, voter_lists
    voters = {}
    for voter in voter_lists.pop().split(","):
        node, _, address = voter.partition("@")
        host, _, port = address.rpartition(":")
        voters[int(node)] = (host, port)
    assert sorted(voters) == sorted(NODE_IDS)
    for node, (host, port) in voters.items():
        assert BROKERS.get(host) == node, f"voter {node} is {host}, not broker {node}'s service"
        props = broker_properties(services[host])
        controller = props["controller.listener.names"]
        assert listeners(props["listeners"])[controller][1] == port


def test_every_kafka_client_lists_all_three_brokers(services):
    advertised = set()
    for name in BROKERS:
        props = broker_properties(services[name])
        host, port = listeners(props["advertised.listeners"])[props["inter.broker.listener.name"]]
        assert host == name, f"{name} advertises itself as {host}"
        assert listeners(props["listeners"])[props["inter.broker.listener.name"]][1] == port
        advertised.add(f"{host}:{port}")
    ours = {name for name, service in services.items() if service.get("image") == TAXI_IMAGE}
    assert ours - {"train-model"} == KAFKA_CLIENTS
    for name in KAFKA_CLIENTS:
        bootstrap = environment(services[name]).get("KAFKA_BOOTSTRAP_SERVERS", "")
        assert set(bootstrap.split(",")) == advertised, name


def test_restart_policies_and_start_order(services):
    for name in BROKERS:
        assert services[name]["restart"] == "unless-stopped"
        assert "test" in services[name]["healthcheck"]
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name
    # A producer exits when its replay is done; only a failure should restart it.
    for name in PRODUCERS:
        assert services[name]["restart"] == "on-failure", name
    for name in ONE_SHOT:
        assert services[name].get("restart", "no") == "no", name
    healthy = {"condition": "service_healthy"}
    assert services["topics"]["depends_on"] == dict.fromkeys(BROKERS, healthy)
    completed = {"condition": "service_completed_successfully"}
    for name in KAFKA_CLIENTS - {"topics"}:
        assert services[name]["depends_on"]["topics"] == completed, name
    # The first model is published as the first champion before the predictor starts, and the
    # trainer, which needs a champion to beat.
    assert services["publish-model"]["depends_on"]["train-model"] == completed
    assert services["predictor"]["depends_on"]["publish-model"] == completed
    assert services["trainer"]["depends_on"]["publish-model"] == completed
    for name, service in services.items():
        dependencies = service.get("depends_on", {})
        assert set(dependencies) <= set(services), f"{name} waits for no such service"


def test_the_topics_job_ensures_the_project_topics_with_rf_3_and_min_isr_2(parse):
    ensure = parse("topics")
    assert ensure["command_path"] == "taxi topics ensure"
    assert ensure["params"]["internal"], "the internal topics should be created with all up"
    specs = project_topics(ensure["params"]["partitions"])
    assert specs == list(PROJECT_TOPICS)
    assert {(s.replication_factor, s.min_insync_replicas) for s in specs} == {
        (REPLICATION_FACTOR, MIN_INSYNC_REPLICAS)
    }
    assert len(BROKERS) >= REPLICATION_FACTOR


def test_every_service_runs_a_console_script_that_accepts_its_arguments(services, parse):
    for name, service in services.items():
        if service.get("image") == TAXI_IMAGE:
            assert parse(name)["params"], name


def test_instances_keep_their_names_across_restarts(parse):
    # Producers, predictor, aggregator and trainer resume and fence by instance name; the
    # default (the host name) is a new container id after every re-creation.
    for name in [*PRODUCERS, "predictor", "aggregator", "trainer"]:
        command = parse(name)
        assert command["sources"]["instance"] != "DEFAULT", name
        assert command["params"]["instance"] == COMPOSE_INSTANCE, name


def test_the_trainer_promotes_automatically_unless_told_not_to(parse):
    trainer = parse("trainer")
    assert trainer["command_path"] == "taxi-trainer"
    assert trainer["params"]["auto_promote"] is True
    assert trainer["sources"]["auto_promote"] == "ENVIRONMENT"  # TAXI_TRAINER_AUTO_PROMOTE


def test_the_model_and_data_are_mounted_where_the_commands_look(services, parse):
    workdir = [
        line.split()[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("WORKDIR")
    ][-1]
    model_dir = f"{workdir}/{DEFAULT_MODEL_PATH.parent}"
    data_dir = f"{workdir}/{DEFAULT_TRAIN_DATA.parent}"

    train = parse("train-model")
    assert train["command_path"] == "taxi train"
    assert train["params"]["if_missing"]
    assert train["params"]["model"] == str(DEFAULT_MODEL_PATH)
    assert train["params"]["data"] == str(DEFAULT_TRAIN_DATA)
    model_source, read_only = mounts(services["train-model"])[model_dir]
    assert not read_only, "train-model writes the model"
    assert mounts(services["train-model"])[data_dir] == ("./data", True)

    publish = parse("publish-model")
    assert publish["command_path"] == "taxi model publish"
    assert publish["params"]["path"] == str(DEFAULT_MODEL_PATH)
    assert (publish["params"]["role"], publish["params"]["if_vacant"]) == ("champion", True)
    assert mounts(services["publish-model"])[model_dir] == (model_source, True)
    # The predictor and the trainer read their models from the registry: no file, no volume.
    for name in ("predictor", "trainer"):
        assert "model_path" not in parse(name)["params"], name
        assert model_dir not in mounts(services[name]), name

    for name, source in PRODUCERS.items():
        producer = parse(name)["params"]
        assert producer["source"] == source
        assert producer["data"] is None, "the default, data/<source>.csv, is mounted"
        assert mounts(services[name])[data_dir] == ("./data", True), name


def test_mounted_files_and_volumes_exist(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target, (source, _read_only) in mounts(service).items():
            if source.startswith((".", "/")):
                path = (REPO / source).resolve()
                assert path.exists(), (
                    f"{name} mounts {source} at {target}: no such file in the repo"
                )
            else:
                assert source in declared, f"{name} mounts volume {source}, which is not declared"


def test_the_metrics_ports_agree_with_the_prometheus_config(services, parse):
    for name, port in METRICS_PORTS.items():
        assert parse(name)["params"]["metrics_port"] == port, name
        assert published(services[name])[port] == (LOOPBACK, port), name
    assert PROMETHEUS_CONFIG.is_file(), (
        f"{PROMETHEUS_CONFIG.relative_to(REPO)} is missing: the prometheus service mounts it"
    )
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert {f"{name}:{port}" for name, port in METRICS_PORTS.items()} <= targets
    unknown = {t for t in targets if t.rpartition(":")[0] not in {*services, "localhost"}}
    assert not unknown, f"targets that are no compose service: {unknown}"


def test_the_published_ports(services, parse):
    assert parse("dashboard")["params"]["port"] == DASHBOARD_PORT
    assert published(services["dashboard"])[DASHBOARD_PORT] == (LOOPBACK, DASHBOARD_PORT)
    assert published(services["prometheus"]) == {PROMETHEUS_PORT: (LOOPBACK, PROMETHEUS_PORT)}
    assert published(services["grafana"]) == {GRAFANA_PORT: (LOOPBACK, GRAFANA_PORT)}
    assert (
        mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"][0]
        == f"./{PROMETHEUS_CONFIG.relative_to(REPO)}"
    )


def test_every_port_is_published_on_the_hosts_loopback_only(services):
    exposed = {
        f"{name}: {address or '(every interface)'}:{host_port}"
        for name, service in services.items()
        for address, host_port in published(service).values()
        if address != LOOPBACK
    }
    assert not exposed, f"published beyond {LOOPBACK}: {sorted(exposed)}"
    assert {name for name, service in services.items() if published(service)} == {
        *BROKERS,
        *METRICS_PORTS,
        "prometheus",
        "grafana",
    }


def test_every_published_port_is_served_on_every_interface_of_its_container(services, parse):
    """A published port reaches a container's own interface, not its loopback, and our
    commands listen on loopback unless told otherwise: so each container says 0.0.0.0."""
    told: dict[str, dict[int, str]] = {}
    for name in BROKERS:
        props = broker_properties(services[name])
        told[name] = {int(port): host for host, port in listeners(props["listeners"]).values()}
    for name in METRICS_PORTS:
        # --port and --address, --metrics-port and --metrics-address: each port its address.
        params = parse(name)["params"]
        told[name] = {
            params[port]: params[port.removesuffix("port") + "address"]
            for port in params
            if port.endswith("port") and params[port]
        }
    flags = dict(arg.partition("=")[::2] for arg in services["prometheus"]["command"])
    host, _, port = flags["--web.listen-address"].rpartition(":")
    told["prometheus"] = {int(port): host}
    told["grafana"] = {GRAFANA_PORT: environment(services["grafana"]).get("GF_SERVER_HTTP_ADDR")}
    unreachable = {
        f"{name}:{port} on {told.get(name, {}).get(port)}"
        for name, service in services.items()
        for port in published(service)
        if told.get(name, {}).get(port) != EVERY_INTERFACE
    }
    assert not unreachable, f"published, but not served on {EVERY_INTERFACE}: {unreachable}"


def test_no_password_is_written_in_the_file():
    # Read before interpolation: a ${NAME:-default} would be a password in the file too.
    raw = environment(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"])
    secrets = {name: value for name, value in raw.items() if "PASSWORD" in name}
    assert "GF_SECURITY_ADMIN_PASSWORD" in secrets, "Grafana would fall back to admin/admin"
    for name, value in secrets.items():
        required = rf"\$\{{{name}:\?[^}}]+\}}"
        assert re.fullmatch(required, value), f"{name}: {value!r} is not ${{{name}:?...}}"
    # Without a login, Grafana only shows.
    if raw.get("GF_AUTH_ANONYMOUS_ENABLED") == "true":
        assert raw.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"


def test_grafana_reads_the_compose_prometheus_and_the_mounted_dashboards(services):
    grafana = {target: source for target, (source, _ro) in mounts(services["grafana"]).items()}
    provisioning = REPO / grafana["/etc/grafana/provisioning"]
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text()).get("datasources", [])
    ]
    urls = {d.get("url") for d in datasources if d.get("type") == "prometheus"}
    assert urls == {f"http://prometheus:{PROMETHEUS_PORT}"}, urls
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text()).get("providers", [])
    ]
    assert providers, f"no dashboard provider in {provisioning / 'dashboards'}"
    dashboards_dir = next(t for t, s in grafana.items() if s.endswith("/dashboards"))
    assert {p["options"]["path"] for p in providers} == {dashboards_dir}


def test_the_image_installs_the_locked_workspace_as_a_non_root_user():
    dockerfile = DOCKERFILE.read_text()
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    members = [
        path.parent.relative_to(REPO)
        for pattern in workspace["members"]
        for path in sorted(REPO.glob(f"{pattern}/pyproject.toml"))
    ]
    assert len(members) >= 5
    for member in members:
        # Without it, `uv sync --locked --no-install-workspace` cannot check the lock.
        assert f"COPY {member}/pyproject.toml {member}/" in dockerfile, member
    assert dockerfile.count("uv sync --locked --no-dev") == 2
    final_stage = dockerfile.rpartition("\nFROM ")[2]
    users = [line.split()[1] for line in final_stage.splitlines() if line.startswith("USER ")]
    assert users
    assert users[-1] not in {"root", "0"}


def test_the_build_context_leaves_local_state_out():
    ignored = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] != "#"
    }
    assert {".venv", "data", "models", ".taxi", ".git"} <= ignored
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = {source.split("/")[0] for line in copied for source in line.split()}
    assert not sources & ignored


@pytest.mark.parametrize(("models", "secure"), [(None, False), ("./models", False), (None, True)])
def test_docker_compose_config_accepts_the_file(models, secure, generated):
    docker = shutil.which("docker")
    plugin = docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False
    )
    if not plugin or plugin.returncode != 0:
        pytest.skip(
            "the docker compose plugin is not installed, so `docker compose config` cannot "
            "validate the file here (the other checks in this file do not need it)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXI_")}
    env["GF_SECURITY_ADMIN_PASSWORD"] = "compose-config-check"  # required by the file
    if models:
        env["TAXI_COMPOSE_MODELS"] = models
    files = ["-f", str(COMPOSE_FILE)]
    if secure:
        files += ["-f", str(SECURE_COMPOSE_FILE)]
        env["TAXI_COMPOSE_SECRETS"] = str(generated[0])
    result = subprocess.run(
        [docker, "compose", *files, "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# -- docker-compose.secure.yml, merged onto docker-compose.yml ---------------------------------

# The principal each Kafka client runs as: the services their own, the operator's jobs admin.
PRINCIPAL_OF = {
    "topics": ADMIN_PRINCIPAL,
    "publish-model": ADMIN_PRINCIPAL,
    "producer-train": "producer",
    "producer-test": "producer",
    "predictor": "predictor",
    "aggregator": "aggregator",
    "trainer": "trainer",
    "dashboard": "dashboard",
}
# Where the secure cluster's settings may differ in compose: hosts, ports and the data volume.
COMPOSE_PLACES = {
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "listener.security.protocol.map",
    "log.dirs",
}


def merge(base: Any, override: Any, key: str = "") -> Any:
    """`override` merged onto `base` as docker compose merges files, for the keys these files
    use: mappings key by key, `command` replaced, other sequences (secrets) joined."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key != "command":
        return [*base, *(item for item in override if item not in base)]
    return override


def read_properties(path: Path) -> dict[str, str]:
    """A Java properties file as our render_properties writes it (key=value, # comments)."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def in_container(name: str) -> str:
    return f"{SECRETS_MOUNT}/{name}"


@pytest.fixture(scope="module")
def secure_compose() -> dict[str, Any]:
    base = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(merge(base, yaml.safe_load(SECURE_COMPOSE_FILE.read_text())))


@pytest.fixture(scope="module")
def secure_services(secure_compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return secure_compose["services"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`taxi cluster compose-secrets` run into a fresh folder: the folder, and what it said."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    result = CliRunner().invoke(cluster, ["compose-secrets", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    return directory, result.output


def service_secrets(service: Mapping[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


def test_the_secure_override_keeps_every_service_and_adds_none(services, secure_services):
    assert set(secure_services) == set(services)
    for name in secure_services:
        assert secure_services[name].get("image") == services[name].get("image"), name


def test_compose_secrets_writes_private_files_and_reuses_them(generated):
    directory, said = generated
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(p for p in directory.iterdir())
    assert files
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    passwords = [p.read_text().strip() for p in directory.glob("*.password")]
    assert len(passwords) == len(PRINCIPALS) + 1  # and the brokers'
    before = {p.name: p.read_bytes() for p in files}
    again = CliRunner().invoke(cluster, ["compose-secrets", "--dir", str(directory)])
    assert again.exit_code == 0, again.output
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before, "day two: reused"
    assert "made: nothing" in again.output
    for output in (said, again.output):
        assert "docker compose -f docker-compose.yml -f docker-compose.secure.yml up" in output
        for password in passwords:
            assert password not in output


def test_every_secret_named_is_one_the_generator_writes(secure_compose, secure_services, generated):
    directory, _ = generated
    declared = secure_compose["secrets"]
    default_dir = default_compose_secrets_dir(REPO).relative_to(REPO)
    for name, secret in declared.items():
        path = Path(secret["file"])
        assert path == Path(".") / default_dir / name, f"{name} is not its file in {default_dir}"
        assert (directory / name).is_file(), f"the generator writes no {name}"
    assert CA_FILE in declared
    assert "ca-key.pem" not in declared, "the CA's key stays on the host"
    for name, service in secure_services.items():
        assert service_secrets(service) <= set(declared), name


def test_each_service_mounts_only_its_own_principals_secrets(secure_services, generated):
    directory, _ = generated
    for name, service in secure_services.items():
        principal = PRINCIPAL_OF.get(name)
        if principal is None:
            if name not in BROKERS:
                assert not service_secrets(service), f"{name} talks to no Kafka"
            continue
        own = client_config_file(principal)
        assert service_secrets(service) == {CA_FILE, own}, name
        assert environment(service)["KAFKA_CONFIG_FILE"] == in_container(own), name
        settings = read_config_file(directory / own)
        assert settings["sasl.username"] == principal
        assert settings["ssl.ca.location"] == in_container(CA_FILE)
        assert settings["security.protocol"] == "SASL_SSL"
    assert ADMIN_PRINCIPAL not in str(secure_services["predictor"].get("secrets"))


def test_every_secure_client_still_lists_all_three_brokers(secure_services, generated):
    """The client configs name no brokers, so compose's KAFKA_BOOTSTRAP_SERVERS stands."""
    directory, _ = generated
    brokers = {f"{compose_host(n)}:9092" for n in NODE_IDS}
    for name, principal in PRINCIPAL_OF.items():
        env = environment(secure_services[name])
        file_settings = read_config_file(directory / client_config_file(principal))
        kafka = KafkaConfig.from_env(env, file_settings=file_settings)
        assert set(kafka.bootstrap_servers.split(",")) == brokers, name


@pytest.mark.parametrize(("name", "node_id"), BROKERS.items())
def test_the_secure_brokers_run_the_generated_local_secure_settings(
    services, secure_services, generated, name, node_id
):
    directory, _ = generated
    broker = secure_services[name]
    *start, config = broker["command"]
    assert start[:2] == ["bash", "-c"]
    script = start[2]
    assert config == in_container(broker_properties_file(node_id))
    props = read_properties(directory / broker_properties_file(node_id))

    # The local secure cluster's settings, but for hosts, ports and the data volume.
    local = server_properties(
        node_id,
        ClusterPorts(),
        Path("unused"),
        security=NodeSecurity(
            key_store=Path(in_container(node_key_store_file(node_id))),
            ca_file=Path(in_container(CA_FILE)),
            broker_principal="broker",
            broker_password=(directory / password_file("broker")).read_text().strip(),
            admins=(ADMIN_PRINCIPAL,),
        ),
    )
    wrong = {k: (props.get(k), v) for k, v in local.items() if k not in COMPOSE_PLACES}
    wrong = {k: pair for k, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, f"{name}: (compose, local secure) = {wrong}"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:broker;User:{ADMIN_PRINCIPAL}"

    # SASL_SSL only, on compose's hosts and ports; EXTERNAL as secured as the others.
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_SSL"}
    bound = listeners(props["listeners"])
    assert set(bound) == set(protocols) == {"SASL_SSL", "CONTROLLER", "EXTERNAL"}
    assert {host for host, _port in bound.values()} == {EVERY_INTERFACE}
    advertised = listeners(props["advertised.listeners"])
    assert advertised["SASL_SSL"] == (name, bound["SASL_SSL"][1])
    external = COMPOSE_EXTERNAL_PORTS[node_id]
    assert advertised["EXTERNAL"] == ("localhost", str(external))
    assert published(services[name])[external] == (LOOPBACK, external)
    for mechanism in ("sasl.enabled.mechanisms", "scram-sha-512.sasl.jaas.config"):
        assert (
            props[f"listener.name.external.{mechanism}"]
            == props[f"listener.name.sasl_ssl.{mechanism}"]
        )
    voters = {v.partition("@")[2] for v in props["controller.quorum.voters"].split(",")}
    assert voters == {f"{compose_host(n)}:{bound['CONTROLLER'][1]}" for n in NODE_IDS}
    assert mounts(services[name])[props["log.dirs"]][0] == f"{name}-data"

    # What compose shows is what runs: no PLAINTEXT left from the base file.
    shown = broker_properties(broker)
    for key in ("listeners", "advertised.listeners", "listener.security.protocol.map"):
        assert shown[key] == props[key], f"{name}: {key}"
    assert shown["inter.broker.listener.name"] == props["inter.broker.listener.name"]
    assert "PLAINTEXT" not in json.dumps(environment(broker)) + json.dumps(props)

    # Every file the broker reads is mounted: its settings, certificate and the CA; and every
    # principal's password, which the start script formats storage with.
    paths = {v for k, v in props.items() if k.endswith(".location")} | {config}
    mounted = {in_container(s) for s in service_secrets(broker)}
    assert paths <= mounted, f"{name} reads unmounted {paths - mounted}"
    wanted = {password_file(p) for p in ("broker", *PRINCIPALS)}
    assert wanted <= service_secrets(broker)
    assert service_secrets(broker) - wanted == {
        CA_FILE,
        node_key_store_file(node_id),
        broker_properties_file(node_id),
    }
    for step in (
        "--ignore-formatted",
        "--add-scram",
        '"$CLUSTER_ID"',
        f"{SECRETS_MOUNT}/*.password",
    ):
        assert step in script, step
    assert "exec /opt/kafka/bin/kafka-server-start.sh" in script

    # Its certificate is valid for the names it is reached by.
    pem = (directory / node_key_store_file(node_id)).read_bytes()
    names = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert set(names.value.get_values_for_type(x509.DNSName)) == {name, "localhost"}


def test_the_secure_topics_job_grants_the_acls_as_admin(secure_services, generated):
    """The services parse with their secure settings (the mounted files are the generated
    ones here): the topics job grants the ACLs, and each client reads its own config."""
    directory, _ = generated
    local_paths = {
        name: {
            **service,
            "environment": {
                k: v.replace(str(SECRETS_MOUNT), str(directory))
                for k, v in environment(service).items()
            },
        }
        for name, service in secure_services.items()
    }
    parsed_secure = parse_services(local_paths)
    topics = parsed_secure["topics"]
    assert "error" not in topics, topics
    assert topics["command_path"] == "taxi topics ensure"
    assert topics["params"]["grant_acls"] is True
    assert topics["params"]["internal"] is True
    for name, principal in PRINCIPAL_OF.items():
        result = parsed_secure[name]
        assert "error" not in result, f"{name}: {result}"
        assert result["params"]["config_file"] == str(directory / client_config_file(principal))


def test_no_password_is_written_in_either_file(generated):
    directory, _ = generated
    passwords = [p.read_text().strip() for p in directory.glob("*.password")]
    for path in (COMPOSE_FILE, SECURE_COMPOSE_FILE):
        text = path.read_text()
        for password in passwords:
            assert password not in text
        assert "sasl.password" not in text
        # The one password setting in the override: the start script's, from a secret.
        for value in re.findall(r"password=(.{0,16})", text):
            assert value == '$$(cat "$$file")', f"{path.name}: password={value}"


@pytest.mark.kafka
def test_kafkas_storage_formatter_accepts_a_generated_broker_config(generated, tmp_path):
    """Kafka's own StorageTool reads the settings the secure compose brokers start with, as
    their start script runs it: --add-scram for every principal, --ignore-formatted (a
    restarted broker's storage is left as it is)."""
    directory, _ = generated
    props = read_properties(directory / broker_properties_file(1))
    props = {k: v.replace(str(SECRETS_MOUNT), str(directory)) for k, v in props.items()}
    props["log.dirs"] = str(tmp_path / "data")
    config = tmp_path / "kafka-1.properties"
    config.write_text(render_properties(props))
    local = LocalCluster(tmp_path / "cluster")
    log4j = tmp_path / "log4j2.xml"
    log4j.write_bytes(
        importlib.resources.files("taxi_kafka.cluster").joinpath("log4j2.xml").read_bytes()
    )
    launcher = JavaLauncher(local.ensure_java(), local.ensure_jars().directory, log4j)
    passwords = {p.stem: p.read_text().strip() for p in directory.glob("*.password")}
    cluster_id = environment(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["kafka-1"])[
        "CLUSTER_ID"
    ]
    command = launcher.format_storage(config, cluster_id, tmp_path / "format.log", passwords)
    for attempt in ("format", "restart"):
        done = subprocess.run(
            [*command, "--ignore-formatted"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{attempt}: {done.stdout}{done.stderr}"
        assert (tmp_path / "data" / "meta.properties").is_file(), attempt
    assert f"cluster.id={cluster_id}" in (tmp_path / "data" / "meta.properties").read_text()


if __name__ == "__main__":
    _parse_requests()
