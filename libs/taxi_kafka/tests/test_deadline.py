"""BackgroundCall and call_with_deadline: results, exceptions and stuck calls cross threads
intact (no Kafka)."""

from __future__ import annotations

import threading
import time

import pytest

from taxi_kafka._deadline import BackgroundCall, StuckCallError, call_with_deadline


def test_returns_the_calls_result() -> None:
    assert call_with_deadline(lambda: 42, 5.0, what="answer") == 42


def test_returns_none_from_a_call_that_returns_none() -> None:
    assert call_with_deadline(lambda: None, 5.0, what="nothing") is None


def test_raises_the_calls_own_exception() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        call_with_deadline(fail, 5.0, what="failing call")


def test_a_call_that_never_returns_is_abandoned_at_the_deadline() -> None:
    release = threading.Event()
    try:
        with pytest.raises(StuckCallError) as caught:
            call_with_deadline(release.wait, 0.05, what="stuck call")
        assert caught.value.what == "stuck call"
        assert str(caught.value) == "stuck call did not return within 0.05 s"
    finally:
        release.set()


def test_an_abandoned_call_runs_in_a_daemon_thread() -> None:
    release = threading.Event()
    started = threading.Event()

    def block() -> None:
        started.set()
        release.wait()

    try:
        with pytest.raises(StuckCallError):
            call_with_deadline(block, 0.05, what="blocking call")
        assert started.wait(5.0)
        stuck = [thread for thread in threading.enumerate() if thread.name == "blocking call"]
        assert stuck
        assert all(thread.daemon for thread in stuck)
    finally:
        release.set()


def test_a_background_call_runs_while_its_caller_goes_on() -> None:
    release = threading.Event()
    # Run in the caller's thread, the call would wait out its 5 s and return False.
    call = BackgroundCall(lambda: release.wait(5.0) and "released", what="overlapped call")
    assert call.finished_at is None
    release.set()
    before = time.time()
    assert call.result() == "released"
    assert call.finished_at is not None
    assert before <= call.finished_at <= time.time()


def test_a_background_calls_exception_is_raised_by_result() -> None:
    def fail() -> None:
        raise ValueError("boom")

    call = BackgroundCall(fail, what="failing call")
    with pytest.raises(ValueError, match="boom"):
        call.result()
