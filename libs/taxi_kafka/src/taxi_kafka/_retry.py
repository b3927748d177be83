"""Bounded exponential backoff with jitter.

The policy itself is pure arithmetic (`backoff`, `delays`); `call` runs a function under it with
sleep, clock and randomness injectable, so tests can drive it without waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def _always(_exc: BaseException) -> bool:
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """Delays grow `initial * multiplier**n` up to `max_delay`, then jitter shaves off up to
    `jitter` of each one (so a jittered delay never exceeds its un-jittered base).

    At least one bound is required: `max_attempts` (calls, including the first) and/or
    `deadline` (seconds from the first call; the last sleep is cut to fit).
    """

    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 5.0
    max_attempts: int | None = None
    deadline: float | None = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial <= 0:
            raise ValueError(f"initial must be > 0, got {self.initial}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if self.max_delay < self.initial:
            raise ValueError(f"max_delay {self.max_delay} is below initial {self.initial}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")
        if self.max_attempts is None and self.deadline is None:
            raise ValueError("a retry policy needs max_attempts or a deadline")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError(f"deadline must be >= 0, got {self.deadline}")

    def backoff(self, retry: int) -> float:
        """The delay before retry number `retry` (0 = the first retry), before jitter."""
        try:
            return min(self.max_delay, self.initial * self.multiplier**retry)
        except OverflowError:  # multiplier**retry outgrew a float long after reaching max_delay
            return self.max_delay

    def jittered(self, base: float, rand: float) -> float:
        """`base` shortened by up to `jitter` of itself; `rand` is uniform in [0, 1)."""
        return base * (1.0 - self.jitter * rand)

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The sleeps between attempts: `max_attempts - 1` of them, or endless under a deadline."""
        retry = 0
        while self.max_attempts is None or retry < self.max_attempts - 1:
            yield self.jittered(self.backoff(retry), rand())
            retry += 1

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        retryable: Callable[[BaseException], bool] = _always,
        what: str = "",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> T:
        """Call `fn` until it returns; re-raise its last exception once the policy gives up.

        Only exceptions of `retry_on` for which `retryable(exc)` holds are retried.
        """
        start = clock()
        delays = self.delays(rand)
        attempt = 1
        while True:
            try:
                return fn()
            except retry_on as exc:
                if not retryable(exc):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise
                if self.deadline is not None:
                    remaining = self.deadline - (clock() - start)
                    if remaining <= 0:
                        raise
                    delay = min(delay, remaining)
                log.debug("%s attempt %d failed (%s); retrying in %.2fs", what, attempt, exc, delay)
                sleep(delay)
                attempt += 1
