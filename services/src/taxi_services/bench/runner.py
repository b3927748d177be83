"""One bench run: each part in a namespace of its own, the measured designs as processes.

- passthrough, predictor, two-predictors and naive each drain backlogs of trip starts; the
  first three take turns, so that the brokers, which speed up through a run as their JIT
  compiles, are about as warm for each. A backlog is written in one open transaction while
  its processes idle, and committed once their consumer group holds every partition: so
  nothing is written while they are measured, and the time it takes a process to start, load
  its model and join does not count.
  The rate is the group's committed records per second from that moment until all are
  committed, followed by admin requests: off the measured processes' data path, and the same
  for every design.
- latency runs one predictor, then a producer at a fixed rate, and a read_committed reader of the
  predictions notes when each becomes visible.
- replay runs a producer as fast as it goes; its rate comes from its own replay checkpoints
  (one per transaction, timestamped when produced).
- shadow is a throughput part like predictor, raced with it, with a challenger deployed.
- the peers, quix, quix-batched and bytewax, run the same job written with those libraries
  (peers.py): quix drains a backlog as naive does, followed by its group's committed offsets;
  quix-batched commits its input before predicting it (group_by), so it is followed by the
  predictions a read_committed reader sees; bytewax commits no offsets and joins no group, so
  it is ready once it has predicted a warm-up trip start written to each partition, and it is
  followed by the predictions it has written (its output topic's end offsets).
- switch runs one predictor under a producer at a fixed rate, and promotes a second version,
  rolls it back, promotes it again...: each switch lasts from the decision's record (its
  timestamp) until a read_committed reader sees the first prediction by the new champion.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import pandas as pd
from confluent_kafka.admin import AdminClient

from taxi_events import DeploymentDecision, Prediction, TripStarted, decode, encode
from taxi_kafka import (
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    MODEL_DEPLOYMENTS,
    NEW_TRIPS,
    PREDICTOR_GROUP,
    PRODUCER_CHECKPOINTS,
    SHADOW_PREDICTIONS,
    read_to_end,
)
from taxi_kafka.cluster import (
    ADMIN_PRINCIPAL,
    JVM_OPTIONS,
    PLAINTEXT,
    SASL_SSL,
    SERVICE_PRINCIPALS,
)
from taxi_model import (
    Decider,
    DeploymentError,
    RegistryRecord,
    generate_trips,
    load_model,
    read_trips,
    train_and_save,
    write_synthetic,
)
from taxi_services.bench import peers, pyspy
from taxi_services.bench.cluster import (
    Backlog,
    BenchCluster,
    Namespaces,
    cluster_at,
    write_to_each_partition,
)
from taxi_services.bench.figures import Progress, Seen, busy_share, replay_rate
from taxi_services.bench.probes import (
    GroupWatch,
    OutputWatch,
    Watch,
    Watcher,
    cpu_reading,
    machine_ticks,
    memory_mb,
    records_of,
    timestamped_values,
)
from taxi_services.bench.profile import Profile
from taxi_services.bench.results import (
    COMMITTED,
    PARTS,
    VISIBLE,
    WRITTEN,
    Drain,
    LatencyRun,
    ReplayRun,
    Results,
    Switch,
    SwitchRun,
    Throughput,
    report,
)
from taxi_services.predictor import MODEL_THREADS
from taxi_services.provenance import provenance
from taxi_services.registry import (
    ModelRegistry,
    RegistryTopics,
    ensure_champion,
    record_of,
    whoami,
)
from taxi_services.supervisor import Child, stop_all
from taxi_stream import Replay, ReplayCheckpoint

log = logging.getLogger("taxi.bench")

POLL_S = 0.05
WATCH_S = 0.005
# How long a process may take to start and join its group (model loading included).
JOIN_TIMEOUT = 180.0
# How long progress may stand still before the run is declared stuck.
STALL_TIMEOUT = 120.0
PROGRESS_EVERY_S = 5.0
WORKERS = ("python", "-m", "taxi_services.bench.workers")
# The output topics (and consumer groups) of passthrough, naive and the peers, in the backlog's
# namespace.
PLAIN, NAIVE, PEER = "bench-plain", "bench-naive", "bench-peer"
# The keys of the warm-up records a design that joins no group (bytewax) must predict first.
WARMUP_KEY = b"taxi-bench-warmup-"
# quix-batched's count window: trips per model call. Its backlog is a whole number of windows
# (a window emits only once full).
QUIX_WINDOW = 1_000
# The synthetic trips every run replays.
TRIPS_SEED = 2024
# The challenger shadow and switch deploy when none is given: trained on other synthetic trips.
CHALLENGER_ROWS, CHALLENGER_SEED = 3_000, TRIPS_SEED + 1
# The parts that race one another, taking turns.
RACED = ("passthrough", "predictor", "two-predictors", "shadow")
# The part --profile samples with py-spy.
PROFILED = "predictor"
PROFILE_WINDOW = (
    "each of the predictor's drains, from just before its backlog is released until all of it "
    "is committed: start-up (imports, model load), joining the group and idling between "
    "drains are not sampled; idle threads are left out (py-spy's default)"
)
PROFILE_NOTE = (
    "share: of all samples (every Python thread not idle, unreadable samples included). "
    "top_self: the function running; top_total: the function on the stack, leaving out "
    "wrappers whose every sample is in one function they call (the deepest stands for them). "
    "py-spy takes a share of the machine while it samples: take rates from a run without "
    "--profile"
)


class BenchError(RuntimeError):
    """A part could not be measured: a process failed, or progress stopped."""


@dataclass(frozen=True)
class Settings:
    records: int
    naive_records: int
    latency_seconds: float
    latency_warmup: float
    latency_rates: tuple[float, ...]
    parts: frozenset[str]
    batch_size: int
    batch_wait: float
    partitions: int
    repeat: int  # backlogs the raced parts drain; the fastest counts
    switch_rate: float = 200.0  # trips/s of switch's steady load
    switches: int = 4  # promote, rollback, promote, ...
    switch_gap: float = 3.0  # seconds of steady predictions before each switch
    quix_records: int = 3_000  # the backlog quix drains: one model call per record is slow
    quix_batched_records: int = 10_000  # quix-batched's: whole windows (QUIX_WINDOW)
    profile: bool = False  # sample the predictor part's drains with py-spy
    profile_rate: int = pyspy.RATE  # its samples/s
    compiled_trees: bool = False  # taxi-predictor --compiled-trees

    def latency_trips(self, rate: float) -> int:
        return round(rate * (self.latency_warmup + self.latency_seconds))

    @property
    def trips_needed(self) -> int:
        """Rows of trip data the run replays at most."""
        needed = [self.records] if self.parts & {*RACED, "replay", "bytewax"} else []
        if "naive" in self.parts:
            needed.append(self.naive_records)
        if "quix" in self.parts:
            needed.append(self.quix_records)
        if "quix-batched" in self.parts:
            needed.append(self.quix_batched_records)
        if "latency" in self.parts:
            needed += [self.latency_trips(r) for r in self.latency_rates]
        if "switch" in self.parts:
            # The producer loops over them (new ids each time): a few seconds' worth will do.
            needed.append(max(round(self.switch_rate * self.switch_gap), 100))
        return max(needed, default=0)


@dataclass(frozen=True)
class Contender:
    """The processes of one throughput part: the members of `group`, reading `prefix`'s
    new_trips and writing its `sink`."""

    part: str
    children: list[Child]
    prefix: str
    group: str
    sink: str
    command_words: int = 1  # of the first child's command line, to name the design
    # How its progress is followed (results.COMMITTED, WRITTEN or VISIBLE). A design followed
    # by its outputs written joins no group (bytewax): it warms up instead.
    measured_by: str = COMMITTED
    peer: peers.Peer | None = None

    @property
    def design(self) -> str:
        if self.peer is not None:
            return f"{len(self.children)} x {self.peer.script.name}: {self.peer.library}"
        command = " ".join(self.children[0].args[: self.command_words])
        return f"{len(self.children)} x {command}"


class Bench:
    def __init__(
        self,
        cluster: BenchCluster,
        settings: Settings,
        *,
        namespaces: Namespaces,
        model_path: Path,
        trips: pd.DataFrame,
        trips_csv: Path,
        logs: Path,
        challenger_path: Path | None = None,
        spy: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = cluster.config
        self.settings = settings
        self.namespaces = namespaces
        self.model_path = model_path
        self.challenger_path = challenger_path
        self._challenger: RegistryRecord | None = None
        self.trips = trips
        self.trips_csv = trips_csv
        self.logs = logs
        self._children: list[Child] = []
        self._encoded: list[tuple[bytes, bytes]] | None = None
        self.spy = spy  # py-spy, to profile PROFILED's drains with; None: no profile
        self._profiled: list[str] = []  # py-spy's raw output of each drain of PROFILED

    def run(self) -> Results:
        parts = self.settings.parts
        results = Results(throughput={}, latency={})
        try:
            contenders = [self._contender(p) for p in RACED if p in parts]
            if contenders:
                results.throughput |= self._race(
                    contenders, rounds=self.settings.repeat, records=self.settings.records
                )
            # naive and the peers alone, after the raced parts, on brokers at least as warm
            # (their advantage, if any); bytewax keeps polling (1 ms at a time) while it idles.
            for alone, rounds, records in (
                ("naive", 1, self.settings.naive_records),
                ("quix", 1, self.settings.quix_records),
                ("quix-batched", 1, self.settings.quix_batched_records),
                ("bytewax", self.settings.repeat, self.settings.records),
            ):
                if alone in parts:
                    results.throughput |= self._race(
                        [self._contender(alone)], rounds=rounds, records=records
                    )
            if "replay" in parts:
                results.replay = self._replay()
            if "latency" in parts:
                for trips_per_s in self.settings.latency_rates:
                    results.latency[trips_per_s] = self._latency(trips_per_s)
            if "switch" in parts:
                results.switch = self._switch()
        finally:
            stop_all(self._children)
        return results

    # -- throughput: passthrough, predictor, two-predictors, naive ----------------------------

    def _contender(self, part: str) -> Contender:
        """The processes of a throughput part, in a namespace of their own (not started)."""
        if part in ("predictor", "two-predictors", "shadow"):
            prefix = self.namespaces.create(part)
            instances = 2 if part == "two-predictors" else 1
            predictors = [self._predictor(prefix, part, f"p{i}") for i in range(1, instances + 1)]
            if part == "shadow":
                # Decided before the predictor starts: it starts with both models loaded.
                self._deploy_challenger(prefix)
            return Contender(part, predictors, prefix, group=PREDICTOR_GROUP, sink=ML_PREDICTIONS)
        if part in ("quix", "quix-batched", "bytewax"):
            return self._peer(part)
        design, sink, extra = {
            "passthrough": ("passthrough", PLAIN, self._batch_args()),
            "naive": ("naive", NAIVE, ["--model", str(self.model_path)]),
        }[part]
        prefix = self.namespaces.create(part, [NEW_TRIPS, sink])
        worker = self._child(
            f"{part}-{design}",
            *(*WORKERS, design),
            *("--source", prefix + NEW_TRIPS, "--sink", prefix + sink, "--group", prefix + sink),
            *extra,
        )
        return Contender(part, [worker], prefix, group=sink, sink=sink, command_words=4)

    def _peer(self, part: str) -> Contender:
        """A peer (quix, quix-batched or bytewax) reading the namespace's new_trips and writing
        its predictions to PEER; BenchError if it cannot run here."""
        try:
            peer = peers.bytewax_peer() if part == "bytewax" else peers.quix_peer()
        except peers.PeerError as exc:
            raise BenchError(f"({part}) {exc}") from exc
        prefix = self.namespaces.create(part, [NEW_TRIPS, PEER])
        args = [
            *(peer.python, str(peer.script)),
            *("--source", prefix + NEW_TRIPS, "--sink", prefix + PEER, "--group", prefix + PEER),
            *("--model", str(self.model_path)),
        ]
        measured_by = COMMITTED
        if part == "bytewax":
            args += ["--batch-size", str(self.settings.batch_size)]
            measured_by = WRITTEN
        else:
            args += ["--state-dir", str(self.logs / f"{part}-state")]
            if part == "quix-batched":
                args += ["--batch", str(QUIX_WINDOW)]
                measured_by = VISIBLE
        worker = self._child(f"{part}-peer", *args)
        return Contender(part, [worker], prefix, PEER, PEER, measured_by=measured_by, peer=peer)

    def _group_watch(self, contender: Contender) -> GroupWatch:
        return GroupWatch(
            self._admin,
            contender.prefix + contender.group,
            contender.prefix + NEW_TRIPS,
            self.settings.partitions,
        )

    def _start_measured(self, contender: Contender) -> Watch:
        """Start a contender's processes; once they are ready, how to follow its progress."""
        if contender.measured_by == COMMITTED:
            watch = self._group_watch(contender)
            self._start_and_join(contender.children, watch)
            return watch
        output = OutputWatch(
            self.config,
            self._admin,
            contender.prefix + NEW_TRIPS,
            contender.prefix + contender.sink,
            self.settings.partitions,
            transactional=contender.measured_by == VISIBLE,
        )
        try:
            if contender.measured_by == WRITTEN:
                self._start_and_warm_up(contender.children, output)
            else:
                self._start_and_join(contender.children, self._group_watch(contender))
        except BaseException:
            output.close()
            raise
        return output

    def _race(
        self, contenders: Sequence[Contender], *, rounds: int, records: int
    ) -> dict[str, Throughput]:
        """Start every contender, then have each drain a backlog of `records` trip starts in
        turn, `rounds` times.

        The brokers' JIT keeps speeding them up through a run (a design's first drains can be
        half as fast as its last); taking turns, every design meets them about as warm.
        """
        watches: dict[str, Watch] = {}
        try:
            for contender in contenders:
                watches[contender.part] = self._start_measured(contender)
            profiled = self._profiled_pid(contenders)
            drains: dict[str, list[Drain]] = {c.part: [] for c in contenders}
            for round_number in range(1, rounds + 1):
                for contender in contenders:
                    part = contender.part
                    log.info("(%s) %s: round %d of %d", part, PARTS[part], round_number, rounds)
                    drain = self._drain_one(
                        contender.children,
                        watches[part],
                        self._trip_starts()[:records],
                        profile_pid=profiled if part == PROFILED else None,
                    )
                    log.info("(%s) %d records/s", part, drain.records_per_s)
                    drains[part].append(drain)
        finally:
            for watch in watches.values():
                watch.close()
        results = {}
        for contender in contenders:
            peaks = [memory_mb(c.process.pid, "VmHWM") for c in contender.children if c.process]
            self._stop(contender.children)
            outputs, distinct = records_of(
                self.config, contender.prefix + contender.sink, excluding=WARMUP_KEY
            )
            results[contender.part] = Throughput(
                contender.part,
                processes=contender.design,
                drains=tuple(drains[contender.part]),
                processed=sum(d.end.count for d in drains[contender.part]),
                outputs=outputs,
                distinct_outputs=distinct,
                shadow_outputs=(
                    records_of(self.config, contender.prefix + SHADOW_PREDICTIONS)[0]
                    if contender.part == "shadow"
                    else None
                ),
                measured_by=contender.measured_by,
                library=None if contender.peer is None else contender.peer.library,
                peak_rss_mb=tuple(mb for mb in peaks if mb is not None),
                profile=self._profile() if contender.part == PROFILED else None,
            )
        return results

    def _profiled_pid(self, contenders: Sequence[Contender]) -> int | None:
        """The pid of PROFILED's process when it races and --profile was given, once py-spy
        has shown it can attach to it (before any drain: a profile that cannot be taken
        stops the run before it measures anything)."""
        if self.spy is None:
            return None
        for contender in contenders:
            if contender.part == PROFILED:
                (child,) = contender.children
                assert child.process is not None
                pyspy.check_attach(self.spy, child.process.pid)
                return child.process.pid
        return None

    def _profile(self) -> Profile | None:
        if self.spy is None:
            return None
        settings = {
            **pyspy.settings(self.settings.profile_rate),
            "window": PROFILE_WINDOW,
            "recordings": len(self._profiled),
            "note": PROFILE_NOTE,
        }
        return Profile.of(self._profiled, settings)

    def _drain_one(
        self,
        children: Sequence[Child],
        watch: Watch,
        records: list[tuple[bytes, bytes]],
        *,
        profile_pid: int | None = None,
    ) -> Drain:
        """Write a hidden backlog while the members idle, reveal it, and follow the group's
        committed offsets (or the design's outputs) until all of it is done; with
        `profile_pid`, py-spy samples that process from just before the backlog is revealed
        until it is done."""
        backlog = Backlog(self.config, watch.topic, records)
        recording = None
        try:
            if profile_pid is not None:
                assert self.spy is not None
                path = self.logs / f"profile-{len(self._profiled) + 1}.txt"
                recording = pyspy.Recording(self.spy, profile_pid, path, self.settings.profile_rate)
            start = watch.progress(backlog)
            backlog.release()
        except BaseException:
            if recording is not None:
                recording.kill()
            backlog.abort()
            raise
        try:
            pids = [c.process.pid for c in children if c.process is not None]
            cpu_start, machine_start = cpu_reading(pids)
            now = moved = start
            while now.count < backlog.count:
                time.sleep(POLL_S)
                now = watch.progress(backlog)
                if now.count > moved.count:
                    if now.time - moved.time > PROGRESS_EVERY_S:
                        log.info("%d of %d records", now.count, backlog.count)
                    moved = now
                self._check(children, moved, f"{now.count} of {backlog.count} records done")
            cpu_end, machine_end = cpu_reading(pids)
        except BaseException:
            if recording is not None:
                recording.kill()
            raise
        if recording is not None:
            self._profiled.append(recording.stop())
        return Drain(start, now, cpu_end - cpu_start, busy_share(machine_start, machine_end))

    def _trip_starts(self) -> list[tuple[bytes, bytes]]:
        """Encoded trip starts (key, value) for the backlogs, made once."""
        if self._encoded is None:
            settings = self.settings
            count = max(
                settings.records,
                settings.naive_records,
                settings.quix_records,
                settings.quix_batched_records,
            )
            step = Replay(self.trips, "train").step(int(time.time() * 1000), count)
            self._encoded = [(e.trip_id.encode(), encode(e)) for e in step.started]
        return self._encoded

    # -- replay: the producer at full speed -------------------------------------------------

    def _replay(self) -> ReplayRun:
        prefix = self.namespaces.create("replay")
        trips = self.settings.records
        producer = self._producer(prefix, "replay", trips)
        log.info("(replay) %s: %d trips", PARTS["replay"], trips)
        self._start(producer)
        self._wait_for_exit(producer, JOIN_TIMEOUT + trips / 100)
        self._stop([producer])
        checkpoints = [
            Progress(at, ReplayCheckpoint.from_json(json.loads(value)).position)
            for at, value in timestamped_values(self.config, prefix + PRODUCER_CHECKPOINTS)
        ]
        started, distinct = records_of(self.config, prefix + NEW_TRIPS)
        ended, _ = records_of(self.config, prefix + FINISHED_TRIPS)
        run = ReplayRun(
            trips, replay_rate(checkpoints, trips), len(checkpoints), started, distinct, ended
        )
        log.info("(replay) %s trips/s over %d transactions", run.trips_per_s, run.transactions)
        return run

    # -- latency: at a fixed rate ----------------------------------------------------------

    def _latency(self, trips_per_s: float) -> LatencyRun:
        settings = self.settings
        name = f"d{trips_per_s:g}"
        prefix = self.namespaces.create(name)
        trips = settings.latency_trips(trips_per_s)
        predictor = self._predictor(prefix, name, "p1")
        watch = GroupWatch(
            self._admin, prefix + PREDICTOR_GROUP, prefix + NEW_TRIPS, settings.partitions
        )
        log.info(
            "(latency) %g trips/s: %d trips, the first %g s warm-up",
            trips_per_s,
            trips,
            settings.latency_warmup,
        )
        self._start_and_join([predictor], watch)
        producer = self._producer(prefix, name, trips, "--rate", f"{trips_per_s:g}")
        watcher = Watcher(self.config, prefix + ML_PREDICTIONS, settings.partitions)
        trip_watcher = Watcher(self.config, prefix + NEW_TRIPS, settings.partitions)
        try:
            self._start(producer)
            machine_start = machine_ticks()
            moved = Progress(time.monotonic(), 0)
            while len(watcher.seen) < trips:
                # Short waits on both, so that neither notes its records late.
                trip_watcher.poll(WATCH_S)
                if watcher.poll(WATCH_S):
                    moved = Progress(time.monotonic(), len(watcher.seen))
                what = f"{len(watcher.seen)} of {trips} predictions seen"
                self._check([predictor], moved, what)
                if producer.exit_code not in (None, 0):
                    raise BenchError(
                        f"{producer.name} exited with {producer.exit_code}; see {producer.log_path}"
                    )
            machine_end = machine_ticks()
            # It ends by itself once the trips' ends (due 2-5 s after their starts) are sent.
            self._wait_for_exit(producer)
        finally:
            watcher.close()
            trip_watcher.close()
        self._stop([predictor, producer])
        predictions = [(at, decode(value, Prediction)) for at, value in watcher.seen]
        run = LatencyRun(
            rate=trips_per_s,
            trips=trips,
            seen=tuple(
                Seen(p.trip_started_at.timestamp(), p.predicted_at.timestamp(), at)
                for at, p in predictions
            ),
            distinct=len({p.trip_id for _, p in predictions}),
            trips_visible=tuple(
                (decode(value, TripStarted).produced_at.timestamp(), at)
                for at, value in trip_watcher.seen
            ),
            warmup_s=settings.latency_warmup,
            machine_busy=busy_share(machine_start, machine_end),
        )
        log.info("(latency) %g trips/s: visible %s", trips_per_s, run.visible_ms())
        return run

    # -- switch: promotions and rollbacks under a steady load ------------------------------

    def _switch(self) -> SwitchRun:
        settings = self.settings
        prefix = self.namespaces.create("switch")
        predictor = self._predictor(prefix, "switch", "p1")
        registry = self._registry(prefix)
        challenger = self._challenger_record()
        registry.publish(challenger)  # a version in the registry, with no role yet
        decided_before = len(registry.history())
        watch = GroupWatch(
            self._admin, prefix + PREDICTOR_GROUP, prefix + NEW_TRIPS, settings.partitions
        )
        log.info(
            "(switch) %s: %d switches at %g trips/s",
            PARTS["switch"],
            settings.switches,
            settings.switch_rate,
        )
        self._start_and_join([predictor], watch)
        # It loops over the trips until stopped; the limit only bounds a run left behind.
        limit = round(settings.switch_rate * 3600)
        producer = self._producer(
            prefix, "switch", limit, "--rate", f"{settings.switch_rate:g}", "--loop"
        )
        watcher = _VersionWatch(
            self,
            Watcher(self.config, prefix + ML_PREDICTIONS, settings.partitions),
            [predictor, producer],
        )
        seen: list[tuple[str, float, int]] = []  # (new champion, seen at, predictions between)
        try:
            self._start(producer)
            machine_start = machine_ticks()
            while not watcher.versions:
                watcher.read(POLL_S)
            watcher.read(settings.switch_gap)
            for number in range(settings.switches):
                decision = self._next_switch(registry, challenger.version, number)
                assert decision.champion is not None
                mark = len(watcher.versions)
                registry.decide(decision)
                seen.append(watcher.first_of(decision.champion, mark, predictor.log_path))
                log.info("(switch) %s %s: seen predicting", decision.action, decision.champion)
                watcher.read(settings.switch_gap)
            machine_end = machine_ticks()
            self._stop([producer])
            started, distinct_started = records_of(self.config, prefix + NEW_TRIPS)
            watcher.wait_for(started, [predictor])
        finally:
            watcher.close()
        self._stop([predictor, producer])
        decisions = [
            (at, decode(value, DeploymentDecision))
            for at, value in timestamped_values(self.config, prefix + MODEL_DEPLOYMENTS)
        ][decided_before:]
        predictions = [
            decode(m.value(), Prediction) for m in read_to_end(self.config, prefix + ML_PREDICTIONS)
        ]
        run = SwitchRun(
            rate=settings.switch_rate,
            switches=tuple(
                Switch(decision.action, version, at - written, between)
                for (written, decision), (version, at, between) in zip(decisions, seen, strict=True)
            ),
            started=started,
            distinct_started=distinct_started,
            predictions=len(predictions),
            distinct_predicted=len({p.trip_id for p in predictions}),
            by_version=Counter(p.model_version for p in predictions),
            machine_busy=busy_share(machine_start, machine_end),
        )
        log.info("(switch) %s", run.to_json()["switch_ms"])
        return run

    def _next_switch(
        self, registry: ModelRegistry, challenger: str, number: int
    ) -> DeploymentDecision:
        """Switch `number` (from 0): promote the challenger, then roll back, and so on."""
        history = registry.history()
        decider = Decider(whoami())
        reason = f"taxi bench switch {number + 1} of {self.settings.switches}"
        try:
            if number % 2 == 0:
                return decider.promote(history, challenger, set(registry.raw_records()), reason)
            return decider.rollback(history, reason)
        except DeploymentError as exc:
            raise BenchError(f"switch {number + 1}: {exc}") from exc

    # -- models ------------------------------------------------------------------------------

    def _registry(self, prefix: str) -> ModelRegistry:
        return ModelRegistry(self.config, RegistryTopics.prefixed(prefix))

    def _challenger_record(self) -> RegistryRecord:
        """The challenger's record, checked as the predictor checks it (once)."""
        if self._challenger is None:
            if self.challenger_path is None:
                raise BenchError("shadow and switch need a challenger model")
            self._challenger = record_of(self.challenger_path)
        return self._challenger

    def _deploy_challenger(self, prefix: str) -> None:
        registry = self._registry(prefix)
        record = self._challenger_record()
        history = registry.history()
        try:
            decision = Decider(whoami()).publish(
                history, record.version, "challenger", "taxi bench shadow"
            )
        except DeploymentError as exc:
            raise BenchError(f"the challenger: {exc}; give another --challenger") from exc
        registry.publish(record)
        registry.decide(decision)

    # -- processes -------------------------------------------------------------------------

    @property
    def _admin(self) -> AdminClient:
        return self.namespaces.admin

    def _batch_args(self) -> list[str]:
        return [
            *("--batch-size", str(self.settings.batch_size)),
            *("--batch-wait", str(self.settings.batch_wait)),
        ]

    def _start(self, child: Child) -> None:
        """Start a measured process: a service as its own principal on a secure cluster, the
        bench's own designs (passthrough, naive) as admin, like the rest of the harness."""
        principal = child.principal if child.principal in SERVICE_PRINCIPALS else ADMIN_PRINCIPAL
        child.start({"TAXI_LOG_LEVEL": "INFO", **self.cluster.service_env(principal)})

    def _child(self, name: str, *args: str) -> Child:
        child = Child(name, list(args), 0, self.logs / f"{name}.log")
        self._children.append(child)
        return child

    def _predictor(self, prefix: str, part: str, instance: str) -> Child:
        registry = self._registry(prefix)
        ensure_champion(registry, self.model_path, f"taxi bench {part}")
        return self._child(
            f"{part}-predictor-{instance}",
            "taxi-predictor",
            *("--topic-prefix", prefix),
            *("--instance", prefix + instance),
            *self._batch_args(),
            *(["--compiled-trees"] if self.settings.compiled_trees else []),
        )

    def _producer(self, prefix: str, part: str, trips: int, *extra: str) -> Child:
        return self._child(
            f"{part}-producer",
            "taxi-producer",
            *("--source", "train", "--data", str(self.trips_csv), "--no-progress"),
            *("--topic-prefix", prefix, "--instance", prefix.rstrip(".")),
            *("--limit", str(trips), *extra),
        )

    def _start_and_join(self, children: Sequence[Child], watch: GroupWatch) -> None:
        """Start the members of `watch`'s group; return once they hold all the partitions."""
        for child in children:
            self._start(child)
        started = Progress(time.monotonic(), 0)
        while not watch.ready(len(children)):
            self._check(children, started, f"{watch.group} to hold its partitions", JOIN_TIMEOUT)
            time.sleep(POLL_S)

    def _start_and_warm_up(self, children: Sequence[Child], watch: OutputWatch) -> None:
        """Start a design that joins no group and assigns itself every partition (bytewax);
        return once it has written a prediction of the warm-up trip start written to each
        partition of `watch`'s topic: it then reads them all, its model loaded."""
        for child in children:
            self._start(child)
        _, value = self._trip_starts()[0]
        warm_ups = write_to_each_partition(
            self.config, watch.topic, self.settings.partitions, value, WARMUP_KEY
        )
        started = Progress(time.monotonic(), 0)
        while watch.written() < warm_ups:
            waiting_for = f"{watch.sink} to hold the predictions of {warm_ups} warm-up records"
            self._check(children, started, waiting_for, JOIN_TIMEOUT)
            time.sleep(POLL_S)

    def _wait_for_exit(self, child: Child, timeout: float = STALL_TIMEOUT) -> None:
        assert child.process is not None
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{child.name} did not finish; see {child.log_path}") from exc

    def _check(
        self,
        children: Sequence[Child],
        moved: Progress,
        waiting_for: str,
        timeout: float = STALL_TIMEOUT,
    ) -> None:
        """Raise BenchError if one of `children` ended, or nothing moved for `timeout` s."""
        for child in children:
            if child.exit_code is not None:
                raise BenchError(
                    f"{child.name} exited with {child.exit_code}; see {child.log_path}"
                )
        if time.monotonic() - moved.time > timeout:
            raise BenchError(f"waited {timeout:.0f} s for {waiting_for}")

    def _stop(self, children: Sequence[Child]) -> None:
        """Stop the children cleanly; an exit code but 0 is an error."""
        codes = {c.name: c.exit_code for c in children if c.exit_code is not None}
        codes |= stop_all(children)
        failed = {name: code for name, code in codes.items() if code != 0}
        if failed:
            raise BenchError(f"exit codes {failed}; see the logs in {self.logs}")


class _VersionWatch:
    """A read_committed reader of a predictor's predictions that decodes their model version
    as they come, while checking that `children` keep running and predictions keep coming."""

    def __init__(self, bench: Bench, watcher: Watcher, children: Sequence[Child]) -> None:
        self._bench = bench
        self._watcher = watcher
        self._children = children
        self.versions: list[str] = []  # of the predictions seen, in the order seen
        self._moved = Progress(time.monotonic(), 0)

    def read(self, seconds: float) -> None:
        """Read what becomes visible for `seconds` (one short poll at least)."""
        until = time.monotonic() + seconds
        seen = self._watcher.seen
        while True:
            if self._watcher.poll(WATCH_S):
                self._moved = Progress(time.monotonic(), len(seen))
                self.versions += [
                    decode(value, Prediction).model_version
                    for _, value in seen[len(self.versions) :]
                ]
            self._bench._check(self._children, self._moved, "predictions under a steady load")
            if time.monotonic() >= until:
                return

    def first_of(self, version: str, mark: int, log_path: Path) -> tuple[str, float, int]:
        """Wait for the first prediction by `version` after the first `mark` seen: the
        version, when it was seen (epoch s), and how many were seen between."""
        deadline = time.monotonic() + STALL_TIMEOUT
        while version not in self.versions[mark:]:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"no prediction by {version} within {STALL_TIMEOUT:.0f} s of the decision "
                    f"that made it champion; see {log_path}"
                )
            self.read(WATCH_S)
        first = self.versions.index(version, mark)
        return version, self._watcher.seen[first][0], first - mark

    def wait_for(self, count: int, children: Sequence[Child]) -> None:
        """Read until `count` predictions were seen, or none came for the stall timeout (a
        trip skipped keeps the count short: the report says so), checking on `children`."""
        self._children = children
        self._moved = Progress(time.monotonic(), len(self.versions))
        while len(self.versions) < count:
            try:
                self.read(POLL_S)
            except BenchError:
                log.warning("(switch) %d of %d trips predicted", len(self.versions), count)
                return

    def close(self) -> None:
        self._watcher.close()


def reproduce(settings: Settings, bootstrap_servers: str | None, *, secure: bool = False) -> str:
    """The command line that repeats this run."""
    words = [
        "taxi bench",
        f"--records {settings.records}",
        f"--repeat {settings.repeat}",
        f"--naive-records {settings.naive_records}",
        f"--quix-records {settings.quix_records}",
        f"--quix-batched-records {settings.quix_batched_records}",
        f"--latency-seconds {settings.latency_seconds:g}",
        f"--latency-warmup {settings.latency_warmup:g}",
        "--latency-rates " + ",".join(f"{r:g}" for r in settings.latency_rates),
        f"--batch-size {settings.batch_size}",
        f"--batch-wait {settings.batch_wait:g}",
    ]
    if "switch" in settings.parts:
        words += [
            f"--switch-rate {settings.switch_rate:g}",
            f"--switches {settings.switches}",
            f"--switch-gap {settings.switch_gap:g}",
        ]
    if settings.parts != PARTS.keys():
        words.append("--only " + ",".join(p for p in PARTS if p in settings.parts))
    if bootstrap_servers:
        words.append(f"--bootstrap-servers {bootstrap_servers}")
    if secure:
        words.append("--secure")
    if settings.profile:
        words.append(f"--profile --profile-rate {settings.profile_rate}")
    if settings.compiled_trees:
        words.append("--compiled-trees")
    return " ".join(words)


def train_challenger(workdir: Path) -> Path:
    """A second model for shadow and switch, trained on other synthetic trips than the
    champion's: another version (a model cannot challenge itself)."""
    path = workdir / "challenger" / "taxi_pipeline.skops"
    path.parent.mkdir(parents=True)
    log.info("training a challenger on %d synthetic trips", CHALLENGER_ROWS)
    train_and_save(
        generate_trips(rows=CHALLENGER_ROWS, seed=CHALLENGER_SEED),
        f"synthetic rows={CHALLENGER_ROWS} seed={CHALLENGER_SEED} (taxi bench challenger)",
        path,
    )
    return path


def measure(
    settings: Settings,
    *,
    bootstrap_servers: str | None,
    model_path: Path,
    challenger_path: Path | None = None,
    secure: bool = False,
) -> dict[str, Any]:
    """Run the bench on the cluster at `bootstrap_servers` (None: a scratch one) and return
    its report. With `secure`, the same parts run again on a secure scratch cluster (SASL_SSL,
    each service as its own principal), and the report sets the two side by side. shadow and
    switch deploy `challenger_path` (None: one trained here). Raises BenchError, ClusterError
    or KafkaException; its files are then kept."""
    began = time.monotonic()
    load_before = os.getloadavg()
    # Before anything runs: a profile asked for and impossible stops the run here.
    spy = pyspy.executable() if settings.profile else None
    workdir = Path(tempfile.mkdtemp(prefix="taxi-bench-"))
    securities = (PLAINTEXT, SASL_SSL) if secure else (PLAINTEXT,)
    runs: dict[str, tuple[Results, BenchCluster, int]] = {}
    try:
        trips_csv, _ = write_synthetic(
            workdir, rows=settings.trips_needed, seed=TRIPS_SEED, test_rows=0
        )
        if challenger_path is None and settings.parts & {"shadow", "switch"}:
            challenger_path = train_challenger(workdir)
        challenger_version = (
            None if challenger_path is None else load_model(challenger_path).version
        )
        trips = read_trips(trips_csv).frame
        # One cluster after the other, the same parts on each.
        for security in securities:
            with cluster_at(bootstrap_servers, security) as cluster:
                namespaces = Namespaces.on(cluster, uuid.uuid4().hex[:8])
                brokers = len(namespaces.admin.list_topics(timeout=10).brokers)
                try:
                    results = Bench(
                        cluster,
                        settings,
                        namespaces=namespaces,
                        model_path=model_path,
                        trips=trips,
                        trips_csv=trips_csv,
                        logs=workdir / "logs" / security.lower(),
                        challenger_path=challenger_path,
                        spy=spy,
                    ).run()
                finally:
                    namespaces.delete_all()
            runs[security] = (results, cluster, brokers)
    except BaseException:
        log.warning("the bench's trips and process logs are kept in %s", workdir)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    results, cluster, brokers = runs[PLAINTEXT]
    environment = {
        **provenance(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cluster": "scratch" if cluster.scratch else "existing",
        "security": list(securities),
        "kafka_version": cluster.kafka_version,
        "brokers": brokers,
        # What the scratch brokers ran with: the JIT, above all, changes every figure.
        "broker_jvm_options": [*JVM_OPTIONS, *cluster.scratch.jvm_options]
        if cluster.scratch
        else None,
        "partitions": settings.partitions,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "model_version": load_model(model_path).version,
        "challenger_version": challenger_version,
        "duration_s": round(time.monotonic() - began, 1),
    }
    return report(
        results,
        secure=runs[SASL_SSL][0] if secure else None,
        environment=environment,
        settings={
            "records": settings.records,
            "repeat": settings.repeat,
            "naive_records": settings.naive_records,
            "quix_records": settings.quix_records,
            "quix_batched_records": settings.quix_batched_records,
            "quix_batched_window": QUIX_WINDOW,
            "latency_seconds": settings.latency_seconds,
            "latency_warmup": settings.latency_warmup,
            "latency_rates": list(settings.latency_rates),
            "switch_rate": settings.switch_rate,
            "switches": settings.switches,
            "switch_gap": settings.switch_gap,
            "parts": sorted(settings.parts),
            "predictor_batch_size": settings.batch_size,
            "predictor_batch_wait": settings.batch_wait,
            "predictor_model_threads": MODEL_THREADS,
            "predictor_compiled_trees": settings.compiled_trees,
            "profile": settings.profile,
            "profile_rate": settings.profile_rate if settings.profile else None,
            "command": reproduce(settings, bootstrap_servers, secure=secure),
        },
        notes=NOTES,
    )


NOTES = [
    "passthrough, predictor, two-predictors and naive drain a backlog written beforehand in one "
    "open transaction and "
    "committed once the consumer group holds every partition; their rate is committed input "
    "records per second from then until all are committed. Starting, loading the model and "
    "joining do not count, for any design.",
    "passthrough, predictor, two-predictors and shadow take turns, one backlog each per round, "
    "--repeat rounds, and the "
    "fastest drain of each counts: the brokers speed up through a run as their JIT compiles, "
    "so a design measured first would meet them cold. While one design drains, the others "
    "idle, polling.",
    "predictor, two-predictors and latency run the real taxi-predictor process, latency and "
    "replay the real taxi-producer, "
    "each on topics and groups of its own (--topic-prefix).",
    "Latency is the time a read_committed reader sees a prediction minus its trip's "
    "produced_at (trip_started_at), over trips started after the warm-up; 'predicted' is the "
    "part up to the predictor's batch (predicted_at).",
    "shadow is predictor with a challenger deployed (decided before it starts, so it runs "
    "with both models from its first batch): every batch is predicted by both and written to "
    "ml_predictions and shadow_predictions in one transaction; shadow_over_predictor is its "
    "cost.",
    "switch: one predictor under a producer at --switch-rate; the challenger is promoted, "
    "rolled back, promoted... (--switches), --switch-gap s apart. Each switch is from the "
    "decision record's timestamp (when it was produced) to the moment a read_committed reader "
    "of ml_predictions sees the new champion's first prediction. Afterwards every trip "
    "started must have exactly one prediction (exactly_once).",
    "Peers: quix runs the same job in quix-streams as its users write it (benchmarks/"
    "peer_quix.py): an Application with processing_guarantee='exactly-once', the JSON topic, "
    "sdf.apply calling the predictor's model on one record at a time (one frame, features and "
    "model call each), sdf.to_topic; it drains --quix-records trip starts, followed by its "
    "group's committed offsets. quix-batched is quix-streams' own way to handle records of "
    "many keys at once (apply, update, filter and to_topic take one record; windows gather "
    "records per key): group_by one key (through a repartition topic), a tumbling count window "
    "of 1,000 trips collect()ed, then apply(expand=True) predicting the window in one model "
    "call, to_topic keyed by trip id; exactly once too. Its input offsets commit once "
    "re-keyed, before the trips are predicted, so its rate is predictions seen by a "
    "read_committed reader per second, over --quix-batched-records trips (whole windows: a "
    "window emits only once full). bytewax (benchmarks/peer_bytewax.py) reads "
    "Kafka in batches, predicts each batch with one model call (flat_map_batch) and writes "
    "with a plain idempotent producer, flushing per batch: at-least-once, with no recovery "
    "store configured (its fastest). It commits no offsets and assigns itself the partitions, "
    "so it is started, then predicts a warm-up trip start written to each partition, and only "
    "then gets its backlogs; its rate is predictions written (end offsets of its output topic) "
    "per second, not committed offsets. Both decode JSON, build the model's frame, predict, "
    "encode JSON and produce per trip, like the predictor, with its producer settings (lz4, "
    "idempotent, acks=all) and one model thread; quix commits every second (commit_interval "
    "1 s, not its default 5 s, which would add up to 5 s after the last trip of a short "
    "drain). They run after the raced parts, on brokers at least as warm. "
    "parts.<peer>.guarantee says what each guarantees; predictor_vs_quix (>= 20) and "
    "predictor_vs_bytewax (>= 1) are targets, quix-batched has none.",
    "With --secure, the same parts run again on a second scratch cluster, SASL_SSL (TLS 1.3, "
    "SCRAM-SHA-512) with ACLs, after the plaintext one is stopped: the services as their own "
    "principals, the bench's own clients and designs (passthrough, naive) as admin. "
    "secure_over_plaintext divides each secure figure by the plaintext one of the same run.",
    "The machine may be shared: brokers, the measured processes and the bench use the same "
    "cores, often with other work; machine_busy (share of all cores busy during a part) and "
    "the load averages say how loaded it was.",
]
