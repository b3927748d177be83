"""Graceful shutdown. In a service, SIGTERM and SIGINT set a flag that loops check between
batches, so the batch in hand is finished and committed before the clients close. In a command
that starts processes, the first signal interrupts it and later ones cannot cut its clean-up
short."""

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


@contextlib.contextmanager
def first_signal_interrupts(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """The first of `signals` raises KeyboardInterrupt; later ones are logged and ignored, so
    they cannot cut short the clean-up that follows. One Ctrl+C often arrives twice: the
    terminal sends it to the foreground process group, and `uv run` forwards it to its child
    too. Must be entered on the main thread; the previous handlers come back after."""
    interrupted = False

    def handle(signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        if interrupted:
            log.warning("still stopping everything this command started; please wait")
            return
        interrupted = True
        log.warning("%s: stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
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
