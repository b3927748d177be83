"""How the component benchmarks time a call: each of `repeat` calls on its own, by the clock."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """The seconds each of `repeat` calls of `fn()` took."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def per_trip_us(fn: Callable[[], object], trips: int, repeat: int = 7) -> float:
    """After one warm-up call, the median time of `fn()` over `repeat` calls, per trip of the
    `trips` it handles, in microseconds."""
    fn()
    return statistics.median(timed(fn, repeat)) / trips * 1e6
