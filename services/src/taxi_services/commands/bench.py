"""`taxi bench`: throughput and latency of the pipeline, measured on a real cluster in one run,
printed as one JSON object (progress goes to stderr)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from confluent_kafka import KafkaException

from taxi_kafka import DEFAULT_PARTITIONS, first_signal_interrupts
from taxi_kafka.cluster import ClusterError
from taxi_model import ModelLoadError, ensure_model, load_model, with_compiled_trees
from taxi_services.bench.profile import summary_lines
from taxi_services.bench.pyspy import MAX_RATE, RATE, PySpyError
from taxi_services.bench.results import PART_ALIASES, PARTS, missed_targets
from taxi_services.bench.runner import PROFILED, QUIX_WINDOW, BenchError, Settings, measure
from taxi_services.options import model_option
from taxi_services.predictor import main as predictor_main

log = logging.getLogger("taxi.bench")

# Exit status of --check when a target was missed (errors exit with 1).
MISSED_TARGET_EXIT = 3


def parse_parts(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset(PARTS)
    words = [p.strip() for p in text.split(",") if p.strip()]
    parts = frozenset(PART_ALIASES.get(word, word) for word in words)
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


@click.command()
@click.option(
    "--records",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Trips in the backlogs that passthrough, predictor and two-predictors drain, and "
    "that replay replays.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Backlogs passthrough, predictor and two-predictors each drain, taking turns; the "
    "fastest counts.",
)
@click.option(
    "--naive-records",
    type=click.IntRange(1),
    default=2_000,
    show_default=True,
    help="Trips the slow naive design processes.",
)
@click.option(
    "--quix-records",
    type=click.IntRange(1),
    default=3_000,
    show_default=True,
    help="Trips the quix peer drains (one model call per record: slow). bytewax drains "
    "--records, --repeat times.",
)
@click.option(
    "--quix-batched-records",
    type=click.IntRange(QUIX_WINDOW),
    default=10_000,
    show_default=True,
    help=f"Trips the quix-batched peer drains: a multiple of its window ({QUIX_WINDOW:,} trips).",
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Length of latency's steady window at each rate.",
)
@click.option(
    "--latency-warmup",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds of latency before the steady window, not counted.",
)
@click.option(
    "--latency-rates",
    default="500,2000",
    show_default=True,
    help="The fixed trips/s of latency, comma-separated.",
)
@click.option(
    "--switch-rate",
    type=click.FloatRange(0, min_open=True),
    default=200.0,
    show_default=True,
    help="The steady trips/s switch runs under.",
)
@click.option(
    "--switches",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Decisions switch makes, taking turns: promote the challenger, roll back, promote...",
)
@click.option(
    "--switch-gap",
    type=click.FloatRange(0),
    default=3.0,
    show_default=True,
    help="Seconds of steady predictions before each of switch's decisions.",
)
@click.option(
    "--challenger",
    "challenger_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The model shadow and switch deploy beside --model: another version [default: one "
    "trained on other synthetic trips at the start of the run].",
)
@click.option(
    "--only",
    metavar="PARTS",
    help="Run only these parts, comma-separated: "
    + ", ".join(PARTS)
    + " (or their old letters a, b, b2, c, d, e) [default: all].",
)
@click.option(
    "--bootstrap-servers",
    help="Use this existing cluster (every part in topics and groups of its own, deleted "
    "after) [default: a scratch 3-broker cluster on free ports].",
)
@click.option(
    "--secure",
    is_flag=True,
    help="Also run the same parts on a secure scratch cluster (SASL_SSL, each service as its "
    "own principal) and report the cost of TLS and SASL: secure_over_plaintext.",
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
@click.option(
    "--compiled-trees",
    is_flag=True,
    help="Run the taxi-predictors with --compiled-trees. The trees are compiled and checked "
    "here first (cached for the predictors); the run stops if they cannot be.",
)
@model_option("The model the predictors use; trained first if missing.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report to this file.",
)
@click.option(
    "--profile",
    is_flag=True,
    help=f"Sample the {PROFILED} part's taxi-predictor with py-spy (a dev dependency) while "
    "it drains its backlogs, start-up excluded, and add its top functions by self and by "
    "inclusive time to that part's JSON (parts.predictor.profile). Stops before measuring if "
    "py-spy is missing or cannot attach (ptrace). Sampling slows the predictor: take rates "
    "from a run without it.",
)
@click.option(
    "--profile-rate",
    type=click.IntRange(1, MAX_RATE),
    default=RATE,
    show_default=True,
    help="Samples per second of --profile (py-spy record --rate).",
)
@click.option(
    "--check", is_flag=True, help=f"Exit with {MISSED_TARGET_EXIT} if a target was missed."
)
# The first Ctrl+C or SIGTERM stops the run; later ones cannot cut short the clean-up.
@first_signal_interrupts()
def bench(
    *,
    records: int,
    repeat: int,
    naive_records: int,
    quix_records: int,
    quix_batched_records: int,
    latency_seconds: float,
    latency_warmup: float,
    latency_rates: str,
    switch_rate: float,
    switches: int,
    switch_gap: float,
    challenger_path: Path | None,
    only: str | None,
    bootstrap_servers: str | None,
    secure: bool,
    batch_size: int,
    batch_wait: float,
    compiled_trees: bool,
    model_path: Path,
    output: Path | None,
    profile: bool,
    profile_rate: int,
    check: bool,
) -> None:
    """Measure the pipeline's speed on a real Kafka cluster and print a JSON report.

    \b
    passthrough (a)     the baseline: a plain confluent-kafka consume-and-produce loop, no model
    predictor (b)       the taxi-predictor process: exactly once, batched
    two-predictors (b2) two taxi-predictor processes sharing the partitions
    naive (c)           one DataFrame, one model call and one flush per message
    latency (d)         from trip start to prediction visible to a read_committed reader, at fixed
        rates of taxi-producer --rate, over a steady window after a warm-up
    replay (e)          a taxi-producer replaying trips as fast as it can
    shadow              predictor with a challenger deployed: every batch predicted twice
    switch              from a promotion (or rollback) decision to the new champion's first
        prediction visible downstream, under a steady load; each trip predicted once
    quix                peer: the same job in quix-streams, exactly once, one model call per
        record (its own environment, benchmarks/peers/quix/, made on first use)
    quix-batched        peer: quix-streams batching across keys: group_by one key, count
        windows of trips, one model call per window
    bytewax             peer: the same job in bytewax, at least once, one model call per batch

    The JSON holds the rates (records/s), the ratios predictor/passthrough, predictor/naive,
    two-predictors/predictor, shadow/predictor, predictor/quix, predictor/quix-batched and
    predictor/bytewax (with each one's guarantee), latency percentiles, switch times,
    the targets and whether each was met, and the machine it ran on. Missed targets do not
    change the exit status unless --check is given; errors exit with 1.
    """
    if secure and bootstrap_servers:
        raise click.BadParameter(
            "--secure compares two scratch clusters, plaintext and secure: it cannot use an "
            "existing cluster",
            param_hint="--secure",
        )
    if quix_batched_records % QUIX_WINDOW:
        raise click.BadParameter(
            f"{quix_batched_records} is not a multiple of quix-batched's window "
            f"({QUIX_WINDOW}): a window emits only once full",
            param_hint="--quix-batched-records",
        )
    parts = parse_parts(only)
    if profile and PROFILED not in parts:
        raise click.BadParameter(
            f"--profile samples the {PROFILED} part, which --only leaves out", param_hint="--only"
        )
    settings = Settings(
        records=records,
        naive_records=naive_records,
        latency_seconds=latency_seconds,
        latency_warmup=latency_warmup,
        latency_rates=parse_rates(latency_rates),
        parts=parts,
        batch_size=batch_size,
        batch_wait=batch_wait,
        partitions=DEFAULT_PARTITIONS,
        repeat=repeat,
        switch_rate=switch_rate,
        switches=switches,
        switch_gap=switch_gap,
        quix_records=quix_records,
        quix_batched_records=quix_batched_records,
        profile=profile,
        profile_rate=profile_rate,
        compiled_trees=compiled_trees,
    )
    try:
        ensure_model(model_path, Path("data"), log.info)
        if compiled_trees and with_compiled_trees(load_model(model_path)).trees is None:
            raise click.ClickException(
                "--compiled-trees: the trees could not be compiled and checked (the warning "
                "above says why); run without it"
            )
        result = measure(
            settings,
            bootstrap_servers=bootstrap_servers,
            model_path=model_path,
            challenger_path=challenger_path,
            secure=secure,
        )
    except (BenchError, ClusterError, KafkaException, ModelLoadError, PySpyError) as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(result, indent=2)
    click.echo(text)
    if output is not None:
        output.write_text(text + "\n")
    # On stderr, beside the progress: stdout is the JSON alone.
    for security, figures in (("", result), ("secure ", result.get("secure", {}))):
        found = figures.get("parts", {}).get(PROFILED, {}).get("profile")
        if found is not None:
            click.echo(
                f"{security}{PROFILED} profile, top by self time of {found['samples']} samples:",
                err=True,
            )
            for line in summary_lines(found):
                click.echo("  " + line, err=True)
    missed = missed_targets(result)
    if check and missed:
        click.echo(f"missed target(s): {', '.join(missed)}", err=True)
        sys.exit(MISSED_TARGET_EXIT)
