"""Processes, pid files and ports, with real processes and sockets but no Kafka."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from taxi_kafka.cluster import (
    ClusterError,
    ClusterPorts,
    LocalCluster,
    PortInUseError,
    free_base_port,
    requested_security,
)
from taxi_kafka.cluster._procs import (
    is_kafka_node,
    listening_inodes,
    pid_alive,
    port_free,
    port_open,
    port_owner,
    read_cmdline,
    read_pid,
)
from taxi_kafka.testing import wait_for

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4A94 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:4A94 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 00000000:4AF8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1
"""


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def test_listening_inodes_parse_proc_net_tcp():
    assert listening_inodes(PROC_NET_TCP, 0x4A94) == {111}  # not the connected socket 222
    assert listening_inodes(PROC_NET_TCP, 0x4AF8) == {333}
    assert listening_inodes(PROC_NET_TCP, 1) == set()


def test_kafka_nodes_are_recognised_by_their_command_line():
    props = Path("/rt/node-1/server.properties")
    argv = ["/usr/bin/java", "-Xmx768m", "-cp", "/jars/*", "kafka.Kafka", str(props)]
    assert is_kafka_node(argv, props)
    assert not is_kafka_node(argv, Path("/other/node-1/server.properties"))
    assert not is_kafka_node(["python", "kafka.Kafka", str(props)], props)
    assert not is_kafka_node([], props)


def test_pid_files(tmp_path):
    assert read_pid(tmp_path / "missing") is None
    (tmp_path / "pid").write_text("garbage")
    assert read_pid(tmp_path / "pid") is None
    (tmp_path / "pid").write_text("123\n")
    assert read_pid(tmp_path / "pid") == 123


def test_pid_alive_sees_exit(sleeper):
    assert pid_alive(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    assert not pid_alive(sleeper.pid)


def test_ports_and_their_owner(listener):
    port = listener.getsockname()[1]
    assert port_open(port)
    assert not port_free(port)
    assert port_owner(port).startswith(f"pid {os.getpid()} (")
    listener.close()
    assert port_free(port)
    assert not port_open(port)
    assert port_owner(port) is None


def test_a_pid_file_of_a_dead_process_is_stale(tmp_path, sleeper, caplog):
    cluster = LocalCluster(tmp_path, base_port=free_base_port())
    pid_file = cluster.node_dir(1) / "pid"
    pid_file.parent.mkdir(parents=True)
    sleeper.kill()
    sleeper.wait()
    pid_file.write_text(f"{sleeper.pid}\n")
    with caplog.at_level(logging.WARNING):
        assert cluster.pid(1) is None
    assert not pid_file.exists()
    assert f"pid {sleeper.pid} has exited" in caplog.text


def test_a_pid_file_of_another_program_is_stale(tmp_path, sleeper, caplog):
    cluster = LocalCluster(tmp_path, base_port=free_base_port())
    pid_file = cluster.node_dir(2) / "pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{sleeper.pid}\n")
    with caplog.at_level(logging.WARNING):
        assert cluster.pid(2) is None
    assert not pid_file.exists()
    assert "is not this Kafka node but" in caplog.text
    assert "time.sleep(60)" in caplog.text
    assert sleeper.poll() is None  # left alone


def test_a_taken_port_is_named_with_its_owner(tmp_path):
    # Node 2's controller port is the taken one. The base comes from the scan, below the
    # ephemeral range: around an ephemeral port, the cluster's other ports may be any client's.
    base = free_base_port()
    port = ClusterPorts(base).controller(2)
    cluster = LocalCluster(tmp_path, base_port=base)
    with socket.create_server(("127.0.0.1", port)), pytest.raises(PortInUseError) as caught:
        cluster.up(timeout=5)
    message = str(caught.value)
    assert f"port {port} (node 2 controller) is already in use by pid {os.getpid()}" in message
    assert "--base-port" in message
    assert not (tmp_path / "cluster.json").exists()  # nothing written


def test_status_with_nothing_running(tmp_path):
    status = LocalCluster(tmp_path, base_port=free_base_port()).status()
    assert [n.state for n in status.nodes] == ["down", "down", "down"]
    assert status.metadata_error == "no node is running"
    assert status.controller is None
    assert not status.healthy


def test_stopping_what_is_not_running_is_harmless(tmp_path):
    cluster = LocalCluster(tmp_path, base_port=free_base_port())
    assert cluster.down() == []
    assert not cluster.stop_broker(1)
    assert not cluster.kill_broker(3)


def test_a_node_without_data_cannot_be_restarted(tmp_path):
    with pytest.raises(ClusterError, match="has no data"):
        LocalCluster(tmp_path, base_port=free_base_port()).start_broker(1)


def test_a_runtime_dir_remembers_its_ports(tmp_path):
    (tmp_path / "cluster.json").write_text(json.dumps({"base_port": 31092}))
    assert LocalCluster(tmp_path).bootstrap_servers.startswith("127.0.0.1:31092,")
    assert LocalCluster(tmp_path, env={"TAXI_CLUSTER_BASE_PORT": "31092"}).ports.base == 31092
    with pytest.raises(ClusterError, match="uses base port 31092, not 32092"):
        LocalCluster(tmp_path, base_port=32092)


def test_a_cluster_keeps_the_security_it_was_made_with(tmp_path):
    (tmp_path / "cluster.json").write_text(json.dumps({"base_port": 31092, "security": "sasl_ssl"}))
    assert LocalCluster(tmp_path).secure  # `taxi cluster up`, no flag: as it was made
    assert LocalCluster(tmp_path, security="sasl_ssl").secure
    with pytest.raises(ClusterError, match=r"made secure \(SASL_SSL\), not without security"):
        LocalCluster(tmp_path, security="plaintext")
    (tmp_path / "cluster.json").write_text(json.dumps({"base_port": 31092}))  # before --secure
    assert not LocalCluster(tmp_path).secure
    with pytest.raises(ClusterError, match="taxi cluster down --purge"):
        LocalCluster(tmp_path, security="sasl_ssl")


def test_security_is_asked_for_with_the_flag_or_the_variable():
    assert requested_security(True, {}) == "sasl_ssl"
    assert requested_security(False, {"TAXI_CLUSTER_SECURITY": "SASL_SSL"}) == "sasl_ssl"
    assert requested_security(False, {}) is None  # whatever the cluster was made with
    with pytest.raises(ClusterError, match="expected plaintext or sasl_ssl"):
        requested_security(False, {"TAXI_CLUSTER_SECURITY": "tls"})


def test_secrets_live_beside_the_default_runtime_dir_and_inside_a_given_one(tmp_path):
    env = {"TAXI_RUNTIME_DIR": str(tmp_path / "rt")}
    assert LocalCluster(env=env).secrets_dir == tmp_path / "rt" / "secrets"
    # The default runtime dir, named: still the default.
    named = LocalCluster(tmp_path / "rt" / "cluster", env=env)
    assert named.secrets_dir == tmp_path / "rt" / "secrets"
    assert LocalCluster(tmp_path / "given").secrets_dir == tmp_path / "given" / "secrets"
    with pytest.raises(ClusterError, match="not a secure one"):
        LocalCluster(tmp_path / "given").secrets()


def test_down_purge_deletes_only_what_the_cluster_made(tmp_path):
    cluster = LocalCluster(tmp_path, base_port=free_base_port())
    for name in ("node-1/data", "node-2", "node-3"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "cluster.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("keep")
    cluster.down(purge=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_a_node_without_its_pid_file_is_found_and_stopped(tmp_path, caplog):
    cluster = LocalCluster(tmp_path, base_port=free_base_port())
    properties = cluster.node_dir(3) / "server.properties"
    properties.parent.mkdir(parents=True)
    # A stand-in whose command line reads like node 3's JVM.
    argv = ["java", "-c", "import time; time.sleep(60)", "kafka.Kafka", str(properties)]
    impostor = subprocess.Popen(argv, executable=sys.executable)
    try:
        # A process fresh from exec can show an empty command line for a moment.
        wait_for("the stand-in's command line", lambda: read_cmdline(impostor.pid), 10)
        with caplog.at_level(logging.WARNING):
            assert cluster.pid(3) == impostor.pid
        assert "without a pid file; recording it" in caplog.text
        assert read_pid(cluster.node_dir(3) / "pid") == impostor.pid
        assert cluster.down(timeout=5) == [3]
        assert impostor.wait(5) == -15
    finally:
        impostor.kill()
        impostor.wait()
