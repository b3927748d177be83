"""Signals in this very process: pytest runs tests on the main thread, where Python handles them."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from taxi_kafka._shutdown import first_signal_interrupts


def wait_for_a_signal() -> None:
    time.sleep(10)  # a handler that raises cuts this short


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_interrupts_and_later_ones_cannot_cut_the_clean_up_short(first, caplog):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    cleaned_up = False
    with caplog.at_level(logging.WARNING), first_signal_interrupts():
        try:
            os.kill(os.getpid(), first)
            wait_for_a_signal()
        except KeyboardInterrupt:
            # What `uv run` does to a terminal's Ctrl+C: it forwards it a moment later.
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            cleaned_up = True
    assert cleaned_up
    assert f"{first.name}: stopping" in caplog.text
    assert caplog.text.count("still stopping everything this command started") == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_as_a_decorator_each_call_is_guarded_afresh():
    @first_signal_interrupts()
    def interrupted() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        wait_for_a_signal()

    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            interrupted()
