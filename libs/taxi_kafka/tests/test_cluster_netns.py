"""Test hosts: the plan's names and addresses (pure), and real namespaces, links and cuts (as
root with iproute2; skipped elsewhere, saying why)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka.cluster import _netns as netns
from taxi_kafka.cluster._netns import NetworkPlan, free_subnet, host_network, tags_in

tags = st.text("0123456789abcdef", min_size=6, max_size=6)
hosts = st.sampled_from(["node-1", "node-2", "node-3", "predictor", "producer-train"])


@given(tags, st.integers(0, 255), st.integers(0, 244), hosts)
def test_every_name_fits_linux_and_carries_the_tag(tag, subnet, index, host):
    plan = NetworkPlan(tag, subnet)
    for link in (plan.bridge, plan.link(index)):
        assert len(link) <= 15  # IFNAMSIZ - 1
    names = [plan.bridge, plan.link(index), plan.namespace(host)]
    assert tags_in(names) == {tag}
    assert plan.address(index).startswith(f"10.213.{subnet}.")
    assert plan.address(index) != plan.gateway


def test_names_of_other_links_and_namespaces_carry_no_tag():
    assert tags_in(["lo", "eth0", "docker0", "txq", "taxi-probe-123", "br-1a2b3c4d5e6f"]) == set()


def test_hosts_have_distinct_addresses_in_the_subnet():
    plan = NetworkPlan("a1b2c3", 7)
    addresses = [plan.address(i) for i in range(245)]
    assert len(set(addresses)) == 245
    with pytest.raises(ValueError, match="outside"):
        plan.address(245)


@pytest.mark.parametrize(("tag", "subnet"), [("xyz123", 0), ("a1b2c3d", 0), ("a1b2c3", 256)])
def test_a_bad_tag_or_subnet_is_refused(tag, subnet):
    with pytest.raises(ValueError, match="expected"):
        NetworkPlan(tag, subnet)


def test_the_subnet_is_one_no_route_uses():
    routes = (
        "10.213.0.0/24 dev txbaaaaaa proto kernel scope link src 10.213.0.1\n"
        "3: txbbbbbbb    inet 10.213.1.1/24 scope global txbbbbbbb\n"
        "default via 172.16.0.1 dev eth0\n"
    )
    assert free_subnet(routes) == 2
    assert free_subnet(routes, taken=[2, 3]) == 4
    with pytest.raises(netns.NetworkUnavailableError):
        free_subnet("".join(f"10.213.{n}.0/24 dev x\n" for n in range(256)))


# -- real namespaces ----------------------------------------------------------------------

unavailable = netns.hosts_unavailable()
needs_hosts = pytest.mark.skipif(unavailable is not None, reason=unavailable or "")


def on_host(network: netns.HostNetwork, host: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """A process on a test host, as the cluster and the chaos pipeline start theirs."""
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=network.preexec(host),  # noqa: PLW1509  # setns(2) only
    )


def reachable(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    server.accept()[0].close()
"""


@needs_hosts
def test_a_cut_host_is_unreachable_until_healed_and_the_network_goes_afterwards():
    with host_network() as network:
        tag = network.plan.tag
        address = network.add_host("server")
        network.add_host("client")
        server = on_host(network, "server", [sys.executable, "-c", SERVER, address, "7000"])
        try:
            deadline = time.monotonic() + 10
            while not reachable(address, 7000) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert reachable(address, 7000)  # from this machine, through the bridge
            # From the other host, in a namespace of its own.
            connect = f"import socket; socket.create_connection(('{address}', 7000), 2)"
            probe = [sys.executable, "-c", connect]
            assert on_host(network, "client", probe).wait() == 0
            network.cut("server")
            assert not reachable(address, 7000)  # dropped, not refused: it times out
            assert on_host(network, "client", probe).wait() != 0
            network.heal("server")
            deadline = time.monotonic() + 10
            while not reachable(address, 7000) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert reachable(address, 7000)
        finally:
            server.kill()
            server.wait()
    assert tag not in netns.network_tags()
    assert not (netns.OWNERS_DIR / tag).exists()


@needs_hosts
def test_the_network_is_removed_when_the_body_raises():
    made: list[str] = []

    def interrupted() -> None:
        with host_network() as network:
            made.append(network.plan.tag)
            network.add_host("a")
            raise KeyboardInterrupt  # Ctrl+C

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert made
    assert not netns.network_tags() & set(made)


@needs_hosts
def test_a_network_whose_owner_was_killed_is_swept_by_the_next():
    # A process that makes a network and is SIGKILLed in it: no cleanup of its own runs.
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from taxi_kafka.cluster._netns import host_network\n"
            "with host_network() as n:\n"
            "    n.add_host('a')\n"
            "    print(n.plan.tag, flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    tag = owner.stdout.readline().strip()
    owner.kill()
    owner.wait()
    assert tag in netns.network_tags()
    assert json.loads((netns.OWNERS_DIR / tag).read_text())["pid"] == owner.pid
    removed = netns.sweep()
    assert any(tag in name for name in removed)
    assert tag not in netns.network_tags()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_without_root_the_reason_says_so():
    # A real unprivileged process, not a patched check.
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            "from taxi_kafka.cluster import hosts_unavailable; print(hosts_unavailable())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "need root" in done.stdout
