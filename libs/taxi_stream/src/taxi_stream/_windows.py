"""Tumbling-window and cumulative model quality per MetricsKey (source, role, model version and
challenger), driven by record time. No I/O.

A window [start, start + window_ms) closes once the watermark (the newest record time seen)
passes its end by `grace_ms`, leaving room for partitions that lag a little. A match that
arrives after its window closed goes to the oldest window still open, so nothing is dropped and
the windows of a key always add up to its cumulative figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import attrs

from taxi_events import Source
from taxi_stream._join import UNKNOWN_MODEL, MatchedTrip, MetricsKey
from taxi_stream._quality import QualityAccumulator

# The JSON format of the windows' state. Format 1 (no "format" field) kept one tally per source
# with the model version inside: the champion's figures before there were challengers.
FORMAT = 2


@attrs.define
class Tally:
    quality: QualityAccumulator = attrs.field(factory=QualityAccumulator)
    unmatched: int = 0

    def merge(self, other: Tally) -> None:
        self.quality.merge(other.quality)
        self.unmatched += other.unmatched

    def to_json(self) -> dict[str, Any]:
        return {"quality": self.quality.to_json(), "unmatched": self.unmatched}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tally:
        return cls(QualityAccumulator.from_json(data["quality"]), int(data["unmatched"]))


@attrs.frozen
class ClosedWindow:
    key: MetricsKey
    start_ms: int
    end_ms: int
    window: Tally
    cumulative: Tally  # the key's figures since the start, including this window

    @property
    def source(self) -> Source:
        return self.key.source


@attrs.define
class WindowedQuality:
    window_ms: int = 10_000
    grace_ms: int = 2_000
    watermark_ms: int = -1
    open_windows: dict[tuple[MetricsKey, int], Tally] = attrs.field(factory=dict)
    cumulative: dict[MetricsKey, Tally] = attrs.field(factory=dict)

    def add_match(self, match: MatchedTrip) -> None:
        tally = self._window_for(match.key, match.matched_at_ms)
        tally.quality.add([match.actual_duration], [match.predicted_duration])

    def add_unmatched(self, key: MetricsKey, at_ms: int) -> None:
        self._window_for(key, at_ms).unmatched += 1

    def advance(self, now_ms: int) -> list[ClosedWindow]:
        """Move the watermark to `now_ms` (never back) and return the windows that closed,
        oldest first."""
        self.watermark_ms = max(self.watermark_ms, now_ms)
        closed = []
        for key, start in sorted(self.open_windows, key=lambda w: (w[1], w[0].sort_key())):
            end = start + self.window_ms
            if end + self.grace_ms > self.watermark_ms:
                continue
            window = self.open_windows.pop((key, start))
            cumulative = self.cumulative.setdefault(key, Tally())
            cumulative.merge(window)
            closed.append(ClosedWindow(key, start, end, window, _copy(cumulative)))
        return closed

    def _window_for(self, key: MetricsKey, at_ms: int) -> Tally:
        # A late record's window has closed: the oldest window still open takes it.
        start = max(at_ms - at_ms % self.window_ms, self._first_open_start())
        return self.open_windows.setdefault((key, start), Tally())

    def _first_open_start(self) -> int:
        # Windows starting at or before watermark - window - grace are closed.
        last_closed = self.watermark_ms - self.window_ms - self.grace_ms
        return last_closed - last_closed % self.window_ms + self.window_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "window_ms": self.window_ms,
            "grace_ms": self.grace_ms,
            "watermark_ms": self.watermark_ms,
            "open_windows": [
                [list(key), start, self.open_windows[key, start].to_json()]
                for key, start in sorted(self.open_windows, key=lambda w: (w[0].sort_key(), w[1]))
            ],
            "cumulative": [
                [list(key), self.cumulative[key].to_json()]
                for key in sorted(self.cumulative, key=MetricsKey.sort_key)
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WindowedQuality:
        """Read the state back, in this format or in format 1 (migrated: see `_from_format_1`)."""
        written = data.get("format", 1)
        if written == 1:
            return cls._from_format_1(data)
        if written != FORMAT:
            raise ValueError(f"windows in format {written!r}: this aggregator reads {FORMAT}")
        return cls(
            window_ms=int(data["window_ms"]),
            grace_ms=int(data["grace_ms"]),
            watermark_ms=int(data["watermark_ms"]),
            open_windows={
                (_key(key), int(start)): Tally.from_json(tally)
                for key, start, tally in data["open_windows"]
            },
            cumulative={_key(key): Tally.from_json(tally) for key, tally in data["cumulative"]},
        )

    @classmethod
    def _from_format_1(cls, data: Mapping[str, Any]) -> WindowedQuality:
        """Format 1 kept one tally per source, of the champion's figures over all its trips,
        with the version it last scored: those become the champion's figures (challenger None)
        under that version. A window that matched nothing named no version: it takes its
        source's cumulative one, else UNKNOWN_MODEL."""
        versions = {source: t.get("model_version") for source, t in data["cumulative"].items()}

        def key(source: Source, tally: Mapping[str, Any]) -> MetricsKey:
            version = tally.get("model_version") or versions.get(source) or UNKNOWN_MODEL
            return MetricsKey(source, "champion", version, None)

        return cls(
            window_ms=int(data["window_ms"]),
            grace_ms=int(data["grace_ms"]),
            watermark_ms=int(data["watermark_ms"]),
            open_windows={
                (key(source, tally), int(start)): Tally.from_json(tally)
                for source, start, tally in data["open_windows"]
            },
            cumulative={
                key(source, tally): Tally.from_json(tally)
                for source, tally in data["cumulative"].items()
            },
        )


def _key(fields: list[Any]) -> MetricsKey:
    source, role, model_version, challenger_version = fields
    return MetricsKey(cast(Source, source), role, model_version, challenger_version)


def _copy(tally: Tally) -> Tally:
    return Tally.from_json(tally.to_json())
