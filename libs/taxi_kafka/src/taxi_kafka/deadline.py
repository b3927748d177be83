"""Bounding a blocking call that may ignore its own timeout.

librdkafka's send_offsets_to_transaction() can block for good when the group coordinator's
broker goes away (librdkafka #5456: the coordinator request's timeout is never checked; #5511: a
decommissioned coordinator is never looked up again). The call runs in a daemon thread instead,
and the caller stops waiting at the deadline and abandons the client it was using.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class StuckCallError(Exception):
    """The call did not return in time. It may still be running (and may never return), so
    whatever it was using must be abandoned, not reused."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not return within {seconds:g} s")
        self.what = what
        self.seconds = seconds


def call_with_deadline(call: Callable[[], T], seconds: float, what: str) -> T:
    """`call()`'s result or exception, or StuckCallError once `seconds` have passed.

    A daemon thread, not an executor: a stuck worker must not hold the process up at exit."""
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed over to the caller's thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=what, daemon=True).start()
    if not done.wait(seconds):
        raise StuckCallError(what, seconds)
    if failure:
        raise failure[0]
    return outcome[0]
