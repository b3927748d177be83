"""Model quality as the aggregator publishes it on `model_metrics` (pure: no I/O)."""

from __future__ import annotations

from datetime import datetime

from taxi_dashboard.buffers import BoundedMap
from taxi_events import ModelMetrics, Source

# At the aggregator's default 10 s windows, two sources: two hours of history.
DEFAULT_WINDOWS = 1_440


class QualityHistory:
    """The latest window figures per (source, window start), and the latest cumulative figures
    per source. A window published again (say, after a restart) replaces the earlier one."""

    def __init__(self, capacity: int = DEFAULT_WINDOWS) -> None:
        self._windows: BoundedMap[tuple[Source, datetime], ModelMetrics] = BoundedMap(capacity)
        self._cumulative: dict[Source, ModelMetrics] = {}

    def add(self, metrics: ModelMetrics) -> None:
        if metrics.scope == "cumulative":
            current = self._cumulative.get(metrics.source)
            # Records of different partitions arrive in any order: the newest figures win.
            if current is None or metrics.produced_at >= current.produced_at:
                self._cumulative[metrics.source] = metrics
        else:
            assert metrics.window_start is not None  # the event validates it for windows
            self._windows.put((metrics.source, metrics.window_start), metrics)

    def windows(self) -> list[ModelMetrics]:
        """The window figures held, ordered by window start."""
        return sorted(self._windows.values(), key=lambda m: (m.window_start, m.source))

    def cumulative(self) -> dict[Source, ModelMetrics]:
        return dict(self._cumulative)

    def model_version(self) -> str | None:
        """The model behind the newest cumulative figures."""
        if not self._cumulative:
            return None
        return max(self._cumulative.values(), key=lambda m: m.produced_at).model_version

    def __len__(self) -> int:
        return len(self._windows) + len(self._cumulative)
