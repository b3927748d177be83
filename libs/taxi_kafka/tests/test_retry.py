"""RetryPolicy: bounded, growing, jittered delays, run without real sleeping."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_kafka._retry import RetryPolicy

initials = st.floats(min_value=0.001, max_value=10)
multipliers = st.floats(min_value=1, max_value=10)
jitters = st.floats(min_value=0, max_value=1)
unit = st.floats(min_value=0, max_value=1, exclude_max=True)


@st.composite
def policies(draw: st.DrawFn, deadline: bool = False) -> RetryPolicy:
    initial = draw(initials)
    return RetryPolicy(
        initial=initial,
        multiplier=draw(multipliers),
        max_delay=initial * draw(st.floats(min_value=1, max_value=1000)),
        max_attempts=draw(st.integers(min_value=1, max_value=30)),
        deadline=draw(st.floats(min_value=0, max_value=100)) if deadline else None,
        jitter=draw(jitters),
    )


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def failing(calls: list[int], failures: int) -> object:
    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionError("not yet")
        return "done"

    return fn


@given(policies(), st.integers(min_value=0, max_value=2000))
def test_backoff_is_bounded_and_never_shrinks(policy, retry):
    assert policy.initial <= policy.backoff(retry) <= policy.max_delay
    assert policy.backoff(retry) <= policy.backoff(retry + 1)


@given(policies(), st.lists(unit, min_size=30, max_size=30))
def test_delays_are_jittered_down_within_bounds(policy, randoms):
    delays = list(policy.delays(iter(randoms).__next__))
    assert len(delays) == policy.max_attempts - 1
    for retry, delay in enumerate(delays):
        base = policy.backoff(retry)
        assert base * (1 - policy.jitter) - 1e-9 <= delay <= base <= policy.max_delay


@given(policies(), st.integers(min_value=0, max_value=40), unit)
def test_attempts_never_exceed_max_attempts(policy, failures, rand):
    fake, calls = FakeTime(), []
    fn = failing(calls, failures)
    if failures < policy.max_attempts:
        assert policy.call(fn, sleep=fake.sleep, clock=fake.clock, rand=lambda: rand) == "done"
        assert len(calls) == failures + 1
    else:
        with pytest.raises(ConnectionError):
            policy.call(fn, sleep=fake.sleep, clock=fake.clock, rand=lambda: rand)
        assert len(calls) == policy.max_attempts
    assert len(fake.sleeps) == len(calls) - 1


@given(policies(deadline=True), unit)
def test_total_sleep_stays_within_the_deadline(policy, rand):
    fake, calls = FakeTime(), []
    with pytest.raises(ConnectionError):
        policy.call(failing(calls, 10**6), sleep=fake.sleep, clock=fake.clock, rand=lambda: rand)
    assert sum(fake.sleeps) <= policy.deadline + 1e-9


def test_a_deadline_alone_bounds_the_attempts():
    fake, calls = FakeTime(), []
    policy = RetryPolicy(initial=1, multiplier=2, max_delay=4, deadline=10, jitter=0)
    with pytest.raises(ConnectionError):
        policy.call(failing(calls, 10**6), sleep=fake.sleep, clock=fake.clock)
    # Sleeps 1, 2, 4, then the 3 s left: five attempts in 10 s.
    assert fake.sleeps == [1, 2, 4, 3]
    assert len(calls) == 5


def test_exceptions_not_retried_propagate_at_once():
    fake, calls = FakeTime(), []
    policy = RetryPolicy(max_attempts=5, deadline=None)
    with pytest.raises(ConnectionError):
        policy.call(failing(calls, 3), retry_on=(KeyError,), sleep=fake.sleep)
    with pytest.raises(ConnectionError):
        policy.call(failing(calls, 3), retryable=lambda exc: False, sleep=fake.sleep)
    assert fake.sleeps == []


def test_without_a_max_attempts_delays_go_on_at_max_delay():
    policy = RetryPolicy(initial=0.5, multiplier=3, max_delay=2, deadline=60, jitter=0)
    assert list(itertools.islice(policy.delays(), 5)) == [0.5, 1.5, 2, 2, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"multiplier": 0.5},
        {"initial": 2, "max_delay": 1},
        {"jitter": 1.5},
        {"max_attempts": None, "deadline": None},
        {"max_attempts": 0},
        {"deadline": -1},
    ],
)
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 -- each case has its own message
        RetryPolicy(**kwargs)
