"""`taxi bench`: throughput and latency of the pipeline, measured on a real cluster in one run,
printed as one JSON object (progress goes to stderr)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click
import confluent_kafka

from taxi_kafka.config import KafkaConfig
from taxi_kafka.topics import DEFAULT_PARTITIONS
from taxi_model.artifact import ModelLoadError, load_model
from taxi_model.data import read_trips
from taxi_model.synth import write_synthetic
from taxi_model.workflow import ensure_model
from taxi_services.bench.cluster import Namespaces, cluster_at
from taxi_services.bench.results import PARTS, report
from taxi_services.bench.runner import Bench, BenchError, Settings
from taxi_services.options import model_option
from taxi_services.predictor import MODEL_THREADS
from taxi_services.predictor import main as predictor_main

log = logging.getLogger("taxi.bench")

# Exit status of --check when a target was missed (errors exit with 1).
MISSED_TARGET_EXIT = 3
TRIPS_SEED = 2024


def parse_parts(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset(PARTS)
    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(parts - PARTS.keys())
    if unknown or not parts:
        raise click.BadParameter(
            f"unknown part(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}",
            param_hint="--only",
        )
    return parts


def parse_rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(r) for r in text.split(","))
    except ValueError:
        rates = ()
    if not rates or min(rates) <= 0:
        raise click.BadParameter(
            f"expected positive trips/s, comma-separated, got {text!r}",
            param_hint="--latency-rates",
        )
    return rates


def _predictor_default(name: str) -> Any:
    return next(p.default for p in predictor_main.params if p.name == name)


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


def missed_targets(result: dict[str, Any]) -> list[str]:
    """Targets measured, applicable and not met: what --check fails on."""
    return [t["name"] for t in result["targets"] if t["applicable"] and t["met"] is False]


@click.command()
@click.option(
    "--records",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Trips in the backlogs that (a), (b) and (b2) drain, and that (e) replays.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Backlogs (a), (b) and (b2) each drain, one after another; the fastest counts.",
)
@click.option(
    "--naive-records",
    type=click.IntRange(1),
    default=2_000,
    show_default=True,
    help="Trips (c), the slow naive design, processes.",
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Length of (d)'s steady window at each rate.",
)
@click.option(
    "--latency-warmup",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds of (d) before the steady window, not counted.",
)
@click.option(
    "--latency-rates",
    default="500,2000",
    show_default=True,
    help="The fixed trips/s of (d), comma-separated.",
)
@click.option(
    "--only",
    metavar="PARTS",
    help="Run only these parts, comma-separated: " + ", ".join(PARTS) + " [default: all].",
)
@click.option(
    "--bootstrap-servers",
    help="Use this existing cluster (every part in topics and groups of its own, deleted "
    "after) [default: a scratch 3-broker cluster on free ports].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=_predictor_default("batch_size"),
    show_default=True,
    help="The predictor's --batch-size (and the passthrough's).",
)
@click.option(
    "--batch-wait",
    type=click.FloatRange(0.001, 10),
    default=_predictor_default("batch_wait"),
    show_default=True,
    help="The predictor's --batch-wait (and the passthrough's).",
)
@model_option("The model the predictors use; trained first if missing.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report to this file.",
)
@click.option(
    "--check", is_flag=True, help=f"Exit with {MISSED_TARGET_EXIT} if a target was missed."
)
def bench(
    *,
    records: int,
    repeat: int,
    naive_records: int,
    latency_seconds: float,
    latency_warmup: float,
    latency_rates: str,
    only: str | None,
    bootstrap_servers: str | None,
    batch_size: int,
    batch_wait: float,
    model_path: Path,
    output: Path | None,
    check: bool,
) -> None:
    """Measure the pipeline's speed on a real Kafka cluster and print a JSON report.

    \b
    (a) baseline: a plain confluent-kafka consume-and-produce passthrough, no model
    (b) the taxi-predictor process: exactly once, batched
    (b2) two taxi-predictor processes sharing the partitions
    (c) naive: one DataFrame, one model call and one flush per message
    (d) latency from trip start to prediction visible to a read_committed reader, at fixed
        rates of taxi-producer --rate, over a steady window after a warm-up
    (e) a taxi-producer replaying trips as fast as it can

    The JSON holds the rates (records/s), the ratios b/a, b/c and b2/b, latency percentiles,
    the targets and whether each was met, and the machine it ran on. Missed targets do not
    change the exit status unless --check is given; errors exit with 1.
    """
    settings = Settings(
        records=records,
        naive_records=naive_records,
        latency_seconds=latency_seconds,
        latency_warmup=latency_warmup,
        latency_rates=parse_rates(latency_rates),
        parts=parse_parts(only),
        batch_size=batch_size,
        batch_wait=batch_wait,
        partitions=DEFAULT_PARTITIONS,
        repeat=repeat,
    )
    began = time.monotonic()
    load_before = os.getloadavg()
    try:
        ensure_model(model_path, Path("data"), log.info)
        model_version = load_model(model_path).version
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    workdir = Path(tempfile.mkdtemp(prefix="taxi-bench-"))
    failed = True
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
        failed = False
    except BenchError as exc:
        raise click.ClickException(f"{exc} (files kept in {workdir})") from exc
    finally:
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    environment = {
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
        "model_version": model_version,
        "duration_s": round(time.monotonic() - began, 1),
    }
    result = report(
        results,
        environment=environment,
        settings={
            "records": records,
            "repeat": repeat,
            "naive_records": naive_records,
            "latency_seconds": latency_seconds,
            "latency_warmup": latency_warmup,
            "latency_rates": list(settings.latency_rates),
            "parts": sorted(settings.parts),
            "predictor_batch_size": batch_size,
            "predictor_batch_wait": batch_wait,
            "predictor_model_threads": MODEL_THREADS,
            "command": reproduce(settings, bootstrap_servers),
        },
        notes=NOTES,
    )
    text = json.dumps(result, indent=2)
    click.echo(text)
    if output is not None:
        output.write_text(text + "\n")
    missed = missed_targets(result)
    if check and missed:
        click.echo(f"missed target(s): {', '.join(missed)}", err=True)
        sys.exit(MISSED_TARGET_EXIT)


NOTES = [
    "(a), (b), (b2) and (c) drain a backlog written beforehand in one open transaction and "
    "committed once the consumer group holds every partition; their rate is committed input "
    "records per second from then until all are committed. Starting, loading the model and "
    "joining do not count, for any design.",
    "(b), (b2) and (d) run the real taxi-predictor process, (d) and (e) the real taxi-producer, "
    "each on topics and groups of its own (--topic-prefix).",
    "Latency is the time a read_committed reader sees a prediction minus its trip's "
    "produced_at (trip_started_at), over trips started after the warm-up; 'predicted' is the "
    "part up to the predictor's batch (predicted_at).",
    "The machine may be shared: brokers, the measured processes and the bench use the same "
    "cores, often with other work; machine_busy (share of all cores busy during a part) and "
    "the load averages say how loaded it was.",
]
