"""Tumbling-window and cumulative model quality per source, driven by record time. No I/O.

A window [start, start + window_ms) closes once the watermark (the newest record time seen)
passes its end by `grace_ms`, leaving room for partitions that lag a little. A match that
arrives after its window closed goes to the oldest window still open, so nothing is dropped and
the windows of a source always add up to its cumulative figures.
"""

from __future__ import annotations

from typing import Any

import attrs

from taxi_events import Source
from taxi_stream._join import MatchedTrip
from taxi_stream._quality import QualityAccumulator


@attrs.define
class Tally:
    quality: QualityAccumulator = attrs.field(factory=QualityAccumulator)
    unmatched: int = 0
    model_version: str | None = None

    def merge(self, other: Tally) -> None:
        self.quality.merge(other.quality)
        self.unmatched += other.unmatched
        self.model_version = other.model_version or self.model_version

    def to_json(self) -> dict[str, Any]:
        return {
            "quality": self.quality.to_json(),
            "unmatched": self.unmatched,
            "model_version": self.model_version,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        return cls(
            QualityAccumulator.from_json(data["quality"]),
            int(data["unmatched"]),
            data["model_version"],
        )


@attrs.frozen
class ClosedWindow:
    source: Source
    start_ms: int
    end_ms: int
    window: Tally
    cumulative: Tally  # the source's figures since the start, including this window


@attrs.define
class WindowedQuality:
    window_ms: int = 10_000
    grace_ms: int = 2_000
    watermark_ms: int = -1
    open_windows: dict[tuple[Source, int], Tally] = attrs.field(factory=dict)
    cumulative: dict[Source, Tally] = attrs.field(factory=dict)

    def add_match(self, match: MatchedTrip) -> None:
        tally = self._window_for(match.source, match.matched_at_ms)
        tally.quality.add([match.actual_duration], [match.predicted_duration])
        tally.model_version = match.model_version

    def add_unmatched(self, source: Source, at_ms: int) -> None:
        self._window_for(source, at_ms).unmatched += 1

    def advance(self, now_ms: int) -> list[ClosedWindow]:
        """Move the watermark to `now_ms` (never back) and return the windows that closed,
        oldest first."""
        self.watermark_ms = max(self.watermark_ms, now_ms)
        closed = []
        for source, start in sorted(self.open_windows, key=lambda key: (key[1], key[0])):
            end = start + self.window_ms
            if end + self.grace_ms > self.watermark_ms:
                continue
            window = self.open_windows.pop((source, start))
            cumulative = self.cumulative.setdefault(source, Tally())
            cumulative.merge(window)
            closed.append(ClosedWindow(source, start, end, window, _copy(cumulative)))
        return closed

    def _window_for(self, source: Source, at_ms: int) -> Tally:
        # A late record's window has closed: the oldest window still open takes it.
        start = max(at_ms - at_ms % self.window_ms, self._first_open_start())
        return self.open_windows.setdefault((source, start), Tally())

    def _first_open_start(self) -> int:
        # Windows starting at or before watermark - window - grace are closed.
        last_closed = self.watermark_ms - self.window_ms - self.grace_ms
        return last_closed - last_closed % self.window_ms + self.window_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "window_ms": self.window_ms,
            "grace_ms": self.grace_ms,
            "watermark_ms": self.watermark_ms,
            "open_windows": [
                [source, start, tally.to_json()]
                for (source, start), tally in sorted(self.open_windows.items())
            ],
            "cumulative": {source: tally.to_json() for source, tally in self.cumulative.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowedQuality:
        return cls(
            window_ms=int(data["window_ms"]),
            grace_ms=int(data["grace_ms"]),
            watermark_ms=int(data["watermark_ms"]),
            open_windows={
                (source, int(start)): Tally.from_json(tally)
                for source, start, tally in data["open_windows"]
            },
            cumulative={src: Tally.from_json(t) for src, t in data["cumulative"].items()},
        )


def _copy(tally: Tally) -> Tally:
    return Tally.from_json(tally.to_json())
