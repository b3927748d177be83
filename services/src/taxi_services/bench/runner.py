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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import pandas as pd
from confluent_kafka.admin import AdminClient

from taxi_events import Prediction, TripStarted, decode, encode
from taxi_kafka import (
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    NEW_TRIPS,
    PREDICTOR_GROUP,
    PRODUCER_CHECKPOINTS,
    KafkaConfig,
)
from taxi_model import load_model, read_trips, write_synthetic
from taxi_services.bench.cluster import Backlog, Namespaces, cluster_at
from taxi_services.bench.figures import Progress, Seen, busy_share, replay_rate
from taxi_services.bench.probes import (
    GroupWatch,
    Watcher,
    cpu_reading,
    machine_ticks,
    records_of,
    timestamped_values,
)
from taxi_services.bench.results import (
    PARTS,
    Drain,
    LatencyRun,
    ReplayRun,
    Results,
    Throughput,
    report,
)
from taxi_services.predictor import MODEL_THREADS
from taxi_services.provenance import provenance
from taxi_services.registry import ModelRegistry, RegistryTopics, ensure_champion
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
# The output topics (and consumer groups) of passthrough and naive, in the backlog's namespace.
PLAIN, NAIVE = "bench-plain", "bench-naive"
# The synthetic trips every run replays.
TRIPS_SEED = 2024


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
    repeat: int  # backlogs passthrough, predictor and two-predictors drain; the fastest counts

    def latency_trips(self, rate: float) -> int:
        return round(rate * (self.latency_warmup + self.latency_seconds))

    @property
    def trips_needed(self) -> int:
        """Rows of trip data the run replays at most."""
        needed = (
            [self.records]
            if self.parts & {"passthrough", "predictor", "two-predictors", "replay"}
            else []
        )
        if "naive" in self.parts:
            needed.append(self.naive_records)
        if "latency" in self.parts:
            needed += [self.latency_trips(r) for r in self.latency_rates]
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

    @property
    def design(self) -> str:
        command = " ".join(self.children[0].args[: self.command_words])
        return f"{len(self.children)} x {command}"


class Bench:
    def __init__(
        self,
        config: KafkaConfig,
        settings: Settings,
        *,
        namespaces: Namespaces,
        model_path: Path,
        trips: pd.DataFrame,
        trips_csv: Path,
        logs: Path,
    ) -> None:
        self.config = config
        self.settings = settings
        self.namespaces = namespaces
        self.model_path = model_path
        self.trips = trips
        self.trips_csv = trips_csv
        self.logs = logs
        self.env = {"KAFKA_BOOTSTRAP_SERVERS": config.bootstrap_servers, "TAXI_LOG_LEVEL": "INFO"}
        self._children: list[Child] = []
        self._encoded: list[tuple[bytes, bytes]] | None = None

    def run(self) -> Results:
        parts = self.settings.parts
        results = Results(throughput={}, latency={})
        try:
            contenders = [
                self._contender(p)
                for p in ("passthrough", "predictor", "two-predictors")
                if p in parts
            ]
            if contenders:
                results.throughput |= self._race(
                    contenders, rounds=self.settings.repeat, records=self.settings.records
                )
            if "naive" in parts:
                results.throughput |= self._race(
                    [self._contender("naive")], rounds=1, records=self.settings.naive_records
                )
            if "replay" in parts:
                results.replay = self._replay()
            if "latency" in parts:
                for trips_per_s in self.settings.latency_rates:
                    results.latency[trips_per_s] = self._latency(trips_per_s)
        finally:
            stop_all(self._children)
        return results

    # -- throughput: passthrough, predictor, two-predictors, naive ----------------------------

    def _contender(self, part: str) -> Contender:
        """The processes of a throughput part, in a namespace of their own (not started)."""
        if part in ("predictor", "two-predictors"):
            prefix = self.namespaces.create(part)
            instances = 1 if part == "predictor" else 2
            predictors = [self._predictor(prefix, part, f"p{i}") for i in range(1, instances + 1)]
            return Contender(part, predictors, prefix, group=PREDICTOR_GROUP, sink=ML_PREDICTIONS)
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

    def _race(
        self, contenders: Sequence[Contender], *, rounds: int, records: int
    ) -> dict[str, Throughput]:
        """Start every contender, then have each drain a backlog of `records` trip starts in
        turn, `rounds` times.

        The brokers' JIT keeps speeding them up through a run (a design's first drains can be
        half as fast as its last); taking turns, every design meets them about as warm.
        """
        watches = {}
        for contender in contenders:
            watches[contender.part] = GroupWatch(
                self._admin,
                contender.prefix + contender.group,
                contender.prefix + NEW_TRIPS,
                self.settings.partitions,
            )
            self._start_and_join(contender.children, watches[contender.part])
        drains: dict[str, list[Drain]] = {c.part: [] for c in contenders}
        for round_number in range(1, rounds + 1):
            for contender in contenders:
                part = contender.part
                log.info("(%s) %s: round %d of %d", part, PARTS[part], round_number, rounds)
                watch = watches[part]
                drain = self._drain_one(contender.children, watch, self._trip_starts()[:records])
                log.info("(%s) %d records/s", part, drain.records_per_s)
                drains[part].append(drain)
        results = {}
        for contender in contenders:
            self._stop(contender.children)
            outputs, distinct = records_of(self.config, contender.prefix + contender.sink)
            results[contender.part] = Throughput(
                contender.part,
                processes=contender.design,
                drains=tuple(drains[contender.part]),
                processed=sum(d.end.count for d in drains[contender.part]),
                outputs=outputs,
                distinct_outputs=distinct,
            )
        return results

    def _drain_one(
        self, children: Sequence[Child], watch: GroupWatch, records: list[tuple[bytes, bytes]]
    ) -> Drain:
        """Write a hidden backlog while the members idle, reveal it, and follow the group's
        committed offsets until all of it is committed."""
        backlog = Backlog(self.config, watch.topic, records)
        try:
            start = watch.progress(backlog)
            backlog.release()
        except BaseException:
            backlog.abort()
            raise
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
            self._check(children, moved, f"{now.count} of {backlog.count} records committed")
        cpu_end, machine_end = cpu_reading(pids)
        return Drain(start, now, cpu_end - cpu_start, busy_share(machine_start, machine_end))

    def _trip_starts(self) -> list[tuple[bytes, bytes]]:
        """Encoded trip starts (key, value) for the backlogs, made once."""
        if self._encoded is None:
            count = max(self.settings.records, self.settings.naive_records)
            step = Replay(self.trips, "train").step(int(time.time() * 1000), count)
            self._encoded = [(e.trip_id.encode(), encode(e)) for e in step.started]
        return self._encoded

    # -- replay: the producer at full speed -------------------------------------------------

    def _replay(self) -> ReplayRun:
        prefix = self.namespaces.create("replay")
        trips = self.settings.records
        producer = self._producer(prefix, "replay", trips)
        log.info("(replay) %s: %d trips", PARTS["replay"], trips)
        producer.start(self.env)
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
            producer.start(self.env)
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

    # -- processes -------------------------------------------------------------------------

    @property
    def _admin(self) -> AdminClient:
        return self.namespaces.admin

    def _batch_args(self) -> list[str]:
        return [
            *("--batch-size", str(self.settings.batch_size)),
            *("--batch-wait", str(self.settings.batch_wait)),
        ]

    def _child(self, name: str, *args: str) -> Child:
        child = Child(name, list(args), 0, self.logs / f"{name}.log")
        self._children.append(child)
        return child

    def _predictor(self, prefix: str, part: str, instance: str) -> Child:
        registry = ModelRegistry(self.config, RegistryTopics.prefixed(prefix))
        ensure_champion(registry, self.model_path, f"taxi bench {part}")
        return self._child(
            f"{part}-predictor-{instance}",
            "taxi-predictor",
            *("--topic-prefix", prefix),
            *("--instance", prefix + instance),
            *self._batch_args(),
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
            child.start(self.env)
        started = Progress(time.monotonic(), 0)
        while not watch.ready(len(children)):
            self._check(children, started, f"{watch.group} to hold its partitions", JOIN_TIMEOUT)
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


def reproduce(settings: Settings, bootstrap_servers: str | None) -> str:
    """The command line that repeats this run."""
    words = [
        "taxi bench",
        f"--records {settings.records}",
        f"--repeat {settings.repeat}",
        f"--naive-records {settings.naive_records}",
        f"--latency-seconds {settings.latency_seconds:g}",
        f"--latency-warmup {settings.latency_warmup:g}",
        "--latency-rates " + ",".join(f"{r:g}" for r in settings.latency_rates),
        f"--batch-size {settings.batch_size}",
        f"--batch-wait {settings.batch_wait:g}",
    ]
    if settings.parts != PARTS.keys():
        words.append("--only " + ",".join(p for p in PARTS if p in settings.parts))
    if bootstrap_servers:
        words.append(f"--bootstrap-servers {bootstrap_servers}")
    return " ".join(words)


def measure(
    settings: Settings, *, bootstrap_servers: str | None, model_path: Path
) -> dict[str, Any]:
    """Run the bench on the cluster at `bootstrap_servers` (None: a scratch one) and return
    its report. Raises BenchError, ClusterError or KafkaException; its files are then kept."""
    began = time.monotonic()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="taxi-bench-"))
    try:
        trips_csv, _ = write_synthetic(
            workdir, rows=settings.trips_needed, seed=TRIPS_SEED, test_rows=0
        )
        with cluster_at(bootstrap_servers) as cluster:
            config = KafkaConfig.from_env(bootstrap_servers=cluster.bootstrap_servers)
            namespaces = Namespaces.on(config, uuid.uuid4().hex[:8])
            brokers = len(namespaces.admin.list_topics(timeout=10).brokers)
            try:
                results = Bench(
                    config,
                    settings,
                    namespaces=namespaces,
                    model_path=model_path,
                    trips=read_trips(trips_csv).frame,
                    trips_csv=trips_csv,
                    logs=workdir / "logs",
                ).run()
            finally:
                namespaces.delete_all()
    except BaseException:
        log.warning("the bench's trips and process logs are kept in %s", workdir)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    environment = {
        **provenance(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cluster": "scratch" if cluster.scratch else "existing",
        "kafka_version": cluster.kafka_version,
        "brokers": brokers,
        "partitions": settings.partitions,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "model_version": load_model(model_path).version,
        "duration_s": round(time.monotonic() - began, 1),
    }
    return report(
        results,
        environment=environment,
        settings={
            "records": settings.records,
            "repeat": settings.repeat,
            "naive_records": settings.naive_records,
            "latency_seconds": settings.latency_seconds,
            "latency_warmup": settings.latency_warmup,
            "latency_rates": list(settings.latency_rates),
            "parts": sorted(settings.parts),
            "predictor_batch_size": settings.batch_size,
            "predictor_batch_wait": settings.batch_wait,
            "predictor_model_threads": MODEL_THREADS,
            "command": reproduce(settings, bootstrap_servers),
        },
        notes=NOTES,
    )


NOTES = [
    "passthrough, predictor, two-predictors and naive drain a backlog written beforehand in one "
    "open transaction and "
    "committed once the consumer group holds every partition; their rate is committed input "
    "records per second from then until all are committed. Starting, loading the model and "
    "joining do not count, for any design.",
    "passthrough, predictor and two-predictors take turns, one backlog each per round, "
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
    "The machine may be shared: brokers, the measured processes and the bench use the same "
    "cores, often with other work; machine_busy (share of all cores busy during a part) and "
    "the load averages say how loaded it was.",
]
