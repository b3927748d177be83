"""Calls on a thread of their own: overlapping a blocking call, and bounding one that may
ignore its own timeout.

librdkafka's send_offsets_to_transaction() can block for good when the group coordinator's
broker goes away (librdkafka #5456: the coordinator request's timeout is never checked; #5511: a
decommissioned coordinator is never looked up again). The call runs in a daemon thread instead,
and the caller stops waiting at the deadline and abandons the client it was using.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class StuckCallError(Exception):
    """The call did not return in time. It may still be running (and may never return), so
    whatever it was using must be abandoned, not reused."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not return within {seconds:g} s")
        self.what = what
        self.seconds = seconds


class BackgroundCall(Generic[T]):
    """`call()` started on a daemon thread; result() waits for its result or exception.
    `finished_at` is when it returned (epoch seconds), once it has.

    A daemon thread, not an executor: a stuck call must not hold the process up at exit."""

    def __init__(self, call: Callable[[], T], what: str) -> None:
        self.what = what
        self.finished_at: float | None = None
        self._call = call
        self._outcome: list[T] = []
        self._failure: list[BaseException] = []
        self._done = threading.Event()
        threading.Thread(target=self._run, name=what, daemon=True).start()

    def _run(self) -> None:
        try:
            self._outcome.append(self._call())
        except BaseException as exc:  # handed over to the caller's thread
            self._failure.append(exc)
        finally:
            self.finished_at = time.time()
            self._done.set()

    def result(self, seconds: float | None = None) -> T:
        """The call's result, or its exception raised here; StuckCallError if it is still
        running after `seconds` (None: wait as long as it takes)."""
        if not self._done.wait(seconds):
            raise StuckCallError(self.what, seconds or 0.0)
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]


def call_with_deadline(call: Callable[[], T], seconds: float, what: str) -> T:
    """`call()`'s result or exception, or StuckCallError once `seconds` have passed."""
    return BackgroundCall(call, what).result(seconds)
