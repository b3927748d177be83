"""The faults: what each chaos scenario does to the cluster or the services, and when.

A scenario runs once, when half the trips have started. It records each action with its time;
`fault_over` marks the moment the fault ended (a broker serving again, a process restarted),
from which the report measures recovery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taxi_kafka import CONSUMER_OFFSETS, PREDICTOR_GROUP, TRANSACTION_STATE, instance_id
from taxi_kafka.cluster import NODE_IDS, HostNetwork, LocalCluster, node_host
from taxi_services.chaos.checker import Bounds
from taxi_services.chaos.pipeline import Pipeline, producer_name

log = logging.getLogger("taxi.chaos")

BROKER_DOWN_S = 20.0  # kill-broker: restart the killed broker this long after the kill
HOLD_S = 20.0  # two-brokers-down: both stay down this long
SETTLE_S = 3.0  # two-brokers-down: calls in flight at the stop end within this
SECOND_RETURN_S = 10.0  # two-brokers-down: the second broker returns this long after the first
# A broker's clean stop or restart takes seconds on a quiet box, a minute or more on a loaded
# one; a stop that runs out of time ends in SIGKILL, which these scenarios do not mean.
BROKER_STOP_TIMEOUT_S = 120.0
BROKER_START_TIMEOUT_S = 180.0
HEALTHY_TIMEOUT_S = 180.0
PROGRESS_EVERY_S = 5.0
PARTITION_S = 30.0  # partition-*: how long the cut lasts
FLAP_EVERY_S = 5.0  # flapping: the link changes state this often
FLAP_FOR_S = 60.0  # flapping: for this long
PREDICTOR = "predictor"
RESUME_TIMEOUT_S = 120.0  # partition-predictor: it must commit again within this of the heal
# Instance names tried for one whose predictor's transactions the victim coordinates: with
# 50 partitions of __transaction_state over 3 brokers, one in three is.
ARRANGE_TRIES = 200


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class FaultRun:
    """What a scenario acts on, and its record of what it did."""

    cluster: LocalCluster
    pipeline: Pipeline
    actions: list[tuple[int, str]] = field(default_factory=list)  # (epoch ms, what)
    ended_ms: int | None = None
    findings: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def started_ms(self) -> int:
        return self.actions[0][0]

    @property
    def network(self) -> HostNetwork:
        """The test network of a scenario that cuts hosts off (needs_hosts)."""
        if self.cluster.network is None:
            raise RuntimeError("this scenario cuts hosts off: its cluster needs test hosts")
        return self.cluster.network

    def act(self, what: str) -> None:
        log.info("fault: %s", what)
        self.actions.append((now_ms(), what))

    def fault_over(self, what: str) -> None:
        self.act(what)
        self.ended_ms = self.actions[-1][0]

    def wait(self, seconds: float) -> None:
        """Sleep, logging the pipeline's progress now and then."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, PROGRESS_EVERY_S))
            log.info("%s", self.pipeline.progress())

    def wait_until(self, at_ms: int) -> None:
        self.wait((at_ms - now_ms()) / 1000)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    # The replay's length at the default rate: long enough for the fault to land midway.
    nominal_s: float
    inject: Callable[[FaultRun], None]
    bounds: Bounds = field(default_factory=Bounds)
    # Brokers and services on test hosts of their own, for a fault the network makes.
    needs_hosts: bool = False
    # The services' --instance, from the run's name, on the cluster before they start.
    arrange: Callable[[LocalCluster, str], str] = lambda _cluster, name: name


def kill_broker(run: FaultRun) -> None:
    victim = run.cluster.leader_of_most_partitions()
    run.act(f"SIGKILL broker {victim}, the leader of the most partitions")
    run.cluster.kill_broker(victim)
    run.wait_until(run.started_ms + int(BROKER_DOWN_S * 1000))
    run.act(f"restart broker {victim}")
    run.cluster.start_broker(victim, BROKER_START_TIMEOUT_S)
    run.fault_over(f"broker {victim} serving again")


def rolling_restart(run: FaultRun) -> None:
    for node in NODE_IDS:
        # One broker at a time, each only once every partition is in sync again: with two
        # replicas of a partition out at once, its writes would stop (min ISR 2).
        run.cluster.wait_healthy(HEALTHY_TIMEOUT_S)
        run.act(f"SIGTERM broker {node}")
        run.cluster.stop_broker(node, BROKER_STOP_TIMEOUT_S)
        run.act(f"restart broker {node}")
        run.cluster.start_broker(node, BROKER_START_TIMEOUT_S)
    run.fault_over(f"broker {NODE_IDS[-1]}, the last, serving again")


def kill_process(name: str) -> Callable[[FaultRun], None]:
    def inject(run: FaultRun) -> None:
        run.act(f"SIGKILL {name}")
        run.pipeline.kill(name)
        run.pipeline.start(name)
        run.fault_over(f"{name} restarted")

    return inject


def two_brokers_down(run: FaultRun) -> None:
    first = run.cluster.leader_of_most_partitions()
    second = next(n for n in NODE_IDS if n != first)
    run.act(f"SIGTERM broker {first}")
    run.cluster.stop_broker(first, BROKER_STOP_TIMEOUT_S)
    run.act(f"SIGTERM broker {second}")
    run.cluster.stop_broker(second, BROKER_STOP_TIMEOUT_S)
    both_down = now_ms()
    # With one broker of three, acks=all writes cannot reach min ISR 2: no service can commit.
    run.wait(SETTLE_S)
    before = run.pipeline.committed_transactions()
    run.wait_until(both_down + int(HOLD_S * 1000))
    after = run.pipeline.committed_transactions()
    committed = None if before is None or after is None else after - before
    run.findings["committed_while_down"] = committed
    run.findings["watched_while_down_s"] = round(HOLD_S - SETTLE_S, 1)
    if committed is None:
        run.problems.append("could not read the services' transaction counters while down")
    elif committed:
        run.problems.append(f"{committed} transaction(s) committed with two brokers down")
    run.act(f"restart broker {first}")
    run.cluster.start_broker(first, BROKER_START_TIMEOUT_S)
    run.fault_over(f"broker {first} serving again")
    run.wait(SECOND_RETURN_S)
    run.act(f"restart broker {second}")
    run.cluster.start_broker(second, BROKER_START_TIMEOUT_S)
    run.act(f"broker {second} serving again")


def cut_off(run: FaultRun, host: str, what: str) -> None:
    """Cut `host` off from every other host for PARTITION_S, then heal."""
    run.act(f"cut off {what}")
    run.network.cut(host)
    run.wait_until(run.started_ms + int(PARTITION_S * 1000))
    run.network.heal(host)
    run.fault_over(f"{what}: reconnected")


def coordinated_by_leader(cluster: LocalCluster, name: str) -> str:
    """An instance name, from `name`, whose predictor's transaction coordinator is the broker
    leading the most partitions: partition-leader cuts both off at once. `name` itself if none
    of the names tried is."""
    victim = cluster.leader_of_most_partitions()
    status = cluster.status()
    for n in range(ARRANGE_TRIES):
        candidate = f"{name}-{n}"
        transactional_id = instance_id(PREDICTOR, candidate)
        if status.coordinator(transactional_id, TRANSACTION_STATE) == victim:
            return candidate
    return name


def partition_leader(run: FaultRun) -> None:
    victim = run.cluster.leader_of_most_partitions()
    status = run.cluster.status()
    coordinators = {
        "predictor_transactions": status.coordinator(
            instance_id(PREDICTOR, run.pipeline.instance), TRANSACTION_STATE
        ),
        "predictor_group": status.coordinator(PREDICTOR_GROUP, CONSUMER_OFFSETS),
    }
    run.findings["cut_broker"] = victim
    run.findings["coordinators"] = coordinators
    also = [what.replace("_", " ") for what, node in coordinators.items() if node == victim]
    cut_off(
        run,
        node_host(victim),
        f"broker {victim}, the leader of the most partitions"
        + (f" and coordinator of the {' and '.join(also)}" if also else ""),
    )


def partition_predictor(run: FaultRun) -> None:
    """Cut the predictor off, then heal. Its transaction in flight cannot commit: its producer
    is abandoned (or fenced, once the coordinator times the transaction out), and the zombie
    producer's records stay invisible, its transaction aborted when a new one starts."""
    before = run.pipeline.predictor_counters()
    cut_off(run, PREDICTOR, "the predictor, from every broker (mid-transaction, likely)")
    healed_ms = now_ms()
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    while (after := run.pipeline.predictor_counters()).committed <= before.committed:
        if time.monotonic() > deadline:
            run.problems.append(
                f"the predictor committed nothing {RESUME_TIMEOUT_S:g} s after the heal"
            )
            return
        time.sleep(0.5)
    run.findings["predictor"] = {
        "committed_again_after_heal_s": round((now_ms() - healed_ms) / 1000, 1),
        "producers_replaced": after.producers_recreated - before.producers_recreated,
        "transactions_aborted": after.aborted - before.aborted,
    }


def partition_controller_quorum(run: FaultRun) -> None:
    # The active controller alone on one side forces an election on the other.
    lone = run.cluster.status().controller or NODE_IDS[0]
    others = " and ".join(str(n) for n in NODE_IDS if n != lone)
    cut_off(run, node_host(lone), f"node {lone} (the active controller) from {others}")


def flapping(run: FaultRun) -> None:
    victim = run.cluster.leader_of_most_partitions()
    host = node_host(victim)
    end_ms = now_ms() + int(FLAP_FOR_S * 1000)
    up = True
    while now_ms() < end_ms:
        up = not up
        run.act(f"broker {victim}'s link {'up' if up else 'down'}")
        (run.network.heal if up else run.network.cut)(host)
        run.wait(FLAP_EVERY_S)
    if not up:
        run.network.heal(host)
    run.fault_over(f"broker {victim}'s link up for good")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "kill-broker",
            f"SIGKILL the broker leading the most partitions; restart it {BROKER_DOWN_S:g} s later",
            100.0,
            kill_broker,
            Bounds(max_gap_s=15.0),
        ),
        Scenario(
            "rolling-restart",
            "SIGTERM and restart each broker in turn, waiting for full sync in between",
            150.0,
            rolling_restart,
        ),
        Scenario(
            "kill-predictor",
            "SIGKILL the predictor (mid-transaction as likely as not), then restart it",
            60.0,
            kill_process("predictor"),
        ),
        Scenario(
            "kill-aggregator",
            "SIGKILL the aggregator (mid-transaction as likely as not), then restart it",
            60.0,
            kill_process("aggregator"),
        ),
        Scenario(
            "kill-producer",
            "SIGKILL the train producer, with trip ends owed, then restart it",
            60.0,
            kill_process(producer_name("train")),
        ),
        Scenario(
            "two-brokers-down",
            f"SIGTERM two brokers, hold {HOLD_S:g} s (nothing may commit), restart one, "
            f"then the other {SECOND_RETURN_S:g} s later",
            120.0,
            two_brokers_down,
            Bounds(max_recovery_s=60.0),
        ),
        Scenario(
            "partition-leader",
            f"cut the broker leading the most partitions off the network for {PARTITION_S:g} s",
            100.0,
            partition_leader,
            Bounds(max_gap_s=20.0, max_recovery_s=30.0),
            needs_hosts=True,
            arrange=coordinated_by_leader,
        ),
        Scenario(
            "partition-predictor",
            f"cut the predictor off from every broker for {PARTITION_S:g} s, then heal",
            100.0,
            partition_predictor,
            needs_hosts=True,
        ),
        Scenario(
            "partition-controller-quorum",
            f"split the KRaft controllers 1 | 2 for {PARTITION_S:g} s (the active one alone)",
            100.0,
            partition_controller_quorum,
            needs_hosts=True,
        ),
        Scenario(
            "flapping",
            f"take one broker's link down and up every {FLAP_EVERY_S:g} s for {FLAP_FOR_S:g} s",
            120.0,
            flapping,
            needs_hosts=True,
        ),
    )
}
