"""Test hosts on one machine: a network namespace per host, each joined to one bridge by a veth
pair, with addresses in a /24 of its own. A host is cut off by taking its link down (the
kernel here has no netem and no iptables), and healed by bringing it up: the packets between
are dropped, not refused, as on a real partition. Nothing leaves the machine.

`NetworkPlan` is pure (names, addresses, the `ip` commands); `HostNetwork` runs them through
a small `Run` interface. Every name the run makes holds its tag, so `sweep` finds and removes
a network whose owner died without cleaning up (a SIGKILL)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from taxi_kafka.cluster._errors import ClusterError

log = logging.getLogger(__name__)

# The test networks' addresses: 10.213.<n>.0/24, the first n in no route of the machine.
NETWORK_PREFIX = "10.213"
NETNS_DIR = Path("/run/netns")
# Who owns which network: a file per tag naming the owner's pid, so a later run can sweep the
# networks of owners that are gone.
OWNERS_DIR = Path("/run/taxi-netns")
_CLONE_NEWNET = 0x40000000
_FIRST_HOST_OCTET = 11
_TAG = re.compile(r"^[0-9a-f]{6}$")

Run = Callable[[Sequence[str]], str]


class NetworkUnavailableError(ClusterError):
    """This machine cannot make test hosts; the message says why."""


@dataclass(frozen=True)
class NetworkPlan:
    """The names and addresses of one test network. Link names stay within Linux's 15
    characters: txb<tag> is the bridge, tx<tag>h<i> the bridge's end of host i's veth pair
    (its other end is eth0 inside the host's namespace taxi-<tag>-<host>)."""

    tag: str
    subnet: int  # the third octet of 10.213.<subnet>.0/24

    def __post_init__(self) -> None:
        if not _TAG.match(self.tag):
            raise ValueError(f"tag {self.tag!r}: expected six hex digits")
        if not 0 <= self.subnet <= 255:
            raise ValueError(f"subnet {self.subnet}: expected 0..255")

    @property
    def bridge(self) -> str:
        return f"txb{self.tag}"

    @property
    def gateway(self) -> str:
        """The machine's own address on the network (the bridge's)."""
        return f"{NETWORK_PREFIX}.{self.subnet}.1"

    def namespace(self, host: str) -> str:
        return f"taxi-{self.tag}-{host}"

    def link(self, index: int) -> str:
        return f"tx{self.tag}h{index}"

    def address(self, index: int) -> str:
        if not 0 <= index <= 255 - _FIRST_HOST_OCTET:
            raise ValueError(f"host index {index} is outside the /24")
        return f"{NETWORK_PREFIX}.{self.subnet}.{_FIRST_HOST_OCTET + index}"

    def bridge_commands(self) -> list[list[str]]:
        return [
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ]

    def host_commands(self, host: str, index: int) -> list[list[str]]:
        namespace, link = self.namespace(host), self.link(index)
        return [
            ["ip", "netns", "add", namespace],
            ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace],
            ["ip", "link", "set", link, "master", self.bridge, "up"],
            ["ip", "-n", namespace, "addr", "add", f"{self.address(index)}/24", "dev", "eth0"],
            ["ip", "-n", namespace, "link", "set", "eth0", "up"],
            ["ip", "-n", namespace, "link", "set", "lo", "up"],
        ]

    def link_command(self, index: int, up: bool) -> list[str]:
        return ["ip", "link", "set", self.link(index), "up" if up else "down"]


def free_subnet(routes: str, taken: Sequence[int] = ()) -> int:
    """The first n with 10.213.n.0/24 in none of `routes` (`ip -4 -o route` and `ip -4 -o
    addr` text) and not in `taken`."""
    used = {int(m) for m in re.findall(rf"{re.escape(NETWORK_PREFIX)}\.(\d+)\.", routes)}
    for subnet in range(256):
        if subnet not in used and subnet not in taken:
            return subnet
    raise NetworkUnavailableError(f"every {NETWORK_PREFIX}.n.0/24 is in use on this machine")


def tags_in(names: Sequence[str]) -> set[str]:
    """The tags of the test networks among link and namespace names."""
    found = set()
    for name in names:
        m = re.match(r"^(?:taxi-([0-9a-f]{6})-|tx(?:b)?([0-9a-f]{6}))", name)
        if m:
            found.add(m.group(1) or m.group(2))
    return found


def run_ip(argv: Sequence[str]) -> str:
    """Run an `ip` command; its output. Raises ClusterError with its message if it fails."""
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def hosts_unavailable(run: Run = run_ip) -> str | None:
    """Why this machine cannot make test hosts (not root, no iproute2, no namespaces); None
    when it can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, veth pairs and a bridge)"
    if shutil.which("ip") is None:
        return "test hosts need iproute2's `ip` (apt-get install iproute2)"
    probe = f"taxi-probe-{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "netns", "del", probe])
    except ClusterError as exc:
        return f"cannot create a network namespace here: {exc}"
    return None


def entering(namespace: str) -> Callable[[], None]:
    """A Popen preexec_fn that moves the child into `namespace`'s network before it runs, so
    its command line stays its own (`ip netns exec` would show first)."""
    path = str(NETNS_DIR / namespace)
    setns = ctypes.CDLL(None, use_errno=True).setns

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {path}")
        finally:
            os.close(fd)

    return enter


@dataclass
class HostNetwork:
    """A test network that exists: its hosts by name, each with an address, a namespace to
    run processes in, and a link to cut and heal."""

    plan: NetworkPlan
    run: Run = run_ip
    hosts: dict[str, int] = field(default_factory=dict)  # name -> index

    def add_host(self, host: str) -> str:
        """Make `host` (once) and return its address."""
        if host not in self.hosts:
            index = len(self.hosts)
            for argv in self.plan.host_commands(host, index):
                self.run(argv)
            self.hosts[host] = index
            log.info("test host %s: %s", host, self.plan.address(index))
        return self.address(host)

    def address(self, host: str) -> str:
        return self.plan.address(self._index(host))

    def preexec(self, host: str) -> Callable[[], None]:
        """What runs a child process on `host` (a Popen preexec_fn)."""
        return entering(self.plan.namespace(self._known(host)))

    def cut(self, host: str) -> None:
        """Cut `host` off from every other host and from this machine."""
        self.run(self.plan.link_command(self._index(host), up=False))
        log.info("test host %s cut off", host)

    def heal(self, host: str) -> None:
        self.run(self.plan.link_command(self._index(host), up=True))
        log.info("test host %s reconnected", host)

    def _known(self, host: str) -> str:
        if host not in self.hosts:
            raise KeyError(f"no test host {host!r}; the hosts are {sorted(self.hosts)}")
        return host

    def _index(self, host: str) -> int:
        return self.hosts[self._known(host)]


def _system_names(run: Run) -> list[str]:
    links = re.findall(r"^\d+:\s+([^:@\s]+)", run(["ip", "-o", "link", "show"]), re.MULTILINE)
    namespaces = [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line]
    return [*links, *namespaces]


def network_tags(run: Run = run_ip) -> set[str]:
    """The tags of the test networks that exist now (whoever made them)."""
    return tags_in(_system_names(run))


def remove(tag: str, run: Run = run_ip) -> list[str]:
    """Remove every link and namespace of the network `tag`; what it removed. Links first:
    deleting a veth end deletes its peer, even inside a namespace that a process still holds."""
    removed = []
    names = _system_names(run)
    for name in names:
        if tags_in([name]) == {tag} and not name.startswith("taxi-"):
            with contextlib.suppress(ClusterError):  # gone with its peer or its bridge
                run(["ip", "link", "del", name])
                removed.append(name)
    for name in names:
        if name.startswith(f"taxi-{tag}-"):
            with contextlib.suppress(ClusterError):
                run(["ip", "netns", "del", name])
                removed.append(name)
    (OWNERS_DIR / tag).unlink(missing_ok=True)
    return removed


def sweep(run: Run = run_ip) -> list[str]:
    """Remove the test networks whose owner process is gone; what was removed."""
    removed: list[str] = []
    for tag in sorted(network_tags(run)):
        if not _owner_alive(tag):
            log.warning("removing test network %s: its owner is gone", tag)
            removed += remove(tag, run)
    return removed


def _owner_alive(tag: str) -> bool:
    try:
        owner = json.loads((OWNERS_DIR / tag).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return False
    return Path(f"/proc/{owner}").exists()


@contextlib.contextmanager
def host_network(run: Run = run_ip) -> Iterator[HostNetwork]:
    """A new test network, removed on the way out whatever happens (Ctrl+C included); one that
    a killed run left behind is swept first. Raises NetworkUnavailableError where this machine
    cannot make one."""
    reason = hosts_unavailable(run)
    if reason:
        raise NetworkUnavailableError(reason)
    sweep(run)
    routes = run(["ip", "-4", "-o", "route"]) + run(["ip", "-4", "-o", "addr"])
    plan = NetworkPlan(secrets.token_hex(3), free_subnet(routes))
    OWNERS_DIR.mkdir(parents=True, exist_ok=True)
    (OWNERS_DIR / plan.tag).write_text(json.dumps({"pid": os.getpid()}) + "\n")
    try:
        for argv in plan.bridge_commands():
            run(argv)
        log.info("test network %s: %s.%d.0/24", plan.tag, NETWORK_PREFIX, plan.subnet)
        yield HostNetwork(plan, run)
    finally:
        removed = remove(plan.tag, run)
        log.info("test network %s removed (%d links and namespaces)", plan.tag, len(removed))
