"""The automatic promotion and rollback policy (issue 20): pure, fed records as the trainer reads
them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from taxi_events import DeploymentDecision, ModelMetrics, Source
from taxi_events import testing as events
from taxi_model import Decider, DeploymentError, current_roles, quality_metrics
from taxi_stream import Aggregation, Contenders, HeadToHead, PromotionPolicy

DELTA = 0.02
MIN_TRIPS = 300
WINDOW = timedelta(seconds=10)
START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ACTOR = "auto-promotion@trainer"


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def person(seconds: float) -> Decider:
    return Decider("ana@laptop", at(seconds))


def policy() -> PromotionPolicy:
    return PromotionPolicy(delta=DELTA, min_trips=MIN_TRIPS)


def window_record(
    role: str,
    version: str,
    challenger: str | None,
    start: datetime,
    *,
    trips: int,
    rmsle: float,
    source: Source = "train",
) -> ModelMetrics:
    return ModelMetrics(
        source=source,
        scope="window",
        window_start=start,
        window_end=start + WINDOW,
        count=trips,
        rmsle=rmsle if trips else None,
        mae=100.0 if trips else None,
        median_ape=0.2 if trips else None,
        within_30=0.7 if trips else None,
        unmatched=0,
        model_version=version,
        role=role,
        challenger_version=challenger,
    )


def head_to_head(
    contenders: tuple[str, str],
    rmsles: tuple[float, float],
    start: datetime,
    trips: int,
    *,
    challenger_trips: int | None = None,
    source: Source = "train",
) -> list[ModelMetrics]:
    """Both roles' window records of one window, the challenger's first (as the aggregator
    orders them). `challenger_trips` other than `trips`: it was scored against another champion
    in that window too."""
    (champion, challenger), (champion_rmsle, challenger_rmsle) = contenders, rmsles
    shadow_trips = trips if challenger_trips is None else challenger_trips
    return [
        window_record(
            "challenger",
            challenger,
            challenger,
            start,
            trips=shadow_trips,
            rmsle=challenger_rmsle,
            source=source,
        ),
        window_record(
            "champion",
            champion,
            challenger,
            start,
            trips=trips,
            rmsle=champion_rmsle,
            source=source,
        ),
    ]


def score(
    target: PromotionPolicy,
    contenders: tuple[str, str],
    rmsles: tuple[float, float],
    *,
    start: float,
    windows: int,
    trips: int = 40,
    **options: object,
) -> float:
    """Feed `windows` consecutive head-to-head windows from second `start` on, `trips` each;
    returns the second the last one ended."""
    for n in range(windows):
        began = at(start + n * WINDOW.total_seconds())
        for record in head_to_head(contenders, rmsles, began, trips, **options):
            target.observe(record)
    return start + windows * WINDOW.total_seconds()


def champion_then_challenger(
    champion: str = "a", challenger: str = "b"
) -> list[DeploymentDecision]:
    history: list[DeploymentDecision] = []
    history.append(person(0).publish(history, champion, "champion", "first model"))
    history.append(person(5).publish(history, challenger, "challenger", "retrained"))
    return history


def decide(target: PromotionPolicy, history: list[DeploymentDecision], seconds: float):
    return target.decide(history, Decider(ACTOR, at(seconds)))


def decided_at_min_trips(
    target: PromotionPolicy,
    history: list[DeploymentDecision],
    contenders: tuple[str, str],
    rmsles: tuple[float, float],
    start: float,
) -> DeploymentDecision:
    """Score windows of 40 trips from `start` on: no decision at 280 trips, one at 320."""
    end = score(target, contenders, rmsles, start=start, windows=7)
    assert decide(target, history, end) is None
    end = score(target, contenders, rmsles, start=end, windows=1)
    decision = decide(target, history, end)
    assert decision is not None
    assert decision.evidence["trips"] == 320
    return decision


# -- promotion -------------------------------------------------------------------------------


@given(
    windows=st.integers(1, 12),
    trips=st.integers(1, 60),
    champion_rmsle=st.floats(0.2, 0.8),
    challenger_rmsle=st.floats(0.2, 0.8),
)
def test_promotes_only_with_enough_trips_and_margin(
    windows, trips, champion_rmsle, challenger_rmsle
):
    assume(abs(champion_rmsle - challenger_rmsle - DELTA) > 1e-9)
    target, history = policy(), champion_then_challenger()
    end = score(
        target,
        ("a", "b"),
        (champion_rmsle, challenger_rmsle),
        start=10,
        windows=windows,
        trips=trips,
    )
    decision = decide(target, history, end)
    should = windows * trips >= MIN_TRIPS and champion_rmsle - challenger_rmsle > DELTA
    assert (decision is not None) == should
    if decision is not None:
        assert (decision.action, decision.version, decision.champion, decision.challenger) == (
            "promote",
            "b",
            "b",
            "a",
        )
        assert decision.evidence["trips"] == windows * trips
        assert decision.evidence["champion_rmsle"] == pytest.approx(champion_rmsle)
        assert decision.evidence["challenger_rmsle"] == pytest.approx(challenger_rmsle)


def test_a_promotion_carries_its_evidence_and_says_why():
    target, history = policy(), champion_then_challenger()
    end = score(target, ("a", "b"), (0.45, 0.40), start=10, windows=10)
    decision = decide(target, history, end)
    assert decision is not None
    assert decision.evidence == {
        "champion_rmsle": pytest.approx(0.45),
        "challenger_rmsle": pytest.approx(0.40),
        "trips": 400.0,
        "delta": DELTA,
        "min_trips": float(MIN_TRIPS),
    }
    assert (decision.actor, decision.decided_at) == (ACTOR, at(end))
    for words in (
        "automatic promotion",
        "b beat a",
        "same 400 live train trips",
        "0.4500",
        "0.4000",
        "0.02 RMSLE on at least 300 trips",
        "probation",
    ):
        assert words in decision.reason


def test_the_whole_aggregator_feeds_it():
    """Real head-to-head windows, from the aggregator's join of champion and shadow predictions
    with trip ends: the evidence is both models' RMSLE on exactly those trips."""
    aggregation = Aggregation.create(ttl_ms=60_000, window_ms=10_000, grace_ms=1_000)
    opened = int(at(10).timestamp() * 1000)
    actual, champion_guess, challenger_guess = [], [], []
    metrics: list[ModelMetrics] = []
    for n in range(400):
        trip, now = f"t{n}", opened + n * 100
        duration = 300.0 + 37 * (n % 50)
        actual.append(duration)
        champion_guess.append(duration * (1.6 if n % 2 else 0.7))
        challenger_guess.append(duration * (1.1 if n % 3 else 0.95))
        sides = [
            events.prediction(
                trip,
                predicted_duration=champion_guess[-1],
                model_version="a",
                challenger_version="b",
            ),
            events.prediction(
                trip, predicted_duration=challenger_guess[-1], model_version="b", role="challenger"
            ),
            events.trip_finished(trip, trip_duration=duration, is_estimate=False),
        ]
        for side in sides:
            aggregation.add(side, now)
        metrics += aggregation.advance(now)
    metrics += aggregation.advance(opened + 60_000)
    target, history = policy(), champion_then_challenger()
    for record in metrics:
        target.observe(record)
    decision = decide(target, history, 60)
    assert decision is not None
    assert decision.action == "promote"
    assert decision.evidence["trips"] == 400
    expected_champion = quality_metrics(actual, champion_guess).rmsle
    expected_challenger = quality_metrics(actual, challenger_guess).rmsle
    assert decision.evidence["champion_rmsle"] == pytest.approx(expected_champion, rel=1e-9)
    assert decision.evidence["challenger_rmsle"] == pytest.approx(expected_challenger, rel=1e-9)


# -- once, and a person's decisions win -----------------------------------------------------


def test_it_decides_once_on_the_same_trial():
    target, history = policy(), champion_then_challenger()
    end = score(target, ("a", "b"), (0.45, 0.40), start=10, windows=10)
    first = decide(target, history, end)
    assert first is not None
    # Asked again before its decision is read back, with more figures even: nothing.
    end = score(target, ("a", "b"), (0.45, 0.40), start=end, windows=10)
    assert decide(target, history, end) is None
    assert decide(target, history, end + 1) is None
    # Read back, the decision starts a trial of its own: probation, from no trips.
    history.append(first)
    trial = target.trial(history)
    assert trial is not None
    assert (trial.contenders, trial.on_probation, trial.figures) == (
        Contenders("b", "a"),
        True,
        HeadToHead(),
    )
    assert decide(target, history, end + 2) is None


def test_a_persons_decision_ends_the_trial():
    target, history = policy(), champion_then_challenger()
    end = score(target, ("a", "b"), (0.45, 0.40), start=10, windows=5)
    # A person withdraws the challenger halfway: no trial, whatever the figures.
    history.append(person(end).withdraw(history, "enough"))
    end = score(target, ("a", "b"), (0.45, 0.40), start=end + 5, windows=10)
    assert target.trial(history) is None
    assert decide(target, history, end) is None
    # and publishes it again: a new trial, counted from then on.
    history.append(person(end).publish(history, "b", "challenger", "once more"))
    decided_at_min_trips(target, history, ("a", "b"), (0.45, 0.40), start=end + 5)


def test_a_person_promoting_first_wins():
    target, history = policy(), champion_then_challenger()
    end = score(target, ("a", "b"), (0.45, 0.40), start=10, windows=10)
    history.append(person(end).promote(history, "b", {"a", "b"}, "my call"))
    assert decide(target, history, end + 1) is None  # no challenger: nothing to decide
    assert current_roles(history).champion == "b"


def test_a_person_rolling_back_a_probation_ends_it():
    target, history = policy(), champion_then_challenger()
    end = score(target, ("a", "b"), (0.45, 0.40), start=10, windows=10)
    promotion = decide(target, history, end)
    assert promotion is not None
    history.append(promotion)
    history.append(person(end + 1).rollback(history, "not yet"))
    end = score(target, ("b", "a"), (0.50, 0.40), start=end + 5, windows=10)
    assert target.trial(history) is None
    assert decide(target, history, end) is None


def test_a_new_challenger_after_drift_is_not_promoted_early():
    """Retrained at once on a drift event, the new challenger replaces the one being scored:
    its trial starts from nothing, however much better it looks on its first trips."""
    target, history = policy(), champion_then_challenger()
    end = score(
        target, ("a", "b"), (0.60, 0.50), start=10, windows=6
    )  # 240 trips: below the minimum
    history.append(person(end).publish(history, "c", "challenger", "retrained on drift"))
    end = score(target, ("a", "c"), (0.90, 0.30), start=end + 5, windows=2)
    assert decide(target, history, end) is None
    trial = target.trial(history)
    assert trial is not None
    assert (trial.contenders, trial.figures.trips) == (Contenders("a", "c"), 80)


# -- probation ---------------------------------------------------------------------------------


def promoted(target: PromotionPolicy) -> tuple[list[DeploymentDecision], float]:
    history = champion_then_challenger()
    end = score(target, ("a", "b"), (0.45, 0.40), start=10, windows=10)
    decision = decide(target, history, end)
    assert decision is not None
    return [*history, decision], end + 5


@pytest.mark.parametrize(
    ("rmsles", "action", "roles"),
    [
        ((0.47, 0.44), "rollback", ("a", None)),  # the new champion is worse by 0.03
        ((0.45, 0.44), "withdraw", ("b", None)),  # worse by 0.01 only: it stays
        ((0.40, 0.44), "withdraw", ("b", None)),  # better
    ],
)
def test_probation_rolls_back_a_worse_champion_or_withdraws_its_predecessor(rmsles, action, roles):
    target = policy()
    history, end = promoted(target)
    decision = decided_at_min_trips(target, history, ("b", "a"), rmsles, start=end)
    assert decision.action == action
    assert (decision.champion, decision.challenger) == roles
    assert decision.evidence["champion_rmsle"] == pytest.approx(rmsles[0])
    assert decision.evidence["challenger_rmsle"] == pytest.approx(rmsles[1])
    history.append(decision)
    assert decide(target, history, end + 1) is None  # settled: no trial left


# -- whose figures ------------------------------------------------------------------------------


def test_figures_of_the_same_two_in_other_roles_do_not_count():
    target, history = policy(), champion_then_challenger()
    # b against a, b as champion: another pair's figures, however good they make b look.
    end = score(target, ("b", "a"), (0.30, 0.60), start=10, windows=10)
    assert decide(target, history, end) is None
    trial = target.trial(history)
    assert trial is not None
    assert trial.figures == HeadToHead()


def test_figures_from_before_a_rollback_do_not_count():
    target = policy()
    history, end = promoted(target)
    end = score(target, ("b", "a"), (0.50, 0.40), start=end, windows=10)
    rollback = decide(target, history, end)
    assert rollback is not None
    assert rollback.action == "rollback"
    history.append(rollback)
    # A person publishes b as the challenger again: what made b win before counts no more.
    history.append(person(end + 1).publish(history, "b", "challenger", "try b again"))
    end = score(target, ("a", "b"), (0.45, 0.40), start=end + 5, windows=2)
    assert decide(target, history, end) is None
    trial = target.trial(history)
    assert trial is not None
    assert trial.figures.trips == 80


def test_windows_the_challenger_shared_with_another_champion_do_not_count():
    """Just after a person promoted d (keeping b as the challenger), b's window also holds
    trips it shadowed for a: that window is no comparison with d."""
    target, history = policy(), champion_then_challenger()
    history.append(person(6).promote(history, "d", {"a", "b", "d"}, "hand-picked"))
    end = score(target, ("d", "b"), (0.45, 0.40), start=10, windows=1, challenger_trips=43)
    for record in head_to_head(("a", "b"), (0.5, 0.5), at(10), 3, challenger_trips=43):
        target.observe(record)
    decided_at_min_trips(target, history, ("d", "b"), (0.45, 0.40), start=end)


def test_only_train_head_to_head_windows_count():
    target, history = policy(), champion_then_challenger()
    # Test-source ends are estimates; cumulative figures and the champion over all its trips
    # are no head-to-head windows.
    score(target, ("a", "b"), (0.45, 0.40), start=10, windows=10, source="test")
    for n in range(10):
        target.observe(window_record("champion", "a", None, at(10 + 10 * n), trips=40, rmsle=0.45))
    cumulative = head_to_head(("a", "b"), (0.45, 0.40), at(10), 400)
    for record in cumulative:
        target.observe(attrs.evolve(record, scope="cumulative", window_start=None, window_end=None))
    assert decide(target, history, 200) is None
    trial = target.trial(history)
    assert trial is not None
    assert trial.figures == HeadToHead()


@pytest.mark.parametrize("trial_known", [False, True])
def test_a_record_read_twice_counts_once(trial_known):
    target, history = policy(), champion_then_challenger()
    if trial_known:
        target.trial(history)
    records = [
        record
        for n in range(8)
        for record in head_to_head(("a", "b"), (0.45, 0.40), at(10 + 10 * n), 40)
    ]
    for record in records:
        target.observe(record)
        target.observe(record)
    for record in records:  # a consumer that went back
        target.observe(record)
    for record in reversed(records):
        target.observe(record)
    trial = target.trial(history)
    assert trial is not None
    assert trial.figures.trips == 320


def test_a_restarted_trainer_reading_the_history_first_counts_the_trial_only():
    """After a restart the trainer may read model_deployments whole before model_metrics from
    the start: the windows of an earlier trial of the same two, read after, do not count."""
    target = policy()
    history = champion_then_challenger()
    history.append(person(50).withdraw(history, "pause"))
    history.append(person(100).publish(history, "b", "challenger", "again"))
    assert target.trial(history) is not None
    score(target, ("a", "b"), (0.45, 0.40), start=10, windows=4)  # the earlier trial
    score(target, ("a", "b"), (0.45, 0.40), start=100, windows=5)
    trial = target.trial(history)
    assert trial is not None
    assert trial.figures.trips == 200


def test_windows_of_pairs_out_of_play_are_forgotten():
    """Memory stays flat: windows of other pairs are kept only while a decision still to come
    could begin a trial they count in (the private state is looked at: nothing else shows it)."""
    target, history = policy(), champion_then_challenger()
    for n in range(50):
        score(target, ("c", "a"), (0.45, 0.40), start=100 * n, windows=5)
        history.append(person(100 * n + 55).publish(history, "b", "challenger", "again"))
        target.trial(history)
    held = sum(len(windows) for windows in target._windows.values())
    assert held == 0


def test_figures_read_before_the_decision_count_from_it_on():
    """The trainer may read the first windows of a trial before the decision that began it:
    they count once it reads the decision, from the decision's time on."""
    target = policy()
    history = champion_then_challenger()
    assert target.trial(history[:1]) is None  # the challenger not read yet
    score(target, ("a", "b"), (0.45, 0.40), start=0, windows=9)  # the first window began before it
    trial = target.trial(history)
    assert trial is not None
    assert trial.figures.trips == 320


# -- any sequence --------------------------------------------------------------------------


VERSIONS = "abc"
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("window"),
            st.sampled_from(VERSIONS),
            st.sampled_from(VERSIONS),
            st.integers(0, 150),
            st.integers(0, 2),  # trips the challenger was scored on against another champion
            st.floats(0.2, 0.8),
            st.floats(0.2, 0.8),
        ),
        st.tuples(
            st.just("publish"),
            st.sampled_from(VERSIONS),
            st.sampled_from(["champion", "challenger"]),
        ),
        st.tuples(st.just("promote"), st.sampled_from(VERSIONS)),
        st.tuples(st.just("rollback")),
        st.tuples(st.just("withdraw")),
        st.tuples(st.just("policy")),
    ),
    max_size=40,
)


def act(kind: str, args: list, history: list[DeploymentDecision], seconds: float):
    """A person's decision of `kind`, or None if the registry would refuse it."""
    decider = person(seconds)
    try:
        if kind == "publish":
            return decider.publish(history, args[0], args[1], "r")
        if kind == "promote":
            return decider.promote(history, args[0], set(VERSIONS), "r")
        if kind == "rollback":
            return decider.rollback(history, "r")
        return decider.withdraw(history, "r")
    except DeploymentError:
        return None


@given(steps)
def test_a_trial_counts_exactly_its_own_clean_windows(plan):
    """Whatever people decide and whatever pairs are scored, the trial's figures are the
    current contenders' clean windows that began since their roles did, and each trial gets at
    most one automatic decision, on at least min_trips of them."""
    target = policy()
    history = champion_then_challenger()
    windows: list[tuple[Contenders, datetime, HeadToHead]] = []
    decided = set()
    for n, (kind, *args) in enumerate(plan):
        seconds = 10 + 10 * n
        if kind == "window":
            champion, challenger, trips, shared, champion_rmsle, challenger_rmsle = args
            if champion == challenger:
                continue
            for record in head_to_head(
                (champion, challenger),
                (champion_rmsle, challenger_rmsle),
                at(seconds),
                trips,
                challenger_trips=trips + shared,
            ):
                target.observe(record)
            if not shared:
                sse = (trips * champion_rmsle**2, trips * challenger_rmsle**2)
                windows.append(
                    (Contenders(champion, challenger), at(seconds), HeadToHead(trips, *sse))
                )
        elif kind == "policy":
            before = target.trial(history)
            decision = decide(target, history, seconds + 5)
            if decision is not None:
                assert before is not None
                assert before.key not in decided
                assert decision.evidence["trips"] >= MIN_TRIPS
                decided.add(before.key)
                history.append(decision)
        elif (decision := act(kind, args, history, seconds + 5)) is not None:
            history.append(decision)
        trial = target.trial(history)
        if trial is None:
            continue
        expected = sum(
            (
                h2h
                for contenders, start, h2h in windows
                if contenders == trial.contenders and start >= trial.began_at
            ),
            HeadToHead(),
        )
        assert trial.figures.trips == expected.trips
        assert math.isclose(trial.figures.champion_sse, expected.champion_sse, rel_tol=1e-9)
        assert math.isclose(trial.figures.challenger_sse, expected.challenger_sse, rel_tol=1e-9)
