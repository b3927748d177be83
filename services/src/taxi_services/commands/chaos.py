"""`taxi chaos SCENARIO`: the pipeline under faults, proven by a report anyone can rerun."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from taxi_kafka import first_signal_interrupts
from taxi_kafka.cli import env_option
from taxi_model import ModelLoadError, ensure_model
from taxi_services.chaos.runner import RunOptions, run_scenario, stop_leftovers
from taxi_services.chaos.scenarios import SCENARIOS
from taxi_services.options import model_option
from taxi_services.provenance import provenance

log = logging.getLogger("taxi.chaos")

option = env_option("chaos")
ALL = "all"
INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT
NAME_WIDTH = max(map(len, SCENARIOS))

HELP = (
    """Prove the pipeline under faults, as Kafka's own system tests do.

Each scenario runs on a fresh 3-broker cluster in a temporary folder: both producers replay a
fixed set of synthetic trips (half train, half test), with the predictor and the aggregator,
all as real processes. Once half the trips have started, the scenario's fault strikes. When
every trip is scored, the services stop and an independent checker reads every topic
(read_committed) and prints a JSON report on stdout: trips started and finished, predictions
unique, duplicated and missing, whether each source's last cumulative RMSLE and MAE equal
those recomputed from the committed predictions and trip ends, dead letters, the longest gap
without predictions and the time to recover after the fault ended.

\b
Scenarios:
"""
    + "\n".join(f"  {s.name:<{NAME_WIDTH}} {s.summary}" for s in SCENARIOS.values())
    + f"""
  {ALL:<{NAME_WIDTH}} every scenario in turn

Several scenarios run in turn, each on its cluster, and then an overall line follows.

The partition-* and flapping scenarios run every broker and service on a test host of its
own: a Linux network namespace joined to a bridge by a veth pair, made for the run and removed
after it, Ctrl+C included (needs root and iproute2; without them these scenarios are skipped,
saying why). A cut takes a host's link down: packets are dropped, as on a real partition.

Exits 1 if anything is lost or duplicated or an acceptance bound is broken (the longest gap
during kill-broker at most 15 s, during partition-leader 20 s, and caught up within 30 s of
the heal; after two-brokers-down, everything delivered within 60 s of the broker's return).
A failed scenario keeps its folder and prints where its service logs are. Progress goes to
stderr. Nothing is left running afterwards, Ctrl+C included.
"""
)


@click.command(help=HELP)
@click.argument("scenarios", nargs=-1, required=True, type=click.Choice([*SCENARIOS, ALL]))
@option(
    "--trips",
    type=click.IntRange(100),
    default=20_000,
    help="Trips to replay, half through each producer.",
)
@option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Trips started per second, both producers together [default: the scenario's, which "
    "lands the fault midway: 200/s for kill-broker at 20,000 trips].",
)
@model_option("The model the predictor uses; trained here if missing.")
@option(
    "--secure",
    is_flag=True,
    help="Run on a secure cluster (SASL_SSL, as `taxi cluster up --secure` makes it), each "
    "service as its own principal with only its ACLs: the same checks and bounds hold.",
)
@option(
    "--hosts",
    is_flag=True,
    help="Run every scenario with each broker and service on a test host of its own (the "
    "partition scenarios always do).",
)
@option("--keep", is_flag=True, help="Keep each scenario's folder: cluster, trips, service logs.")
@option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report(s) to this file, one line each.",
)
def chaos(
    *,
    scenarios: tuple[str, ...],
    trips: int,
    rate: float | None,
    model_path: Path,
    secure: bool,
    hosts: bool,
    keep: bool,
    report: Path | None,
) -> None:
    try:
        version = ensure_model(model_path, Path("data"), log.info)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("model %s at %s", version, model_path)
    options = RunOptions(
        trips=trips, rate=rate, model_path=model_path, keep=keep, secure=secure, hosts=hosts
    )
    # Every folder, broker and service of this invocation carries this in its name.
    marker = f"taxi-chaos-{os.getpid()}-"
    names = list(SCENARIOS) if ALL in scenarios else list(dict.fromkeys(scenarios))
    began = time.monotonic()
    # The commit and the machine, in every report: a result kept as data says what made it.
    where = {
        **provenance(),
        "trips": trips,
        "rate": rate,
        "command": f"uv run taxi chaos {' '.join(scenarios)} --trips {trips}"
        + (f" --rate {rate:g}" if rate is not None else "")
        + (" --secure" if secure else "")
        + (" --hosts" if hosts else ""),
    }
    reports: list[dict[str, Any]] = []
    with _output(report) as out, first_signal_interrupts():
        try:
            for name in names:
                load_before = os.getloadavg()
                reports.append(run_scenario(SCENARIOS[name], options, marker))
                reports[-1]["environment"] = {
                    **where,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }
                _emit(reports[-1], out)
        except KeyboardInterrupt:
            left = stop_leftovers(marker)
            log.error(
                "interrupted; %s",
                f"stopped {len(left)} leftover(s)" if left else "nothing left running",
            )
            raise click.exceptions.Exit(INTERRUPTED) from None
        if len(names) > 1:
            _emit(
                {
                    "scenario": ALL if ALL in scenarios else " ".join(names),
                    "passed": not _failed(reports),
                    "failed": _failed(reports),
                    "skipped": [r["scenario"] for r in reports if "skipped" in r],
                    "seconds": round(time.monotonic() - began, 1),
                    "environment": where,
                },
                out,
            )
    if _failed(reports):
        raise click.exceptions.Exit(1)


def _failed(reports: list[dict[str, Any]]) -> list[str]:
    """The scenarios that failed; a skipped one (passed None) did not."""
    return [r["scenario"] for r in reports if r["passed"] is False]


def _emit(report: dict[str, Any], out: IO[str] | None) -> None:
    line = json.dumps(report)
    click.echo(line)
    if out is not None:
        out.write(line + "\n")
        out.flush()


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        yield out
