"""What each part of a bench run measured, and the JSON report built from it (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taxi_services.bench.figures import (
    Progress,
    Seen,
    median_max_ms,
    percentiles_ms,
    rate,
    ratio,
    start_rate,
    steady,
    steady_visible,
    targets,
)
from taxi_services.bench.profile import Profile

# The parts of a run, as --only names them.
PARTS = {
    "passthrough": "baseline: plain confluent-kafka consume-and-produce passthrough, no model",
    "predictor": "our predictor: the taxi-predictor process, exactly once, batched",
    "two-predictors": "two taxi-predictor processes sharing the partitions",
    "shadow": "the taxi-predictor process with a challenger deployed: every batch predicted "
    "and written twice",
    "naive": "naive: one DataFrame and one predict call per message, a flush per produce",
    "latency": "latency from trip start to prediction visible downstream, at fixed rates",
    "replay": "the taxi-producer process replaying trips as fast as it can",
    "switch": "from a promotion (or rollback) decision written to the new version's first "
    "prediction visible downstream, under a steady load",
    "quix": "peer: the same job in quix-streams as its users write it: an exactly-once "
    "Application, sdf.apply predicting one record at a time, to_topic",
    "quix-batched": "peer: quix-streams batching across keys its way: group_by one key, a "
    "tumbling count window collecting trips, one model call per window; exactly-once",
    "bytewax": "peer: the same job in bytewax: Kafka input in batches, flat_map_batch predicting "
    "a batch per model call, Kafka output; at-least-once",
}
# What each throughput part guarantees, written beside its figure.
GUARANTEES = {
    "passthrough": "at-least-once",
    "predictor": "exactly-once",
    "two-predictors": "exactly-once",
    "shadow": "exactly-once",
    "quix": "exactly-once",
    "quix-batched": "exactly-once",
    "bytewax": "at-least-once",
}
# How a throughput part's progress is followed (runner.py): the group's committed offsets of its
# input, the end offsets of its output topic (written without transactions), or the outputs a
# read_committed reader sees.
COMMITTED = "committed input offsets"
WRITTEN = "outputs written"
VISIBLE = "outputs visible to a read_committed reader"
# The letters the parts had before they had names; --only still takes them.
PART_ALIASES = {
    "a": "passthrough",
    "b": "predictor",
    "b2": "two-predictors",
    "c": "naive",
    "d": "latency",
    "e": "replay",
}


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Drain:
    """One backlog drained: the group's committed records of it when it was revealed
    (`start`) and when all were committed (`end`)."""

    start: Progress
    end: Progress
    process_cpu_s: float | None = None  # of the measured processes, from start to end
    machine_busy: float | None = None  # share of all cores busy, from start to end

    @property
    def records(self) -> int:
        return self.end.count - self.start.count

    @property
    def seconds(self) -> float:
        return self.end.time - self.start.time

    @property
    def records_per_s(self) -> float:
        return rate(self.start, self.end)


@dataclass(frozen=True)
class Throughput:
    """A design draining backlogs, one at a time; the fastest drain counts (the others
    were slowed down by whatever else the machine ran)."""

    part: str
    processes: str
    drains: tuple[Drain, ...]
    processed: int  # input records committed in all, once the processes stopped
    outputs: int  # records in the output topic afterwards
    distinct_outputs: int
    shadow_outputs: int | None = None  # records in shadow_predictions afterwards (shadow only)
    measured_by: str = COMMITTED  # or WRITTEN, VISIBLE
    library: str | None = None  # a peer's library and the Kafka client under it
    peak_rss_mb: tuple[float, ...] = ()  # each process's most resident memory, at the end
    profile: Profile | None = None  # py-spy's samples of its drains (--profile, predictor)

    @property
    def best(self) -> Drain:
        return max(self.drains, key=lambda d: d.records_per_s)

    @property
    def records_per_s(self) -> float:
        return self.best.records_per_s

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "what": PARTS[self.part],
            "processes": self.processes,
            "records_per_s": round(best.records_per_s),
            "runs_records_per_s": [round(d.records_per_s) for d in self.drains],
            "measured_records": best.records,
            "seconds": round(best.seconds, 2),
            "input_records": self.processed,
            "output_records": self.outputs,
            "distinct_output_keys": self.distinct_outputs,
            "process_cores_used": _round(
                None if best.process_cpu_s is None else best.process_cpu_s / best.seconds, 2
            ),
            "machine_busy": _round(best.machine_busy, 2),
            "peak_rss_mb": [round(mb, 1) for mb in self.peak_rss_mb],
            **({} if self.shadow_outputs is None else {"shadow_records": self.shadow_outputs}),
            **({"guarantee": GUARANTEES[self.part]} if self.part in GUARANTEES else {}),
            "measured_by": self.measured_by,
            **({} if self.library is None else {"library": self.library}),
            **({} if self.profile is None else {"profile": self.profile.to_json()}),
        }


@dataclass(frozen=True)
class LatencyRun:
    rate: float
    trips: int  # the producer's --limit
    seen: tuple[Seen, ...]
    distinct: int  # distinct trip ids among the predictions seen
    # (started, seen) of each trip start on new_trips: how long the producer takes.
    trips_visible: tuple[tuple[float, float], ...]
    warmup_s: float
    machine_busy: float | None = None

    @property
    def window(self) -> list[Seen]:
        return steady(self.seen, self.warmup_s)

    @property
    def p99_ms(self) -> float:
        return self.visible_ms()["p99_ms"]

    def visible_ms(self) -> dict[str, float]:
        return percentiles_ms([s.seen - s.started for s in self.window])

    def to_json(self) -> dict[str, Any]:
        window = self.window
        return {
            "rate": self.rate,
            "achieved_rate": _round(start_rate(self.seen)),
            "trips": self.trips,
            "predictions_seen": len(self.seen),
            "distinct_trips": self.distinct,
            "warmup_s": self.warmup_s,
            "steady_window_trips": len(window),
            "visible": self.visible_ms(),
            # Where the time goes: until the trip start is visible (the producer's commit),
            # until the predictor's batch (the above, plus waiting for the batch), the rest
            # being the model call and the predictor's commit.
            "trip_visible": percentiles_ms(
                steady_visible(self.trips_visible, self.seen, self.warmup_s)
            ),
            "predicted": percentiles_ms([s.predicted - s.started for s in window]),
            "machine_busy": _round(self.machine_busy, 2),
        }


@dataclass(frozen=True)
class ReplayRun:
    trips: int
    trips_per_s: float | None
    transactions: int
    started: int  # records on new_trips afterwards
    distinct_started: int
    ended: int  # records on finished_trips afterwards

    def to_json(self) -> dict[str, Any]:
        return {
            "what": PARTS["replay"],
            "trips_per_s": _round(self.trips_per_s, 0),
            "trips": self.trips,
            "transactions": self.transactions,
            "started": self.started,
            "distinct_started": self.distinct_started,
            "ended": self.ended,
        }


@dataclass(frozen=True)
class Switch:
    """One deployment decision and how long until the version it made champion was seen
    predicting by a read_committed reader."""

    action: str  # promote or rollback
    version: str  # the new champion
    seconds: float  # from just before the decision was written to its first prediction seen
    predictions_before: int  # predictions seen between the decision and that one (old model)


@dataclass(frozen=True)
class SwitchRun:
    """A predictor under a steady load, switched between two versions again and again."""

    rate: float  # the producer's trips/s
    switches: tuple[Switch, ...]
    started: int  # trip starts on new_trips afterwards
    distinct_started: int
    predictions: int  # records on ml_predictions afterwards
    distinct_predicted: int  # distinct trip ids among them
    by_version: Mapping[str, int]  # predictions per model version
    machine_busy: float | None = None

    @property
    def exactly_once(self) -> bool:
        """Every trip started was predicted, and none twice."""
        return self.predictions == self.distinct_predicted == self.distinct_started

    def to_json(self) -> dict[str, Any]:
        return {
            "what": PARTS["switch"],
            "rate": self.rate,
            "switches": [
                {
                    "action": s.action,
                    "version": s.version,
                    "ms": round(s.seconds * 1000, 1),
                    "predictions_before": s.predictions_before,
                }
                for s in self.switches
            ],
            "switch_ms": median_max_ms([s.seconds for s in self.switches]),
            "trips_started": self.started,
            "distinct_trips_started": self.distinct_started,
            "predictions": self.predictions,
            "distinct_trips_predicted": self.distinct_predicted,
            "predictions_by_version": dict(self.by_version),
            "exactly_once": self.exactly_once,
            "machine_busy": _round(self.machine_busy, 2),
        }


@dataclass
class Results:
    throughput: dict[str, Throughput]
    latency: dict[float, LatencyRun]
    replay: ReplayRun | None = None
    switch: SwitchRun | None = None


def report(
    results: Results,
    *,
    environment: Mapping[str, Any],
    settings: Mapping[str, Any],
    notes: list[str],
    secure: Results | None = None,
) -> dict[str, Any]:
    """The JSON report of `results`; with `secure`, the same parts measured on a secure
    cluster, and each of its figures over the plaintext one (secure_over_plaintext)."""
    rates = _rates(results)
    p99 = {run.rate: run.p99_ms for run in results.latency.values()}
    two = results.throughput.get("two-predictors")
    found = targets(
        rates, p99, environment["cores"], scaling_busy=two.best.machine_busy if two else None
    )
    return {
        "environment": dict(environment),
        "settings": dict(settings),
        **_figures(results),
        "targets": [t.to_json() for t in found],
        **(
            {}
            if secure is None
            else {
                "secure": _figures(secure),
                "secure_over_plaintext": secure_over_plaintext(results, secure),
            }
        ),
        "notes": notes,
    }


def _rates(results: Results) -> dict[str, float | None]:
    return {part: run.records_per_s for part, run in results.throughput.items()}


def _figures(results: Results) -> dict[str, Any]:
    """What one run on one cluster measured: rates, their ratios, and every part's details."""
    rates = _rates(results)
    ratios = {
        "predictor_over_passthrough": ratio(rates.get("predictor"), rates.get("passthrough")),
        "predictor_over_naive": ratio(rates.get("predictor"), rates.get("naive")),
        "two_over_one": ratio(rates.get("two-predictors"), rates.get("predictor")),
        "shadow_over_predictor": ratio(rates.get("shadow"), rates.get("predictor")),
        # The peers, each with its guarantee beside it in parts.<peer>.guarantee.
        "predictor_over_quix": ratio(rates.get("predictor"), rates.get("quix")),
        "predictor_over_quix_batched": ratio(rates.get("predictor"), rates.get("quix-batched")),
        "predictor_over_bytewax": ratio(rates.get("predictor"), rates.get("bytewax")),
    }
    return {
        "rates_records_per_s": {part: round(r) for part, r in rates.items() if r is not None},
        "ratios": {name: _round(value, 3) for name, value in ratios.items()},
        "parts": {
            **{part: run.to_json() for part, run in results.throughput.items()},
            **(
                {"latency": {f"{r:g}": run.to_json() for r, run in results.latency.items()}}
                if results.latency
                else {}
            ),
            **({"replay": results.replay.to_json()} if results.replay else {}),
            **({"switch": results.switch.to_json()} if results.switch else {}),
        },
    }


def secure_over_plaintext(plain: Results, secure: Results) -> dict[str, float | None]:
    """The cost of TLS and SASL: each throughput part's rate on the secure cluster over its
    rate on the plaintext one (below 1: slower), and each latency percentile's (above 1:
    slower)."""
    found: dict[str, float | None] = {
        f"{part}_records_per_s": ratio(run.records_per_s, plain.throughput[part].records_per_s)
        for part, run in secure.throughput.items()
        if part in plain.throughput
    }
    for rate_, run in secure.latency.items():
        if rate_ in plain.latency:
            ours, theirs = run.visible_ms(), plain.latency[rate_].visible_ms()
            found |= {
                f"latency_{rate_:g}_{name}": ratio(ours[name], theirs[name])
                for name in ("p50_ms", "p99_ms")
            }
    return {name: _round(value, 3) for name, value in found.items()}


def missed_targets(result: dict[str, Any]) -> list[str]:
    """Targets measured, applicable and not met: what --check fails on."""
    return [t["name"] for t in result["targets"] if t["applicable"] and t["met"] is False]
