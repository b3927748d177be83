"""The bench's arithmetic, apart from any I/O: rates from progress samples, latency
percentiles over a steady window, CPU shares from /proc counters, ratios and targets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99, 99.9)


@dataclass(frozen=True)
class Progress:
    """At `time` (seconds, any clock), `count` records were done."""

    time: float
    count: int


def rate(start: Progress, end: Progress) -> float:
    """Records per second between two progress samples."""
    if end.time <= start.time:
        raise ValueError(f"no time passed between {start} and {end}")
    return (end.count - start.count) / (end.time - start.time)


def caught_up(
    committed: Mapping[int, int], ends: Mapping[int, int], begins: Mapping[int, int]
) -> int:
    """Records of a backlog that a group has committed. Per partition, the backlog's records
    run from `begins` to `ends` (the offset after the last one); `committed` is the group's
    committed offset (negative: none yet). A reader's position may also step over the
    commit marker after a backlog, hence the cap."""
    return sum(
        min(max(committed.get(p, 0) - begins.get(p, 0), 0), end - begins.get(p, 0))
        for p, end in ends.items()
    )


def replay_rate(samples: Sequence[Progress], total: int) -> float | None:
    """Trips per second of a replay whose committed position was `samples` (in commit order),
    from its first commit to the first one that reached `total`. Each sample is taken when a
    transaction is produced, so the span between the first and the last holds exactly the
    transactions after the first: their trips over that time. None with fewer than two."""
    first = samples[0] if samples else None
    last = next((s for s in samples if s.count >= total), None)
    if first is None or last is None or last.time <= first.time:
        return None
    return rate(first, last)


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, p99.9 and max of durations in seconds, in milliseconds."""
    if not seconds:
        raise ValueError("no durations")
    values = np.asarray(seconds, dtype=np.float64) * 1000
    summary = {
        f"p{q:g}_ms": round(float(v), 1)
        for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)
    }
    return {**summary, "max_ms": round(float(values.max()), 1)}


def median_max_ms(seconds: Sequence[float]) -> dict[str, float]:
    """The median and the max of durations in seconds, in milliseconds (few of them: a
    percentile beyond the median would only be the max)."""
    if not seconds:
        raise ValueError("no durations")
    values = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "median_ms": round(float(np.median(values)), 1),
        "max_ms": round(float(values.max()), 1),
    }


@dataclass(frozen=True)
class Seen:
    """A prediction seen downstream: when its trip started and when it was seen (epoch s)."""

    started: float
    predicted: float
    seen: float


def steady(seen: Sequence[Seen], warmup_s: float) -> list[Seen]:
    """The predictions of trips started at least `warmup_s` after the first trip started."""
    if not seen:
        return []
    begin = min(s.started for s in seen) + warmup_s
    return [s for s in seen if s.started >= begin]


def steady_visible(
    visible: Sequence[tuple[float, float]], seen: Sequence[Seen], warmup_s: float
) -> list[float]:
    """Seconds from start to visibility of the trips (started, seen) in the steady window of
    the predictions `seen`."""
    if not seen:
        return []
    begin = min(s.started for s in seen) + warmup_s
    return [at - started for started, at in visible if started >= begin]


def start_rate(seen: Sequence[Seen]) -> float | None:
    """Trips started per second, from the first start to the last (None: too few to tell)."""
    starts = [s.started for s in seen]
    if len(starts) < 2 or max(starts) <= min(starts):
        return None
    return (len(starts) - 1) / (max(starts) - min(starts))


def cpu_ticks(stat_line: str) -> int:
    """User plus system clock ticks of a process, from its /proc/PID/stat line."""
    # The command name (field 2) may hold spaces and parentheses; fields count from its end.
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15


@dataclass(frozen=True)
class MachineTicks:
    busy: int
    total: int

    @classmethod
    def parse(cls, proc_stat: str) -> MachineTicks:
        """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq
        steal ... (guest time is already counted in user)."""
        values = [int(v) for v in proc_stat.splitlines()[0].split()[1:9]]
        idle = values[3] + values[4]
        return cls(busy=sum(values) - idle, total=sum(values))


def busy_share(start: MachineTicks, end: MachineTicks) -> float | None:
    """The share of all cores' time spent busy between two readings."""
    total = end.total - start.total
    return None if total <= 0 else (end.busy - start.busy) / total


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    value: float | None  # None: not measured in this run
    threshold: float
    at_least: bool  # True: value >= threshold is met; False: value <= threshold
    applicable: bool = True
    note: str | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "value": None if self.value is None else round(self.value, 3),
            "threshold": self.threshold,
            "met": self.met,
            "applicable": self.applicable,
            **({"note": self.note} if self.note else {}),
        }


# Two predictors need a core each beside the brokers' to scale; below this it cannot show.
SCALING_CORES = 4


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def targets(
    rates: Mapping[str, float | None],
    p99_ms: Mapping[float, float],
    cores: int,
    scaling_busy: float | None = None,
) -> list[Target]:
    """The issue's targets from the parts' rates (records/s, by part) and the p99 latency by
    trips-per-second rate. `scaling_busy`: the share of all cores busy while two predictors
    ran."""
    busy = "" if scaling_busy is None else f"; the cores were {scaling_busy:.0%} busy meanwhile"
    scaling_note = (
        f"{cores} cores: two predictors share them with three brokers and the bench, so the "
        f"second instance has no core of its own (needs {SCALING_CORES}+){busy}"
    )
    return [
        Target(
            "predictor_vs_baseline",
            "predictor (exactly once, batched) over passthrough (plain, no model)",
            ratio(rates.get("predictor"), rates.get("passthrough")),
            0.5,
            at_least=True,
        ),
        Target(
            "predictor_vs_naive",
            "predictor (exactly once, batched) over naive (one predict and one flush per message)",
            ratio(rates.get("predictor"), rates.get("naive")),
            20.0,
            at_least=True,
        ),
        Target(
            "p99_at_2000_ms",
            "p99 latency from trip start to prediction visible downstream at 2,000 trips/s",
            p99_ms.get(2000.0),
            250.0,
            at_least=False,
        ),
        Target(
            "predictor_vs_quix",
            "predictor (exactly once, batched) over quix-streams (exactly once, one model call "
            "per record)",
            ratio(rates.get("predictor"), rates.get("quix")),
            20.0,
            at_least=True,
        ),
        Target(
            "predictor_vs_bytewax",
            "predictor (exactly once, batched) over bytewax (at least once, one model call per "
            "batch)",
            ratio(rates.get("predictor"), rates.get("bytewax")),
            1.0,
            at_least=True,
        ),
        Target(
            "two_instances_vs_one",
            "two predictor instances over one",
            ratio(rates.get("two-predictors"), rates.get("predictor")),
            1.6,
            at_least=True,
            applicable=cores >= SCALING_CORES,
            note=None if cores >= SCALING_CORES else scaling_note,
        ),
    ]
