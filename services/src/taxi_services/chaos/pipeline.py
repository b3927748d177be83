"""The pipeline of one chaos run (or `taxi lifecycle`): both producers, the predictor and the
aggregator, and the trainer if asked for, each the console script a user runs, in its own
process, watched through its Prometheus metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taxi_events import Source
from taxi_kafka.cluster import LocalCluster
from taxi_services.registry import ModelRegistry, ensure_champion
from taxi_services.scrape import total
from taxi_services.status import ALL_TRIPS
from taxi_services.supervisor import Child, free_port, stop_all

log = logging.getLogger("taxi.chaos")

PROCESSORS = ("predictor", "aggregator", "trainer")  # they run until stopped; producers finish
SCRAPE_TRIES = 3
REPLAYED = "taxi_producer_trips_started"
# A service alone on its test host serves its metrics on this port of the host's address.
METRICS_PORT_ON_HOST = 9100


class PipelineError(RuntimeError):
    """A service would not start."""


@dataclass(frozen=True)
class Replayed:
    """One producer's share of the trips: its CSV, trip count and pace (trips/s)."""

    csv: Path
    trips: int
    rate: float


@dataclass(frozen=True)
class TransactionCounters:
    """A service's transactions so far: committed, aborted on an error, and the producers it
    replaced after a fatal error or a timeout."""

    committed: int
    aborted: int
    producers_recreated: int


def producer_name(source: Source) -> str:
    return f"producer-{source}"


class Pipeline:
    """The four services against one cluster, each as its own principal when the cluster is
    secure. Their --instance is `instance` (the run's folder
    name), so their command lines name the run, and a restart reuses it."""

    def __init__(
        self,
        *,
        instance: str,
        cluster: LocalCluster,
        model_path: Path,
        replays: Mapping[Source, Replayed],
        logs: Path,
        producer_args: Mapping[Source, Sequence[str]] | None = None,
        predictor_args: Sequence[str] = (),
        aggregator_args: Sequence[str] = (),
        trainer_args: Sequence[str] | None = None,
        run_by: str = "taxi chaos",
    ) -> None:
        """`producer_args`: more flags for a producer (say, a drift to inject),
        `predictor_args` for the predictor and `aggregator_args` for the aggregator; with
        `trainer_args`, the trainer runs too, with those flags. `run_by` names the command in
        the first champion's deployment decision."""
        self._run_by = run_by
        self.replays = dict(replays)
        self._cluster = cluster
        self._model_path = model_path
        self._env = {
            # The services' logs are a run's post-mortem: INFO whatever the environment says,
            # DEBUG under `taxi --log-level DEBUG` (with TAXI_KAFKA_DEBUG, librdkafka's too).
            "TAXI_LOG_LEVEL": "DEBUG" if log.isEnabledFor(logging.DEBUG) else "INFO",
            # A service stuck at the end is aborted: its threads' stacks go to its log.
            "PYTHONFAULTHANDLER": "1",
        }
        self.instance = instance
        named = ["--instance", instance]
        commands = {
            "predictor": ["taxi-predictor", *predictor_args, *named],
            "aggregator": ["taxi-aggregator", *aggregator_args, *named],
            **{
                producer_name(source): [
                    "taxi-producer",
                    "--source",
                    source,
                    "--data",
                    str(replay.csv),
                    "--rate",
                    f"{replay.rate:g}",
                    "--no-progress",
                    *(producer_args or {}).get(source, ()),
                    *named,
                ]
                for source, replay in self.replays.items()
            },
        }
        if trainer_args is not None:
            commands["trainer"] = ["taxi-trainer", *trainer_args, *named]
        self.children = {name: self._child(name, args, logs) for name, args in commands.items()}
        self._positions = dict.fromkeys(self.replays, 0)

    def _child(self, name: str, args: Sequence[str], logs: Path) -> Child:
        """A service on this machine, or on a test host of its own when the cluster's nodes
        run on test hosts (so that a scenario can cut it off)."""
        network = self._cluster.network
        if network is None:
            return Child(name, args, free_port(), logs / f"{name}.log")
        return Child(
            name,
            args,
            METRICS_PORT_ON_HOST,
            logs / f"{name}.log",
            host=network.add_host(name),
            enter_host=network.preexec(name),
        )

    def env(self, principal: str) -> dict[str, str]:
        """The environment of a service of the run: on the secure cluster, as `principal`."""
        return {**self._env, **self._cluster.service_env(principal)}

    def start(self, name: str) -> None:
        child = self.children[name]
        child.start(self.env(child.principal))
        log.info("%s started, log %s", name, child.log_path)

    def kill(self, name: str) -> None:
        code = self.children[name].kill()
        log.info("%s killed (exit code %s)", name, code)

    def start_all(self, timeout: float) -> None:
        """Start every service and wait until each serves its metrics (the model loaded, the
        trips read), so that a service that cannot start fails the run at once. The model
        becomes the champion first. The processors come up before the producers start the
        replay: a producer up first would send a backlog that the predictor then scores in one
        burst, all in one window of the figures."""
        ensure_champion(ModelRegistry(self._cluster.kafka_config()), self._model_path, self._run_by)
        deadline = time.monotonic() + timeout
        processors = [name for name in self.children if self._processor(name)]
        producers = [name for name in self.children if not self._processor(name)]
        for group in (processors, producers):
            for name in group:
                self.start(name)
            for name in group:
                child = self.children[name]
                while not child.metrics() and child.exit_code is None:
                    if time.monotonic() > deadline:
                        raise PipelineError(f"{name} not up in {timeout:.0f} s: {child.log_path}")
                    time.sleep(0.5)
            crashed = self.crashed()
            if crashed:
                raise PipelineError(f"could not start: {crashed}")

    def started(self) -> int:
        """Trips started so far (each producer's furthest committed replay position)."""
        for source, replay in self.replays.items():
            child = self.children[producer_name(source)]
            if child.exit_code == 0:  # finished: every trip started
                self._positions[source] = replay.trips
                continue
            position = total(child.metrics(), REPLAYED, source=source)
            self._positions[source] = max(self._positions[source], int(position))
        return sum(self._positions.values())

    def crashed(self) -> list[str]:
        """Services that stopped by themselves when they should not have: a processor that
        exited at all, a producer that exited with an error."""
        return [
            f"{name} exited with {child.exit_code} (log: {child.log_path})"
            for name, child in self.children.items()
            if child.exit_code is not None and (self._processor(name) or child.exit_code != 0)
        ]

    def _processor(self, name: str) -> bool:
        """A service that runs until stopped (a producer finishes)."""
        return self.children[name].principal in PROCESSORS

    def producers_done(self) -> bool:
        return all(self.children[producer_name(s)].exit_code is not None for s in self.replays)

    def scored(self) -> dict[Source, int]:
        """Trips the aggregator has published as matched or unmatched, per source."""
        samples = self.children["aggregator"].metrics()
        return {
            source: int(
                total(samples, "taxi_matched_trips", source=source, **ALL_TRIPS)
                + total(samples, "taxi_unmatched_trips", source=source, **ALL_TRIPS)
            )
            for source in self.replays
        }

    def drained(self) -> bool:
        scored = self.scored()
        return all(scored[source] >= replay.trips for source, replay in self.replays.items())

    def predictor_counters(self) -> TransactionCounters:
        """The predictor's transaction counters now (zeros while it does not answer)."""
        samples = self.children["predictor"].metrics()
        return TransactionCounters(
            committed=int(total(samples, "taxi_transactions_total", outcome="committed")),
            aborted=int(total(samples, "taxi_transactions_total", outcome="aborted")),
            producers_recreated=int(total(samples, "taxi_producers_recreated_total")),
        )

    def committed_transactions(self) -> int | None:
        """Transactions committed so far by every service, from their own counters; None when
        one of them does not answer."""
        count = 0.0
        for child in self.children.values():
            for _ in range(SCRAPE_TRIES):
                samples = child.metrics()
                if samples:
                    break
                time.sleep(0.5)
            else:
                return None
            count += total(samples, "taxi_transactions_total", outcome="committed")
        return int(count)

    def activity(self) -> dict[str, float]:
        """What each answering service has done so far: records read by the predictor and the
        aggregator, trips started by the producers. Work shows as a change."""
        done = {}
        for name, child in self.children.items():
            samples = child.metrics()
            if samples:
                counter = "taxi_records_consumed_total" if self._processor(name) else REPLAYED
                done[name] = total(samples, counter)
        return done

    def progress(self) -> str:
        trips = sum(r.trips for r in self.replays.values())
        scored = self.scored()
        read = total(self.children["aggregator"].metrics(), "taxi_records_consumed_total")
        lag = total(self.children["predictor"].metrics(), "taxi_consumer_lag_records")
        return (
            f"started {self.started():,}/{trips:,} | predictor lag {lag:,.0f}"
            f" | aggregator read {read:,.0f} | scored "
            + ", ".join(f"{s} {scored[s]:,}/{r.trips:,}" for s, r in self.replays.items())
        )

    def stop(self, timeout: float) -> dict[str, int | None]:
        """SIGTERM whatever still runs (each commits its batch and exits); every service's
        exit code."""
        stop_all(list(self.children.values()), timeout, dump_stacks=True)
        return {name: child.exit_code for name, child in self.children.items()}
