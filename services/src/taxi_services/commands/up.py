"""`taxi up`: the whole pipeline on one machine, on a real local 3-broker Kafka cluster."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from taxi_events import Source
from taxi_kafka import (
    DASHBOARD_PORT,
    METRICS_PORTS,
    PREDICTOR_GROUP,
    PROMETHEUS_PORT,
    UP_INSTANCE,
    KafkaConfig,
    LagProbe,
    ensure_topics,
    first_signal_interrupts,
)
from taxi_kafka.cluster import ClusterError, LocalCluster, port_free, requested_security
from taxi_model import ModelLoadError, current_roles, ensure_model
from taxi_services.commands.reset import deleted_summary, reset_or_fail
from taxi_services.commands.status import group_lag
from taxi_services.options import model_option
from taxi_services.producer import SYNTHETIC_ROWS, replay_name, replay_trips, saved_checkpoints
from taxi_services.prometheus import (
    LOCAL_CONFIG,
    PrometheusError,
    PrometheusServer,
    find_binary,
)
from taxi_services.registry import ModelRegistry, RegistryError, ensure_champion
from taxi_services.scrape import total
from taxi_services.status import lag_text, rmsle_text, scored_trips, trainer_text
from taxi_services.supervisor import Child, stop_all
from taxi_services.up_state import read_state, state_path, write_state
from taxi_stream import replay_fingerprint

log = logging.getLogger("taxi.up")

STATUS_EVERY_S = 2.0
DRAIN_TIMEOUT_S = 120.0
SOURCES: tuple[Source, ...] = ("train", "test")


def pipeline(
    model_path: Path,
    data_dir: Path,
    logs: Path,
    *,
    rate: float | None,
    limit: int | None,
    dashboard: bool,
    trainer: bool,
    auto_promote: bool,
) -> list[Child]:
    producer_args = [
        "--loop",
        *(["--rate", str(rate)] if rate else []),
        *(["--limit", str(limit)] if limit else []),
    ]
    return [
        # The predictor takes its models from the registry, where _prepare put the first.
        Child(
            "predictor",
            ["taxi-predictor", "--instance", UP_INSTANCE],
            METRICS_PORTS["predictor"],
            logs / "predictor.log",
        ),
        Child(
            "aggregator",
            ["taxi-aggregator", "--instance", UP_INSTANCE],
            METRICS_PORTS["aggregator"],
            logs / "aggregator.log",
        ),
        *(
            [
                Child(
                    "trainer",
                    [
                        "taxi-trainer",
                        "--instance",
                        UP_INSTANCE,
                        *([] if auto_promote else ["--no-auto-promote"]),
                    ],
                    METRICS_PORTS["trainer"],
                    logs / "trainer.log",
                )
            ]
            if trainer
            else []
        ),
        *(
            Child(
                f"producer-{source}",
                [
                    "taxi-producer",
                    "--source",
                    source,
                    "--instance",
                    UP_INSTANCE,
                    "--no-progress",
                    "--model",
                    str(model_path),
                    *producer_args,
                    *_data_args(data_dir / f"{source}.csv"),
                ],
                METRICS_PORTS[f"producer-{source}"],
                logs / f"producer-{source}.log",
            )
            for source in SOURCES
        ),
        *(
            [
                Child(
                    "dashboard",
                    ["taxi-dashboard", "--port", str(DASHBOARD_PORT)],
                    METRICS_PORTS["dashboard"],
                    logs / "dashboard.log",
                )
            ]
            if dashboard
            else []
        ),
    ]


def start_prometheus(runtime: Path, logs: Path) -> PrometheusServer | None:
    """Prometheus on :9090 scraping every service, when it is installed and the port is free."""
    try:
        binary = find_binary()
    except PrometheusError as exc:
        click.echo(f"Prometheus: {exc}; skipped")
        return None
    if binary is None:
        click.echo("Prometheus: not installed (apt-get install prometheus); skipped")
        return None
    if not port_free(PROMETHEUS_PORT):
        click.echo(f"Prometheus: port {PROMETHEUS_PORT} is taken; skipped")
        return None
    server = PrometheusServer(
        binary,
        LOCAL_CONFIG,
        port=PROMETHEUS_PORT,
        data_dir=runtime / "prometheus",
        log_path=logs / "prometheus.log",
    )
    server.start()
    try:
        server.wait_ready()
    except PrometheusError as exc:
        server.stop()
        click.echo(f"Prometheus: {exc}; skipped (log: {server.log_path})")
        return None
    return server


def _data_args(csv: Path) -> list[str]:
    # Without the CSV the producer replays synthetic trips.
    return ["--data", str(csv)] if csv.is_file() else []


def check_replays(kafka: KafkaConfig, data_dir: Path, model_path: Path) -> None:
    """Refuse to start producers whose replay on the cluster is of other trips than they would
    replay now (a CSV put in data/ or changed since, or a model trained up to another cutoff):
    they would stop at once."""
    saved = saved_checkpoints(kafka)
    problems = []
    for source in SOURCES:
        checkpoint = saved.get(replay_name(source, UP_INSTANCE))
        if checkpoint is None:
            continue
        csv = data_dir / f"{source}.csv"
        data = csv if csv.is_file() else None
        trips = replay_trips(source, data, SYNTHETIC_ROWS, model_path)
        if checkpoint.fingerprint != replay_fingerprint(trips, source):
            problems.append(
                f"the {source} replay on this cluster was of other trips than those of "
                f"{data or 'the synthetic ones'} it would replay now"
                + (" (after the model's training cutoff)" if source == "train" and data else "")
            )
    if problems:
        raise click.ClickException(
            "; ".join(problems) + ". Run `taxi up --fresh` to start over with empty topics "
            "(or put the old data back to go on where it stopped)."
        )


def trips_started(kafka: KafkaConfig) -> int:
    """Trips the producers of taxi up have started over every run, as committed."""
    saved = saved_checkpoints(kafka)
    names = [replay_name(source, UP_INSTANCE) for source in SOURCES]
    return sum(saved[name].started for name in names if name in saved)


class Status:
    """The live one-line status, from the children's own metrics and, for the predictor's
    lag in records, from the cluster."""

    def __init__(self, children: list[Child], kafka: KafkaConfig) -> None:
        self.children = {c.name: c for c in children}
        self._kafka = kafka
        self.started = {"train": 0.0, "test": 0.0}
        self.scored = 0.0
        self._last: tuple[float, float] | None = None

    def line(self) -> str:
        for source in self.started:
            samples = self.children[f"producer-{source}"].metrics()
            if samples:
                self.started[source] = total(
                    samples, "taxi_records_produced_total", topic="new_trips"
                )
        predictor = self.children["predictor"].metrics()
        aggregator = self.children["aggregator"].metrics()
        predicted = total(predictor, "taxi_records_produced_total", topic="ml_predictions")
        if aggregator:
            self.scored = scored_trips(aggregator)
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (predicted - self._last[1]) / (now - self._last[0])
        self._last = (now, predicted)
        lag = group_lag(self._lag_probe, PREDICTOR_GROUP, timeout=STATUS_EVERY_S / 2)
        trainer = self.children.get("trainer")
        return (
            f"started {self.started['train']:,.0f} train + {self.started['test']:,.0f} test"
            f" | predicted {predicted:,.0f} ({rate:,.0f}/s)"
            f" | lag {lag_text(lag)}"
            f" | scored {self.scored:,.0f}"
            f" | RMSLE train {rmsle_text(aggregator, 'train')}"
            + (f" | {trainer_text(trainer.metrics())}" if trainer is not None else "")
        )

    def close(self) -> None:
        if "_lag_probe" in self.__dict__:  # only if a line was made
            self._lag_probe.close()

    @functools.cached_property
    def _lag_probe(self) -> LagProbe:
        # Not the predictor's own lag gauge: that counts transaction markers. Kept from line to
        # line, its clients stay connected.
        return LagProbe(self._kafka.client_settings(what="status lag"))


@click.command()
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=50.0,
    show_default=True,
    help="Trips started per second by each producer.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="Start N more trips per producer, then stop once every trip is predicted and scored. "
    "The next taxi up goes on from there.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start over: delete the pipeline's topics, consumer groups and checkpoints first "
    "(as `taxi reset` does), so the replays begin again at their first trip.",
)
@click.option("--no-dashboard", is_flag=True, help="Do not start the dashboard.")
@click.option(
    "--no-trainer",
    is_flag=True,
    help="Do not start the trainer (taxi-trainer): no retraining, no automatic promotion.",
)
@click.option(
    "--no-auto-promote",
    is_flag=True,
    help="Run the trainer with --no-auto-promote: it proposes challengers, and promoting one is "
    "left to `taxi model promote` (no effect with --no-trainer).",
)
@click.option("--no-prometheus", is_flag=True, help="Do not start Prometheus, even if installed.")
@click.option(
    "--secure",
    is_flag=True,
    help="Run on the secure cluster (as `taxi cluster up --secure` makes it): SASL_SSL, and "
    "each service as its own principal, with only the ACLs it needs "
    "(env TAXI_CLUSTER_SECURITY=sasl_ssl). A cluster made secure stays so without the flag.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where train.csv and test.csv are (synthetic trips if not).",
)
@model_option(
    "Trained here if missing, and published to the registry as the first champion if there is none."
)
# The first Ctrl+C or SIGTERM stops the run; later ones cannot cut short the clean-up.
@first_signal_interrupts()
def up(
    *,
    rate: float,
    limit: int | None,
    fresh: bool,
    no_dashboard: bool,
    no_trainer: bool,
    no_auto_promote: bool,
    no_prometheus: bool,
    secure: bool,
    data_dir: Path,
    model_path: Path,
) -> None:
    """Run the whole pipeline on this machine until Ctrl+C.

    Starts the local 3-broker cluster if it is not running (and ensures the topics), trains a
    model if there is none and publishes it as the first champion if the registry has none
    (an existing champion stays), then starts both producers, the predictor, the aggregator,
    the trainer (retraining and automatic promotion), the dashboard (:8501) and Prometheus
    (:9090, when installed), prints their URLs and a live status line. Ctrl+C stops every
    process cleanly, the cluster too if this command started it. Logs go to .taxi/logs/.

    Run it again and it goes on where the last run stopped: no trip is started twice. At the
    end of the data each replay starts over under new trip ids (-g2, -g3, ...).
    """
    cluster, started_cluster = _start_cluster(secure)
    children: list[Child] = []
    prometheus = None
    # taxi up's own steps (reset, the first champion, checkpoints, status) run as admin.
    kafka = cluster.kafka_config()
    try:
        logs = cluster.runtime_dir.parent / "logs"
        planned = pipeline(
            model_path,
            data_dir,
            logs,
            rate=rate,
            limit=limit,
            dashboard=not no_dashboard,
            trainer=not no_trainer,
            auto_promote=not no_auto_promote,
        )
        # Before --fresh deletes anything, or a model is trained.
        _check_ports_free(planned)
        _prepare(cluster, kafka, fresh=fresh, data_dir=data_dir, model_path=model_path)
        children = planned  # what `finally` stops
        for child in children:
            child.start(cluster.service_env(child.principal))
            click.echo(f"{child.name:<17} {child.metrics_url}   log: {child.log_path}")
        urls = {}
        if not no_dashboard:
            urls["dashboard"] = f"http://127.0.0.1:{DASHBOARD_PORT}"
        if not no_prometheus:
            prometheus = start_prometheus(cluster.runtime_dir.parent, logs)
            if prometheus is not None:
                urls["prometheus"] = prometheus.url
        for name, url in urls.items():
            click.echo(f"{name:<17} {url}")
        write_state(
            state_path(cluster),
            {
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "bootstrap_servers": cluster.bootstrap_servers,
                "logs": str(logs),
                "urls": urls,
                "services": {c.name: c.process.pid for c in children if c.process},
            },
        )
        with contextlib.closing(Status(children, kafka)) as status:
            _watch(children, status, kafka if limit is not None else None)
    except KeyboardInterrupt:
        click.echo("\nstopping")
    finally:
        state_path(cluster).unlink(missing_ok=True)
        codes = stop_all(children)
        stopped_prometheus = prometheus.stop() if prometheus is not None else None
        if stopped_prometheus is not None:
            codes["prometheus"] = stopped_prometheus
        if codes:
            click.echo("stopped: " + ", ".join(f"{name} ({code})" for name, code in codes.items()))
        if started_cluster:
            cluster.down()
            click.echo("stopped the Kafka cluster")


def _start_cluster(secure: bool) -> tuple[LocalCluster, bool]:
    """The local cluster, up and healthy, and whether this run started it."""
    try:
        cluster = LocalCluster(security=requested_security(secure))
        running = read_state(state_path(cluster))
        if running is not None:
            raise click.ClickException(f"taxi up is running already (pid {running['pid']})")
        started = not cluster.up().already_running
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    state = "started" if started else "already running"
    click.echo(
        f"Kafka: {cluster.bootstrap_servers} ({state}{', SASL_SSL' if cluster.secure else ''})"
    )
    return cluster, started


def _prepare(
    cluster: LocalCluster,
    kafka: KafkaConfig,
    *,
    fresh: bool,
    data_dir: Path,
    model_path: Path,
) -> None:
    """What comes before the services start: what fails here leaves nothing running."""
    if fresh:
        click.echo(deleted_summary(reset_or_fail(kafka)))
        ensure_topics(cluster.admin(), cluster.topics)
    try:
        version = ensure_model(model_path, data_dir, click.echo)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model {version} at {model_path}")
    click.echo(publish_first_champion(kafka, model_path, version))
    # After the model: the train replay leaves out the trips it learnt from.
    check_replays(kafka, data_dir, model_path)


def publish_first_champion(kafka: KafkaConfig, model_path: Path, version: str) -> str:
    """Make the model at `model_path` (of `version`) the registry's first champion, unless there
    is one already (which stays); says which version is champion."""
    registry = ModelRegistry(kafka)
    try:
        before = current_roles(registry.history()).champion
        champion = ensure_champion(
            registry, model_path, f"taxi up: the first champion, the model at {model_path}"
        )
    except (RegistryError, ModelLoadError) as exc:
        raise click.ClickException(str(exc)) from exc
    if before is None:
        return f"champion: {champion} (published to the registry)"
    if champion == version:
        return f"champion: {champion} (in the registry already)"
    return (
        f"champion: {champion}, from the registry (the model at {model_path} is {version}: "
        f"`taxi model publish {model_path} --as challenger` shadows it, `--as champion` "
        "deploys it)"
    )


def _check_ports_free(children: list[Child]) -> None:
    ports = {c.name: c.metrics_port for c in children}
    if "dashboard" in ports:
        ports["dashboard UI"] = DASHBOARD_PORT
    taken = [f"{port} ({name})" for name, port in ports.items() if not port_free(port)]
    if taken:
        raise click.ClickException(
            f"ports taken: {', '.join(taken)}. Another taxi up, or another program, serves "
            "there: stop it first"
        )


def _watch(children: list[Child], status: Status, drain: KafkaConfig | None) -> None:
    """Print the status until stopped, a service dies, or (with --limit, reading the producers'
    checkpoints from `drain`) every trip started is scored."""
    producers = [c for c in children if c.name.startswith("producer")]
    tty = sys.stdout.isatty()
    drained_since = None
    started = None
    while True:
        time.sleep(STATUS_EVERY_S)
        line = status.line()
        click.echo(("\r" + line.ljust(140)) if tty else line, nl=not tty)
        failed = [c for c in children if c.exit_code not in (None, 0)]
        if failed:
            raise click.ClickException(
                ", ".join(f"{c.name} exited with {c.exit_code} (see {c.log_path})" for c in failed)
            )
        if drain is not None and all(c.exit_code == 0 for c in producers):
            drained_since = drained_since or time.monotonic()
            # Over every run: a trip started before this one may be scored during it.
            started = trips_started(drain) if started is None else started
            if status.scored >= started:
                click.echo("\nevery trip predicted and scored")
                return
            if time.monotonic() - drained_since > DRAIN_TIMEOUT_S:
                raise click.ClickException(
                    f"not drained {DRAIN_TIMEOUT_S:.0f} s after the producers finished"
                )
