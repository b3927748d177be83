"""Automatic promotion and rollback (issue 20), without I/O: the live figures decide when the
challenger becomes champion, and when a newly promoted champion steps back.

The caller feeds the aggregator's `ModelMetrics` as it reads them (`observe`) and asks for a
decision given the deployment history (`decide`); it writes what comes back to
`model_deployments`. Only the train source counts (test-source trip ends are estimates), and only
head-to-head figures: the champion and the challenger scored on exactly the trips both predicted.

- A trial is the time the current champion and challenger have held their roles, from the
  decision that set them (`roles_since`). Only figures scored since it began count, so the same
  two versions met before, in other roles or before a rollback, start from nothing.
- Promotion: once the trial has `min_trips` trips, a challenger whose RMSLE is at least `delta`
  below the champion's becomes champion, and the champion it replaces becomes its challenger:
  a probation, on the same live trips again.
- Probation: once it has `min_trips` trips, the new champion is rolled back if its RMSLE is at
  least `delta` above its predecessor's; otherwise the predecessor is withdrawn.
- One decision per trial: asked again before its decision is read back, the policy says nothing.
  A person's decision (`taxi model promote`, `rollback`, `withdraw`, `publish`) changes the roles,
  so it ends the trial and the policy goes on from the roles it left.

Why windows and not the cumulative figures: a challenger's head-to-head figures name its own
version only, not the champion's, so its cumulative figures mix every champion it ever
shadowed, and a cumulative record does not say when its trips were scored. A window says when
(its start, in record time, against the decision's `decided_at`), and it is a comparison on the
same trips exactly when both roles' windows hold the same number of trips: then every trip the
challenger was scored on in it was scored for this champion too. Windows that are not are left
out. The aggregator publishes each source's windows in order of their start, so a window is
complete once a later one of the same challenger arrives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import attrs

from taxi_events import DeploymentDecision, ModelMetrics
from taxi_model import Decider, current_roles, on_probation, roles_since

# Measured by benchmarks/promotion_calibration.py on the real sample (docs/lifecycle.md,
# docs/measurements/promotion-calibration-2026-12-06.json): on 4,000 of the same trips, two
# models of equal quality differ by 0.0068 RMSLE (one standard deviation), so a challenger no
# better than its champion is promoted in 0.24% of trials, one better by 0.04 at once in 99%.
DEFAULT_DELTA = 0.02
DEFAULT_MIN_TRIPS = 4_000


class Contenders(NamedTuple):
    champion: str
    challenger: str


@attrs.frozen
class HeadToHead:
    """Two models scored on the same trips: how many, and each one's sum of squared log
    errors (so figures of several windows add up exactly)."""

    trips: int = 0
    champion_sse: float = 0.0
    challenger_sse: float = 0.0

    def __add__(self, other: HeadToHead) -> HeadToHead:
        return HeadToHead(
            self.trips + other.trips,
            self.champion_sse + other.champion_sse,
            self.challenger_sse + other.challenger_sse,
        )

    @property
    def champion_rmsle(self) -> float:
        return _rmsle(self.champion_sse, self.trips)

    @property
    def challenger_rmsle(self) -> float:
        return _rmsle(self.challenger_sse, self.trips)


@attrs.frozen
class Trial:
    """The current champion and challenger, since when, and their figures since then."""

    contenders: Contenders
    began_at: datetime  # the `decided_at` of the decision that set these roles
    position: int  # that decision's position in the deployment history
    on_probation: bool  # the champion was promoted over its challenger, which shadows it
    figures: HeadToHead

    @property
    def key(self) -> tuple[int, Contenders]:
        return (self.position, self.contenders)


@attrs.define
class _OpenWindow:
    """The head-to-head window records of one challenger for the newest window start."""

    start: datetime
    challenger: ModelMetrics | None = None
    champions: dict[str, ModelMetrics] = attrs.field(factory=dict)


@attrs.define
class PromotionPolicy:
    """Promotes a challenger that beats the champion by `delta` RMSLE on `min_trips` live train
    trips, and rolls a promotion back when the champion it replaced does as much better."""

    delta: float = attrs.field(default=DEFAULT_DELTA, validator=attrs.validators.gt(0.0))
    min_trips: int = attrs.field(default=DEFAULT_MIN_TRIPS, validator=attrs.validators.ge(1))
    _open: dict[str, _OpenWindow] = attrs.field(factory=dict, init=False)
    # Complete windows of pairs whose trial is not the one being summed, by start: kept until
    # the history shows they began before any trial still to come.
    _windows: dict[Contenders, dict[datetime, HeadToHead]] = attrs.field(factory=dict, init=False)
    _trial: Trial | None = attrs.field(default=None, init=False)
    _decided: tuple[int, Contenders] | None = attrs.field(default=None, init=False)

    def observe(self, metrics: ModelMetrics) -> None:
        """Take one `model_metrics` record, in the order read. Records of the test source, of
        a champion over all its trips, cumulative ones and repeats are ignored."""
        challenger = metrics.challenger_version
        start = metrics.window_start
        if metrics.source != "train" or challenger is None or start is None:
            return
        window = self._open.get(challenger)
        if window is None or start > window.start:
            window = self._open[challenger] = _OpenWindow(start)
        elif start < window.start:
            return  # that window is complete already
        if metrics.role == "challenger":
            if window.challenger is not None:
                return
            window.challenger = metrics
            champions = list(window.champions.values())
        else:
            if metrics.model_version in window.champions:
                return
            window.champions[metrics.model_version] = metrics
            champions = [metrics]
        shadow = window.challenger
        if shadow is None:
            return  # the challenger's half of the window is still to come
        for champion in champions:
            if champion.count == shadow.count:
                h2h = HeadToHead(champion.count, _sse(champion), _sse(shadow))
                self._add(Contenders(champion.model_version, challenger), start, h2h)

    def trial(self, history: Sequence[DeploymentDecision]) -> Trial | None:
        """The current trial and its figures so far; None without both a champion and a
        challenger. Forgets the windows no trial to come can count."""
        roles = current_roles(history)
        if roles.champion is None or roles.challenger is None:
            self._trial = None
        else:
            contenders = Contenders(roles.champion, roles.challenger)
            position = roles_since(history)
            if self._trial is None or self._trial.key != (position, contenders):
                began_at = history[position].decided_at
                windows = self._windows.pop(contenders, {})
                figures = sum(
                    (h2h for start, h2h in windows.items() if start >= began_at), HeadToHead()
                )
                probation = on_probation(history)
                self._trial = Trial(contenders, began_at, position, probation, figures)
        if history:
            self._forget_before(history[-1].decided_at)
        return self._trial

    def decide(
        self, history: Sequence[DeploymentDecision], decider: Decider
    ) -> DeploymentDecision | None:
        """The decision the current trial's figures call for, made by `decider` (its actor, say
        auto-promotion@host, and time); None while they call for none, or once one was made for
        this trial. Write it to `model_deployments` only if the history there is still
        `history`: a person's decision in between wins."""
        trial = self.trial(history)
        if trial is None or trial.key == self._decided:
            return None
        figures = trial.figures
        if figures.trips < self.min_trips:
            return None
        champion, challenger = trial.contenders
        champion_rmsle, challenger_rmsle = figures.champion_rmsle, figures.challenger_rmsle
        evidence = {
            "champion_rmsle": champion_rmsle,
            "challenger_rmsle": challenger_rmsle,
            "trips": figures.trips,
            "delta": self.delta,
            "min_trips": self.min_trips,
        }
        compared = (
            f"on the same {figures.trips:,} live train trips since "
            f"{trial.began_at:%Y-%m-%d %H:%M:%S} UTC: RMSLE {champion_rmsle:.4f} for {champion} "
            f"(champion) and {challenger_rmsle:.4f} for {challenger} (challenger)"
        )
        rule = f"{self.delta:g} RMSLE on at least {self.min_trips:,} trips"
        if trial.on_probation:
            if champion_rmsle - challenger_rmsle >= self.delta:
                reason = (
                    f"automatic rollback: {champion}, promoted over {challenger}, did worse "
                    f"{compared}; a rollback takes {challenger} being better by {rule}"
                )
                decision = decider.rollback(history, reason, evidence=evidence)
            else:
                reason = (
                    f"probation passed: {champion} did no worse than {challenger} by {rule} "
                    f"{compared}; {challenger} is no longer shadowed"
                )
                decision = decider.withdraw(history, reason, evidence=evidence)
        elif challenger_rmsle <= champion_rmsle - self.delta:
            reason = (
                f"automatic promotion: {challenger} beat {champion} {compared}; a promotion "
                f"takes being better by {rule}. {champion} shadows it on probation"
            )
            decision = decider.promote(
                history,
                challenger,
                trial.contenders,
                reason,
                keep_previous_as_challenger=True,
                evidence=evidence,
            )
        else:
            return None
        self._decided = trial.key
        return decision

    def _add(self, contenders: Contenders, start: datetime, h2h: HeadToHead) -> None:
        trial = self._trial
        if trial is not None and trial.contenders == contenders and start >= trial.began_at:
            self._trial = attrs.evolve(trial, figures=trial.figures + h2h)
        else:
            self._windows.setdefault(contenders, {})[start] = h2h

    def _forget_before(self, moment: datetime) -> None:
        """A trial still to come begins with a decision after the latest one, so windows that
        began before it can never count again."""
        for contenders, windows in list(self._windows.items()):
            kept = {start: h2h for start, h2h in windows.items() if start >= moment}
            if kept:
                self._windows[contenders] = kept
            else:
                del self._windows[contenders]


def _sse(metrics: ModelMetrics) -> float:
    """The sum of squared log errors behind a record's RMSLE."""
    return metrics.count * (metrics.rmsle or 0.0) ** 2


def _rmsle(sse: float, trips: int) -> float:
    """NaN on no trips."""
    return math.sqrt(sse / trips) if trips else math.nan
