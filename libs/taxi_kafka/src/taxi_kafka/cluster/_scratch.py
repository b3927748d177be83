"""Throwaway clusters: a fresh LocalCluster in a temporary folder on free ports, for chaos runs,
benchmarks and tests that need the project's fixed topic names on empty topics."""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from taxi_kafka.cluster._config import NODE_IDS, ClusterPorts
from taxi_kafka.cluster._local import LocalCluster
from taxi_kafka.cluster._netns import host_network
from taxi_kafka.cluster._procs import port_free

log = logging.getLogger(__name__)

# Far from the default 19092 (and its controllers at 19192), in steps that never overlap.
_SCAN_FIRST, _SCAN_STEP, _SCAN_SLOTS = 29092, 10, 200


def free_base_port() -> int:
    """A base port whose six broker and controller ports are all free. The scan starts at a
    random slot, so concurrent sessions rarely race for the same ports."""
    first = random.randrange(_SCAN_SLOTS)
    for slot in range(first, first + _SCAN_SLOTS):
        ports = ClusterPorts(_SCAN_FIRST + slot % _SCAN_SLOTS * _SCAN_STEP)
        if all(port_free(port) for n in NODE_IDS for port in ports.of_node(n)):
            return ports.base
    raise RuntimeError(f"no free ports for a cluster from {_SCAN_FIRST} on")


@contextlib.contextmanager
def scratch_cluster(
    prefix: str = "taxi-scratch-",
    *,
    keep: bool = False,
    security: str | None = None,
    hosts: bool = False,
    broker_overrides: Mapping[str, str] | None = None,
) -> Iterator[LocalCluster]:
    """A new cluster, up with the project topics, stopped and deleted afterwards; with
    `security` SASL_SSL, a secure one (its secrets in its folder). With `hosts`, each node runs
    on a test host of its own, on a test network made for it and removed after it, whatever
    happens (`cluster.network` cuts and heals hosts, and makes more for services); raises
    NetworkUnavailableError where this machine cannot. With `keep`, or when the body raises,
    its folder (logs included) is kept and logged for a post-mortem. `broker_overrides` are
    server.properties beyond BROKER_SETTINGS (an experiment's). Not under pytest's
    basetemp: pytest prunes old ones, even while another run uses them."""
    network_context = host_network() if hosts else contextlib.nullcontext()
    with network_context as network:
        runtime_dir = Path(tempfile.mkdtemp(prefix=prefix))
        # A test host's ports are free: its namespace is new.
        base_port = ClusterPorts().base if network else free_base_port()
        failed = True
        try:
            cluster = LocalCluster(
                runtime_dir,
                base_port=base_port,
                security=security,
                network=network,
                broker_overrides=broker_overrides,
            )
            try:
                cluster.up()
                yield cluster
                failed = False
            finally:
                cluster.down()
        finally:
            if keep or failed:
                log.warning("the cluster's files and logs are kept in %s", runtime_dir)
            else:
                shutil.rmtree(runtime_dir, ignore_errors=True)
