"""Pure cluster configuration: ports, server.properties, cluster ids, command lines."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from taxi_kafka.cluster._config import (
    ClusterPorts,
    JavaLauncher,
    NodeSecurity,
    new_cluster_id,
    render_properties,
    server_properties,
)


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_default_ports_match_the_contract():
    ports = ClusterPorts()
    assert [ports.broker(n) for n in (1, 2, 3)] == [19092, 19093, 19094]
    assert [ports.controller(n) for n in (1, 2, 3)] == [19192, 19193, 19194]
    assert ports.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert ports.quorum_voters == "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"


def test_ports_move_with_the_base():
    ports = ClusterPorts(29092)
    assert ports.of_node(2) == (29093, 29193)


@pytest.mark.parametrize("base", [80, 65500])
def test_ports_outside_the_usable_range_are_refused(base):
    with pytest.raises(ValueError, match="outside"):
        ClusterPorts(base)


@pytest.mark.parametrize("node", [0, 4])
def test_unknown_nodes_are_refused(node):
    with pytest.raises(ValueError, match="no node"):
        ClusterPorts().broker(node)


def test_server_properties_make_a_combined_node_with_safe_replication(tmp_path):
    text = render_properties(server_properties(2, ClusterPorts(29092), tmp_path / "data"))
    settings = parse_properties(text)
    assert settings["process.roles"] == "broker,controller"
    assert settings["node.id"] == "2"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:29093,CONTROLLER://127.0.0.1:29193"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29093"
    assert settings["controller.quorum.voters"].startswith("1@127.0.0.1:29192,")
    assert settings["log.dirs"] == str(tmp_path / "data")
    for key, value in {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "unclean.leader.election.enable": "false",
        "auto.create.topics.enable": "false",
        "num.partitions": "6",
        "group.initial.rebalance.delay.ms": "0",
    }.items():
        assert settings[key] == value, key
    assert int(settings["broker.heartbeat.interval.ms"]) < int(
        settings["broker.session.timeout.ms"]
    )


def test_a_secure_node_takes_sasl_ssl_everywhere_and_denies_what_no_acl_allows(tmp_path):
    security = NodeSecurity(
        key_store=tmp_path / "node-2.pem",
        ca_file=tmp_path / "ca.pem",
        broker_principal="broker",
        broker_password="s3cret-pw",
        admins=("admin",),
    )
    settings = server_properties(2, ClusterPorts(29092), tmp_path / "data", security=security)
    assert settings["listeners"] == "SASL_SSL://127.0.0.1:29093,CONTROLLER://127.0.0.1:29193"
    assert settings["advertised.listeners"] == "SASL_SSL://127.0.0.1:29093"
    assert settings["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL"
    assert settings["inter.broker.listener.name"] == "SASL_SSL"
    assert settings["ssl.keystore.type"] == settings["ssl.truststore.type"] == "PEM"
    assert settings["ssl.keystore.location"] == str(tmp_path / "node-2.pem")
    assert settings["ssl.truststore.location"] == str(tmp_path / "ca.pem")
    # Clients and brokers authenticate with SCRAM, controllers with PLAIN, all under TLS.
    assert settings["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert settings["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert settings["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert (
        'username="broker" password="s3cret-pw"'
        in (settings["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"])
    )
    assert 'user_broker="s3cret-pw"' in settings["listener.name.controller.plain.sasl.jaas.config"]
    assert settings["authorizer.class.name"].endswith("StandardAuthorizer")
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert settings["super.users"] == "User:broker;User:admin"
    # The replication settings are the same as without security.
    plain = server_properties(2, ClusterPorts(29092), tmp_path / "data")
    assert {k: plain[k] for k in ("min.insync.replicas", "default.replication.factor")} == {
        k: settings[k] for k in ("min.insync.replicas", "default.replication.factor")
    }


def test_overrides_win(tmp_path):
    overrides = {"num.partitions": "3", "log.retention.ms": "1000"}
    settings = server_properties(1, ClusterPorts(), tmp_path, overrides)
    assert settings["num.partitions"] == "3"
    assert settings["log.retention.ms"] == "1000"


def test_properties_escape_backslashes_and_newlines():
    text = render_properties({"a": "C:\\x", "b": "one\ntwo"})
    assert "a=C:\\\\x\n" in text
    assert "b=one\\ntwo\n" in text


def test_cluster_ids_look_like_kafkas():
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_launcher_command_lines():
    launcher = JavaLauncher("/usr/bin/java", Path("/jars"), Path("/rt/log4j2.xml"))
    broker = launcher.broker(Path("/rt/node-1/server.properties"), Path("/rt/node-1/kafka.log"))
    assert broker[0] == "/usr/bin/java"
    assert broker[-2:] == ["kafka.Kafka", "/rt/node-1/server.properties"]
    assert "-Xmx768m" in broker
    assert broker[broker.index("-cp") + 1] == "/jars/*"
    assert "-Dtaxi.kafka.log=/rt/node-1/kafka.log" in broker
    assert "-Dlog4j2.configurationFile=/rt/log4j2.xml" in broker
    fmt = launcher.format_storage(Path("/p"), "ID", Path("/l"))
    assert fmt[-6:] == ["kafka.tools.StorageTool", "format", "-t", "ID", "-c", "/p"]
    secure = launcher.format_storage(Path("/p"), "ID", Path("/l"), {"broker": "pw1", "admin": "x"})
    assert secure[-4:] == [
        *("--add-scram", "SCRAM-SHA-512=[name=broker,password=pw1]"),
        *("--add-scram", "SCRAM-SHA-512=[name=admin,password=x]"),
    ]


def test_extra_broker_options_come_after_the_defaults_so_they_win():
    launcher = JavaLauncher("/usr/bin/java", Path("/jars"), Path("/rt/log4j2.xml"))
    broker = launcher.broker(Path("/p"), Path("/l"), ["-Xmx2g", "-XX:TieredStopAtLevel=4"])
    assert broker.index("-Xmx768m") < broker.index("-Xmx2g") < broker.index("-cp")
    quick, full = broker.index("-XX:TieredStopAtLevel=1"), broker.index("-XX:TieredStopAtLevel=4")
    assert quick < full < broker.index("-cp")
