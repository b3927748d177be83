"""Joining predictions with trip ends by trip (source and trip_id): the aggregator's core, no I/O.

A trip has up to three sides, arriving in any order (they come from different topics): the
champion's prediction (`ml_predictions`), a challenger's prediction of the same trip
(`shadow_predictions`, only while a challenger is deployed) and the trip's end.

- The champion's prediction and the end make the champion's match, emitted as soon as both are
  there: the champion's figures over all its trips (`challenger_version` None).
- While a challenger is in play for the trip (the champion's prediction names one, or a
  challenger's prediction arrived), the trip waits for the challenger's prediction too; with all
  three there it makes a head-to-head pair: the challenger's match and the champion's match on
  that same trip, both tagged with the challenger's version. So the two roles are compared on
  exactly the same trips.

A trip waits at most `ttl_ms` after its first side arrived (measured on the record timestamps
the caller passes, so a replay expires exactly the same trips); then it is expired, and each
set of figures it never completed counts it as unmatched instead of it being held forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

import attrs

from taxi_events import Prediction, Role, Source, TripFinished, TripKey, trip_key

Slot = Literal["champion", "challenger", "finish"]
SLOTS: tuple[Slot, ...] = ("champion", "challenger", "finish")
# The model version of figures no prediction names: a trip end that expired without one.
UNKNOWN_MODEL = "unknown"


class MetricsKey(NamedTuple):
    """What a set of figures is about: a source's trips scored for one model in one role.

    `challenger_version` None: the champion on every trip it predicted. Set: the head-to-head
    figures of that challenger, for either role, on the trips both predicted.
    """

    source: Source
    role: Role
    model_version: str
    challenger_version: str | None

    def sort_key(self) -> tuple[str, str, str, str]:
        """An order over keys (None does not compare with text): the all-trips figures first."""
        return (self.source, self.challenger_version or "", self.role, self.model_version)


@attrs.frozen
class MatchedTrip:
    trip_id: str
    source: Source
    predicted_duration: float
    actual_duration: float
    is_estimate: bool
    model_version: str
    matched_at_ms: int  # the timestamp of whichever side completing the match arrived last
    role: Role = "champion"
    challenger_version: str | None = None  # set: half of a head-to-head pair

    @property
    def key(self) -> MetricsKey:
        return MetricsKey(self.source, self.role, self.model_version, self.challenger_version)


@attrs.frozen
class Side:
    """One side of a trip and the record time it arrived at."""

    event: Prediction | TripFinished
    arrived_at_ms: int


@attrs.frozen
class Pending:
    """The sides of one trip that arrived while its matches are not all made.

    With the champion's prediction and the end both here, the champion's match has been made
    and the trip waits for its challenger's prediction only.
    """

    champion: Side | None = None
    challenger: Side | None = None
    finish: Side | None = None

    def sides(self) -> list[Side]:
        return [side for side in (self.champion, self.challenger, self.finish) if side]

    @property
    def key(self) -> TripKey:
        return trip_key(self.sides()[0].event)

    @property
    def arrived_at_ms(self) -> int:
        """When the first of its sides arrived: the trip's wait is counted from then."""
        return min(side.arrived_at_ms for side in self.sides())

    @property
    def challenger_version(self) -> str | None:
        """The challenger this trip waits for: the one that predicted it, else the one the
        champion's prediction names; None when no challenger is in play."""
        if self.challenger is not None:
            return _prediction(self.challenger).model_version
        if self.champion is not None:
            return _prediction(self.champion).challenger_version
        return None

    def unmatched(self) -> list[MetricsKey]:
        """The figures this trip counts as unmatched in, should it expire as it is."""
        source = self.key[0]
        champion = _prediction(self.champion).model_version if self.champion else UNKNOWN_MODEL
        keys = []
        if (self.champion is None) != (self.finish is None):  # its champion match is not made
            keys.append(MetricsKey(source, "champion", champion, None))
        if (challenger := self.challenger_version) is not None:  # nor the head-to-head pair
            keys.append(MetricsKey(source, "champion", champion, challenger))
            keys.append(MetricsKey(source, "challenger", challenger, challenger))
        return keys


def slot_of(event: Prediction | TripFinished) -> Slot:
    """Where a side goes: a prediction by its role, or the trip's end."""
    return event.role if isinstance(event, Prediction) else "finish"


@attrs.define
class TripJoin:
    ttl_ms: int
    _pending: dict[TripKey, Pending] = attrs.field(factory=dict, init=False)

    def add(self, event: Prediction | TripFinished, timestamp_ms: int) -> list[MatchedTrip]:
        """Offer one side of a trip. Returns the matches it completes: none, the champion's,
        a head-to-head pair (the challenger's match, then the champion's) or all three.

        A repeat of a side already waiting changes nothing, so a redelivered record is harmless.
        """
        key = trip_key(event)
        slot = slot_of(event)
        before = self._pending.get(key, _NOTHING)
        if getattr(before, slot) is not None:
            return []
        trip = attrs.evolve(before, **{slot: Side(event, timestamp_ms)})
        matches = []
        champion, finish = trip.champion, trip.finish
        if champion is not None and finish is not None and slot != "challenger":
            matches.append(_match(champion, finish, None, champion, finish))
        challenger_version = trip.challenger_version
        if challenger_version is None and champion is not None and finish is not None:
            self._pending.pop(key, None)  # the champion's match was all it waited for
        elif champion is not None and finish is not None and trip.challenger is not None:
            assert challenger_version is not None
            sides = (champion, trip.challenger, finish)
            matches.append(_match(trip.challenger, finish, challenger_version, *sides))
            matches.append(_match(champion, finish, challenger_version, *sides))
            self._pending.pop(key, None)
        else:
            self._pending[key] = trip
        return matches

    def expire(self, now_ms: int) -> list[Pending]:
        """Remove and return every trip that has waited longer than the TTL at `now_ms`."""
        expired = [p for p in self._pending.values() if now_ms - p.arrived_at_ms > self.ttl_ms]
        for pending in expired:
            del self._pending[pending.key]
        return expired

    def restore(self, pending: Pending) -> None:
        """Put back a trip's sides as a changelog recorded them."""
        self._pending[pending.key] = pending

    def get(self, key: TripKey) -> Pending | None:
        return self._pending.get(key)

    def __getitem__(self, key: TripKey) -> Pending:
        return self._pending[key]

    def discard(self, key: TripKey) -> None:
        self._pending.pop(key, None)

    def pending(self) -> Iterator[Pending]:
        return iter(self._pending.values())

    def __len__(self) -> int:
        return len(self._pending)


_NOTHING = Pending()


def _prediction(side: Side) -> Prediction:
    assert isinstance(side.event, Prediction)
    return side.event


def _match(
    predicted: Side, finish: Side, challenger_version: str | None, *sides: Side
) -> MatchedTrip:
    """The match of one prediction with the trip's end; made once `sides` were all there."""
    prediction = _prediction(predicted)
    end = finish.event
    assert isinstance(end, TripFinished)
    return MatchedTrip(
        trip_id=end.trip_id,
        source=end.source,
        predicted_duration=prediction.predicted_duration,
        actual_duration=end.trip_duration,
        is_estimate=end.is_estimate,
        model_version=prediction.model_version,
        matched_at_ms=max(side.arrived_at_ms for side in sides),
        role=prediction.role,
        challenger_version=challenger_version,
    )
