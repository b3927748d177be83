"""Model quality as the aggregator publishes it on `model_metrics`, and the champion and the
challenger compared (pure: no I/O).

The aggregator publishes figures per source, role, model version and challenger: a record
without a challenger version holds a model's figures over every trip it predicted; one with a
challenger version holds head-to-head figures on exactly the trips that challenger shadowed,
published for the champion and the challenger alike (equal counts). Records written before
models had roles (schema 1.0) decode as the champion's over all its trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from taxi_dashboard.buffers import BoundedMap
from taxi_dashboard.deployments import Roles
from taxi_events import ModelMetrics, Role, Source

# At the aggregator's default 10 s windows: two hours of two sources' champion figures over all
# trips, with a challenger's head-to-head figures beside them (both roles), three series each.
DEFAULT_WINDOWS = 4_320
# Cumulative figures are one record per series (source, role, version, challenger): versions
# come and go slowly, and a series not published for longest is the one forgotten.
DEFAULT_SERIES = 256

# What a series of figures is about: source, role, model version, challenger version (None: all
# the model's trips; set: the trips that challenger shadowed).
QualityKey = tuple[Source, Role, str, str | None]


def quality_key(metrics: ModelMetrics) -> QualityKey:
    return (metrics.source, metrics.role, metrics.model_version, metrics.challenger_version)


def is_all_trips(metrics: ModelMetrics) -> bool:
    """The champion's figures over every trip it predicted: the pipeline's own quality."""
    return metrics.role == "champion" and metrics.challenger_version is None


class QualityHistory:
    """The latest window figures per (series, window start), and the newest cumulative figures
    per series. A window published again (say, after a restart) replaces the earlier one."""

    def __init__(self, capacity: int = DEFAULT_WINDOWS, series: int = DEFAULT_SERIES) -> None:
        self._windows: BoundedMap[tuple[QualityKey, datetime], ModelMetrics] = BoundedMap(capacity)
        self._cumulative: BoundedMap[QualityKey, ModelMetrics] = BoundedMap(series)

    def add(self, metrics: ModelMetrics) -> None:
        key = quality_key(metrics)
        if metrics.scope == "cumulative":
            current = self._cumulative.get(key)
            # Records of different partitions arrive in any order: the newest figures win.
            if current is None or metrics.produced_at >= current.produced_at:
                self._cumulative.put(key, metrics)
        else:
            assert metrics.window_start is not None  # the event validates it for windows
            self._windows.put((key, metrics.window_start), metrics)

    def windows(self) -> list[ModelMetrics]:
        """The window figures held, ordered by window start."""
        return sorted(
            self._windows.values(),
            key=lambda m: (m.window_start, *quality_key(m)[:3], m.challenger_version or ""),
        )

    def cumulative(self) -> dict[QualityKey, ModelMetrics]:
        return {quality_key(m): m for m in self._cumulative.values()}

    def model_version(self) -> str | None:
        """The model behind the newest cumulative figures of a champion over all its trips."""
        return newest_champion(self._cumulative.values())

    def __len__(self) -> int:
        return len(self._windows) + len(self._cumulative)


def newest_champion(cumulative: Iterable[ModelMetrics]) -> str | None:
    """The version of the newest all-trips champion figures; None if there are none."""
    champions = [m for m in cumulative if is_all_trips(m)]
    return max(champions, key=lambda m: m.produced_at).model_version if champions else None


def champion_version(
    cumulative: Mapping[QualityKey, ModelMetrics], roles: Roles | None
) -> str | None:
    """The current champion: the last deployment decision's, or, before any decision (a
    pipeline without a registry), the model behind the newest figures."""
    if roles is not None:
        return roles.champion
    return newest_champion(cumulative.values())


def champion_figures(
    cumulative: Mapping[QualityKey, ModelMetrics], champion: str | None
) -> dict[Source, ModelMetrics]:
    """Per source, the cumulative figures of `champion` over all its trips (None: of whichever
    model has the newest ones)."""
    found: dict[Source, ModelMetrics] = {}
    for m in cumulative.values():
        if not is_all_trips(m) or (champion is not None and m.model_version != champion):
            continue
        current = found.get(m.source)
        if current is None or m.produced_at > current.produced_at:
            found[m.source] = m
    return found


def all_trips_windows(windows: Iterable[ModelMetrics]) -> list[ModelMetrics]:
    """The champions' window figures over all their trips, one per source and window: when the
    champion changed within a window, the model that scored more of its trips."""
    chosen: dict[tuple[Source, datetime | None], ModelMetrics] = {}
    for m in windows:
        if not is_all_trips(m):
            continue
        key = (m.source, m.window_start)
        current = chosen.get(key)
        if current is None or m.count > current.count:
            chosen[key] = m
    return list(chosen.values())


@dataclass(frozen=True)
class Standing:
    """One model's cumulative figures on one source (None: not scored yet)."""

    role: Role
    version: str | None
    figures: ModelMetrics | None


@dataclass(frozen=True)
class Comparison:
    """The champion beside the challenger on one source. With a challenger, both figures are on
    the same trips, the ones it shadowed; without one, the champion's are over all its trips."""

    source: Source
    champion: Standing
    challenger: Standing | None

    @property
    def head_to_head(self) -> bool:
        return self.challenger is not None

    def standings(self) -> list[Standing]:
        return [self.champion] if self.challenger is None else [self.champion, self.challenger]


def compare(
    cumulative: Mapping[QualityKey, ModelMetrics], roles: Roles | None, source: Source
) -> Comparison:
    """The current champion and challenger (see `champion_version`) on `source`."""
    champion = champion_version(cumulative, roles)
    challenger = roles.challenger if roles is not None else None
    if challenger is None:
        figures = None if champion is None else cumulative.get((source, "champion", champion, None))
        return Comparison(source, Standing("champion", champion, figures), None)
    same_trips = (
        None if champion is None else cumulative.get((source, "champion", champion, challenger))
    )
    shadowed = cumulative.get((source, "challenger", challenger, challenger))
    return Comparison(
        source,
        Standing("champion", champion, same_trips),
        Standing("challenger", challenger, shadowed),
    )
