"""One chaos scenario from start to report: a fresh cluster, a fixed set of synthetic trips,
the pipeline as real processes, the fault midway, the drain, then the checker on everything
the topics hold (read_committed)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from taxi_events import (
    POISON_PREFIX,
    DeadLetter,
    EventDecodeError,
    ModelMetrics,
    Prediction,
    Source,
    TripFinished,
    decode,
)
from taxi_kafka import (
    DEAD_LETTERS,
    FINISHED_TRIPS,
    ML_PREDICTIONS,
    MODEL_METRICS,
    NEW_TRIPS,
    SHADOW_PREDICTIONS,
    read_to_end,
)
from taxi_kafka.cluster import (
    PLAINTEXT,
    SASL_SSL,
    ClusterError,
    HostNetwork,
    LocalCluster,
    hosts_unavailable,
    pid_alive,
    read_cmdline,
    scratch_cluster,
    send_signal,
    wait_gone,
)
from taxi_model import read_trips, write_synthetic
from taxi_services.chaos.checker import MetricsRecord, Observed, Stamped, Timeline, check
from taxi_services.chaos.pipeline import Pipeline, Replayed
from taxi_services.chaos.scenarios import FaultRun, Scenario, now_ms

log = logging.getLogger("taxi.chaos")

SEED = 2016
START_TIMEOUT_S = 180.0  # every service up (imports, model, trips) on a busy box
# Waits give up when no service has read or started anything for this long: longer than the
# aggregator's join TTL (120 s) plus a window and its grace, the time a lost record's partner
# takes to expire and be counted unmatched.
STALL_S = 180.0
STOP_TIMEOUT_S = 30.0
IN_SYNC_TIMEOUT_S = 120.0  # a healed broker catching up on its partitions
# Aborted reads: the predictor aborts, once, a batch holding one trip in about this many (on
# purpose, with poison records in it), and the checker proves no reader ever saw those.
DELIBERATE_ABORTS_EVERY = 500
INTERRUPTED_STOP_TIMEOUT_S = 10.0
LEFTOVER_STOP_TIMEOUT_S = 15.0
WAIT_STEP_S = 1.0
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class RunOptions:
    trips: int
    rate: float | None  # trips/s, both producers together; None: the scenario's default
    model_path: Path
    keep: bool = False
    secure: bool = False  # on a SASL_SSL cluster, each service its own principal
    hosts: bool = False  # every broker and service on a test host of its own


class _ScenarioFailedError(Exception):
    """Raised inside the scratch cluster's block so that it keeps the folder and its logs."""


def run_scenario(scenario: Scenario, options: RunOptions, marker: str) -> dict[str, Any]:
    """Run `scenario` on a cluster of its own, in a folder whose name starts with `marker`;
    its JSON-ready report. A failed scenario's folder (service logs included) is kept."""
    began = time.monotonic()
    rate = options.rate or options.trips / scenario.nominal_s
    hosts = options.hosts or scenario.needs_hosts
    if hosts and (reason := hosts_unavailable()):
        log.warning("%s: skipped: %s", scenario.name, reason)
        return {"scenario": scenario.name, "passed": None, "skipped": reason, "problems": []}
    log.info("%s: %s; %d trips at %.0f/s", scenario.name, scenario.summary, options.trips, rate)
    body: dict[str, Any] = {}
    problems: list[str] = []
    folder: Path | None = None
    try:
        with scratch_cluster(
            f"{marker}{scenario.name}-",
            keep=options.keep,
            security=SASL_SSL if options.secure else None,
            hosts=hosts,
        ) as cluster:
            folder = cluster.runtime_dir
            log.info(
                "%s: cluster %s (%s) in %s",
                scenario.name,
                cluster.bootstrap_servers,
                cluster.security,
                folder,
            )
            body, problems = _run(scenario, cluster, options, rate)
            if cluster.network is not None:
                body["network"] = network_report(cluster.network)
            if problems:
                raise _ScenarioFailedError
    except _ScenarioFailedError:
        pass
    except Exception as exc:  # the run itself broke: a failed scenario, with the reason
        log.exception("%s: the run failed", scenario.name)
        problems.append(f"the run failed: {exc}")
    if folder is not None:
        left = stop_leftovers(folder.name)
        if left:
            problems.append(f"still running after the scenario (now stopped): {left}")
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "security": SASL_SSL if options.secure else PLAINTEXT,
        "passed": not problems,
        "problems": problems,
        **body,
        "seconds": round(time.monotonic() - began, 1),
    }
    if folder is not None:
        report["run"] = folder.name
        if problems or options.keep:
            report["logs"] = str(folder / "logs")
    if problems:
        log.error(
            "%s FAILED: %s; service logs in %s",
            scenario.name,
            "; ".join(problems),
            report.get("logs", "(none: the run failed before it had a folder)"),
        )
    else:
        log.info("%s passed in %.0f s", scenario.name, report["seconds"])
    return report


def _run(
    scenario: Scenario, cluster: LocalCluster, options: RunOptions, rate: float
) -> tuple[dict[str, Any], list[str]]:
    folder = cluster.runtime_dir
    trips, replays = write_trips(folder / "trips", options.trips, rate)
    pipeline = Pipeline(
        instance=scenario.arrange(cluster, folder.name),
        cluster=cluster,
        model_path=options.model_path,
        replays=replays,
        logs=folder / "logs",
        predictor_args=["--deliberate-aborts", str(DELIBERATE_ABORTS_EVERY)],
    )
    fault = FaultRun(cluster, pipeline)
    problems: list[str] = []
    try:
        half = options.trips // 2
        origin_ms = now_ms()
        pipeline.start_all(START_TIMEOUT_S)
        log.info("%s: every service is up; the fault strikes at trip %d", scenario.name, half)
        problems += wait_for(
            pipeline,
            "half the trips started",
            lambda: pipeline.started() >= half or pipeline.producers_done(),
        )
        scenario.inject(fault)
        problems += wait_for(pipeline, "the producers to finish", pipeline.producers_done)
        problems += wait_for(pipeline, "every trip scored", pipeline.drained)
    except BaseException:
        pipeline.stop(INTERRUPTED_STOP_TIMEOUT_S)
        raise
    codes = pipeline.stop(STOP_TIMEOUT_S)
    problems += [
        f"{name} exited with {code} (log: {pipeline.children[name].log_path})"
        for name, code in codes.items()
        if code != 0
    ]
    if fault.ended_ms is None:
        raise RuntimeError(f"{scenario.name} never marked the end of its fault")
    timeline = Timeline(origin_ms, fault.started_ms, fault.ended_ms)
    # A broker just back from a cut tells new clients, the checker's, what it knew before it
    # (302 trip starts went unseen once, read up to its stale end offsets): wait it out.
    try:
        cluster.wait_in_sync(IN_SYNC_TIMEOUT_S)
    except ClusterError as exc:
        problems.append(f"the checker read a cluster not in sync: {exc}")
    checked = check(observe(cluster, trips), timeline, scenario.bounds)
    body: dict[str, Any] = {
        "trips": {
            "total": options.trips,
            **{source: replay.trips for source, replay in replays.items()},
            "rate_per_s": round(rate, 1),
        },
        **checked.figures,
        "fault": {
            "started_at_s": timeline.relative_s(timeline.fault_started_ms),
            "ended_at_s": timeline.relative_s(timeline.fault_ended_ms),
            "actions": [{"at_s": timeline.relative_s(at), "action": a} for at, a in fault.actions],
            **fault.findings,
        },
        "bounds": {
            **{k: v for k, v in asdict(scenario.bounds).items() if v is not None},
            "broken": checked.broken_bounds,
        },
        "exit_codes": codes,
    }
    return body, [*fault.problems, *checked.problems, *problems, *checked.broken_bounds]


def network_report(network: HostNetwork) -> dict[str, Any]:
    """The test hosts, and how a partition is made on them."""
    return {
        "hosts": {host: network.address(host) for host in network.hosts},
        "partition": "the host's veth link to the bridge set down (packets dropped both ways, "
        "no resets), then up",
    }


def write_trips(
    folder: Path, count: int, rate: float
) -> tuple[dict[str, Source], dict[Source, Replayed]]:
    """Synthetic trips, half train and half test, as the two producers' CSVs; the trips by id
    (as the producers read them) and each producer's share of the rate."""
    test_rows = count // 2
    train_csv, test_csv = write_synthetic(
        folder, rows=count - test_rows, seed=SEED, test_rows=test_rows
    )
    trips: dict[str, Source] = {}
    replays: dict[Source, Replayed] = {}
    csvs: tuple[tuple[Source, Path], ...] = (("train", train_csv), ("test", test_csv))
    for source, csv in csvs:
        ids = read_trips(csv, source).frame["id"]
        trips.update(dict.fromkeys(ids, source))
        replays[source] = Replayed(csv, len(ids), rate * len(ids) / count)
    return trips, replays


def wait_for(pipeline: Pipeline, what: str, done: Callable[[], bool]) -> list[str]:
    """Wait until `done`, logging progress, for as long as the services are getting on with
    it: a loaded machine is slow, not stuck. The problem, if they stalled or one died."""
    now = time.monotonic()
    last_change, next_progress = now, now + PROGRESS_EVERY_S
    seen: dict[str, float] = {}
    while not done():
        now = time.monotonic()
        activity = pipeline.activity()
        if any(seen.get(name) != value for name, value in activity.items()):
            seen.update(activity)
            last_change = now
        crashed = pipeline.crashed()
        if crashed:
            return [f"gave up waiting for {what}: {crashed}"]
        if now - last_change > STALL_S:
            log.warning("%s: nothing moved for %.0f s", what, STALL_S)
            return [f"{what}: not done, and nothing moved for {STALL_S:.0f} s"]
        if now >= next_progress:
            log.info("%s", pipeline.progress())
            next_progress += PROGRESS_EVERY_S
        time.sleep(WAIT_STEP_S)
    return []


def observe(cluster: LocalCluster, trips: dict[str, Source]) -> Observed:
    """Every record on the topics, read_committed, for the checker."""
    config = cluster.kafka_config()

    def stamped(
        topic: str, duration: Callable[[Message], float | None] = lambda _: None
    ) -> list[Stamped]:
        return [Stamped(_key(m), m.timestamp()[1], duration(m)) for m in read_to_end(config, topic)]

    return Observed(
        poison_in_log=[
            key
            for m in read_to_end(config, ML_PREDICTIONS, isolation_level="read_uncommitted")
            if (key := _key(m)).startswith(POISON_PREFIX)
        ],
        trips=trips,
        starts=stamped(NEW_TRIPS),
        ends=stamped(FINISHED_TRIPS, _actual_duration),
        predictions=[_prediction(m) for m in read_to_end(config, ML_PREDICTIONS)],
        shadow_predictions=[_prediction(m) for m in read_to_end(config, SHADOW_PREDICTIONS)],
        metrics=[
            MetricsRecord(m.timestamp()[1], decode(m.value(), ModelMetrics))
            for m in read_to_end(config, MODEL_METRICS)
        ],
        dead_letters=[_reason(m) for m in read_to_end(config, DEAD_LETTERS)],
    )


def _prediction(message: Message) -> Stamped:
    """A prediction: its duration, its model and the challenger it names; only its trip and
    time if it does not decode (its trip then counts as not predicted when the checker
    recomputes the metrics)."""
    key, at_ms = _key(message), message.timestamp()[1]
    try:
        prediction = decode(message.value(), Prediction)
    except EventDecodeError:
        return Stamped(key, at_ms)
    return Stamped(
        key,
        at_ms,
        prediction.predicted_duration,
        prediction.model_version,
        prediction.challenger_version,
    )


def _actual_duration(message: Message) -> float | None:
    """A trip end's duration (estimated for test trips, as the aggregator takes it); None if
    it does not decode."""
    try:
        return decode(message.value(), TripFinished).trip_duration
    except EventDecodeError:
        return None


def _key(message: Message) -> str:
    key = message.key()
    return key.decode(errors="replace") if key is not None else ""


def _reason(message: Message) -> str:
    try:
        return DeadLetter.from_headers(message.headers()).reason
    except EventDecodeError as exc:
        return f"unreadable dead letter headers: {exc}"


@contextmanager
def run_cluster(prefix: str, *, keep: bool = False) -> Iterator[LocalCluster]:
    """A scratch cluster for one run (see scratch_cluster). Once it is down, any service of the
    run still alive is stopped: a run that failed half-way may leave some."""
    marker = None
    try:
        with scratch_cluster(prefix, keep=keep) as cluster:
            marker = cluster.runtime_dir.name
            yield cluster
    finally:
        if marker is not None:
            stop_leftovers(marker)


def stop_leftovers(marker: str) -> list[str]:
    """Stop every broker or service whose command line names `marker` (SIGTERM, then SIGKILL):
    what a run left behind, which should be nothing. Returns what it found."""
    found: dict[int, str] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        pid = int(cmdline.parent.name)
        argv = read_cmdline(pid)
        if pid != os.getpid() and argv and _started_by_run(argv, marker) and pid_alive(pid):
            found[pid] = " ".join(argv)[:200]
    for pid in found:
        send_signal(pid, signal.SIGTERM)
    for pid in wait_gone(list(found), LEFTOVER_STOP_TIMEOUT_S):
        send_signal(pid, signal.SIGKILL)
    wait_gone(list(found), LEFTOVER_STOP_TIMEOUT_S)
    for pid, command in found.items():
        log.warning("stopped a leftover process: pid %d: %s", pid, command)
    return [f"pid {pid}: {command}" for pid, command in found.items()]


def _started_by_run(argv: list[str], marker: str) -> bool:
    """A Kafka node or a taxi service naming the run's marker (not, say, a pgrep for it)."""
    service = any(Path(arg).name.startswith("taxi-") for arg in argv[:2])
    return any(marker in arg for arg in argv) and ("kafka.Kafka" in argv or service)
