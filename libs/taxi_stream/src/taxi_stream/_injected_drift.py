"""A drift injected into a replay on purpose, so that drift detection and retraining can be
proven against a change whose size and start are known.

From a given trip of the replay on, every trip is changed in one way: a `Slowdown` makes it
last longer (its end, not its start); `ShiftPickups` moves it to another part of the city (its
start, not its end). Pure: the replay applies it to the events it builds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta

import attrs

from taxi_events import TripFinished, TripStarted

# Where `shift-pickups` moves trips from, and the areas it moves them to, as (latitude,
# longitude). The offset between them is added to every pickup and dropoff, so a trip keeps
# its shape and length.
MIDTOWN = (40.7580, -73.9855)  # Times Square
SHIFT_AREAS: Mapping[str, tuple[float, float]] = {
    "brooklyn": (40.6928, -73.9903),  # Borough Hall
    "queens": (40.7557, -73.8831),  # Jackson Heights
    "bronx": (40.8615, -73.8904),  # Fordham
    "staten-island": (40.6437, -74.0736),  # St. George
    "harlem": (40.8116, -73.9465),  # 125th Street
}

DRIFT_SYNTAX = (
    "slowdown:FACTOR (every trip lasts FACTOR times as long, e.g. slowdown:1.5) or "
    f"shift-pickups:AREA (pickups and dropoffs move by the offset from Midtown to AREA: "
    f"{', '.join(SHIFT_AREAS)})"
)
_FACTOR = re.compile(r"\d+(\.\d*)?|\.\d+")


class DriftSpecError(ValueError):
    """A drift spec that names no drift this module knows."""


@attrs.frozen
class Slowdown:
    """Every trip lasts `factor` times as long, like the whole city in the blizzard of 23
    January 2016: its duration, its dropoff time, and how long after its start its end is
    sent."""

    factor: float

    @property
    def spec(self) -> str:
        return f"slowdown:{self.factor!r}"

    def start(self, trip: TripStarted) -> TripStarted:
        return trip

    def end(self, trip: TripFinished) -> TripFinished:
        duration = trip.trip_duration * self.factor
        longer = timedelta(seconds=duration - trip.trip_duration)
        return attrs.evolve(
            trip, trip_duration=duration, dropoff_datetime=trip.dropoff_datetime + longer
        )

    def end_delay_ms(self, delay_ms: int) -> int:
        return round(delay_ms * self.factor)


@attrs.frozen
class ShiftPickups:
    """Every trip happens elsewhere: its pickup and dropoff move by the offset from Midtown to
    `area` (one of `SHIFT_AREAS`), its times and duration stay. A drift of the inputs."""

    area: str

    @property
    def spec(self) -> str:
        return f"shift-pickups:{self.area}"

    @property
    def offset(self) -> tuple[float, float]:
        """(latitude, longitude) degrees added to every point."""
        lat, lon = SHIFT_AREAS[self.area]
        return lat - MIDTOWN[0], lon - MIDTOWN[1]

    def start(self, trip: TripStarted) -> TripStarted:
        d_lat, d_lon = self.offset
        return attrs.evolve(
            trip,
            pickup_latitude=_valid_latitude(trip.pickup_latitude + d_lat),
            pickup_longitude=_valid_longitude(trip.pickup_longitude + d_lon),
            dropoff_latitude=_valid_latitude(trip.dropoff_latitude + d_lat),
            dropoff_longitude=_valid_longitude(trip.dropoff_longitude + d_lon),
        )

    def end(self, trip: TripFinished) -> TripFinished:
        return trip

    def end_delay_ms(self, delay_ms: int) -> int:
        return delay_ms


# A point within the offset of a pole or of the antimeridian (never a New York taxi's, but a
# bad row's) stays a valid coordinate.
def _valid_latitude(value: float) -> float:
    return min(max(value, -90.0), 90.0)


def _valid_longitude(value: float) -> float:
    return min(max(value, -180.0), 180.0)


InjectedDriftKind = Slowdown | ShiftPickups


def parse_drift_kind(spec: str) -> InjectedDriftKind:
    """`slowdown:FACTOR` or `shift-pickups:AREA`, strictly: a FACTOR is a plain positive decimal
    other than 1, an AREA one of `SHIFT_AREAS`."""
    name, colon, argument = spec.partition(":")
    if name == "slowdown" and colon:
        if not _FACTOR.fullmatch(argument):
            raise DriftSpecError(f"{spec!r}: FACTOR must be a decimal number like 1.5")
        factor = float(argument)
        if not math.isfinite(factor) or factor <= 0 or factor == 1:
            raise DriftSpecError(f"{spec!r}: FACTOR must be positive and not 1")
        return Slowdown(factor)
    if name == "shift-pickups" and colon:
        if argument not in SHIFT_AREAS:
            raise DriftSpecError(f"{spec!r}: AREA must be one of {', '.join(SHIFT_AREAS)}")
        return ShiftPickups(argument)
    raise DriftSpecError(f"{spec!r} is no drift: expected {DRIFT_SYNTAX}")


@attrs.frozen
class InjectedDrift:
    """A drift of `kind` applied to every trip a replay starts after its first `from_trip`
    (counted over the whole replay, every run and generation)."""

    kind: InjectedDriftKind
    from_trip: int = attrs.field(validator=attrs.validators.ge(0))

    def applies_to(self, trip_number: int) -> bool:
        """Whether the replay's trip `trip_number` (0 for its first) is drifted."""
        return trip_number >= self.from_trip

    def describe(self) -> str:
        return f"{self.kind.spec} from trip {self.from_trip}"
