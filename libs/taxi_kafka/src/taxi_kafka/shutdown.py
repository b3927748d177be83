"""Graceful shutdown: SIGTERM and SIGINT set a flag that loops check between batches, so the
batch in hand is finished and committed before the clients close."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(
    stop: threading.Event, signals: tuple[signal.Signals, ...] = STOP_SIGNALS
) -> Iterator[threading.Event]:
    """Set `stop` on any of `signals` while inside; the previous handlers come back after.
    Must be entered on the main thread (Python delivers signals only there)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "%s received: finishing the current batch, then stopping", signal.strsignal(signum)
        )
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_until_stopped(
    stop: threading.Event, step: Callable[[], object], close: Callable[[], None]
) -> None:
    """Call `step()` (one whole batch) until `stop` is set, then `close()`, also on errors."""
    try:
        while not stop.is_set():
            step()
    finally:
        close()
