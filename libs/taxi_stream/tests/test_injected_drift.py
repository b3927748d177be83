import attrs
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taxi_events import TripFinished, TripStarted, encode
from taxi_model import estimate_durations, generate_trips
from taxi_stream import (
    SHIFT_AREAS,
    CheckpointMismatchError,
    DriftMismatchError,
    DriftSpecError,
    InjectedDrift,
    InjectedDriftKind,
    Replay,
    ShiftPickups,
    Slowdown,
    end_delays_s,
    parse_drift_kind,
    replay_fingerprint,
)

TRIPS = generate_trips(rows=40, seed=21)  # Midtown, Times Square, is (40.7580, -73.9855)
TEST_TRIPS = TRIPS.drop(columns=["dropoff_datetime", "trip_duration"])
T0 = 1_750_000_000_000
STEP_MS = 50
COORDINATES = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("slowdown:1.5", Slowdown(1.5)),
        ("slowdown:2", Slowdown(2.0)),
        ("slowdown:0.75", Slowdown(0.75)),
        ("slowdown:.5", Slowdown(0.5)),
        ("shift-pickups:brooklyn", ShiftPickups("brooklyn")),
        ("shift-pickups:staten-island", ShiftPickups("staten-island")),
    ],
)
def test_a_drift_spec_names_its_kind(spec, kind):
    assert parse_drift_kind(spec) == kind
    assert parse_drift_kind(kind.spec) == kind  # the canonical spelling reads back


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("", "is no drift"),
        ("slowdown", "is no drift"),
        ("speedup:2", "is no drift"),
        ("SLOWDOWN:1.5", "is no drift"),
        ("slowdown:", "decimal number"),
        ("slowdown:fast", "decimal number"),
        ("slowdown:1.5x", "decimal number"),
        ("slowdown: 1.5", "decimal number"),
        ("slowdown:1_5", "decimal number"),
        ("slowdown:1e3", "decimal number"),
        ("slowdown:-1.5", "decimal number"),
        ("slowdown:nan", "decimal number"),
        ("slowdown:0", "positive and not 1"),
        ("slowdown:1.0", "positive and not 1"),
        ("slowdown:" + "9" * 400, "positive and not 1"),  # beyond a float: infinite
        ("shift-pickups", "is no drift"),
        ("shift-pickups:", "one of brooklyn"),
        ("shift-pickups:Brooklyn", "one of brooklyn"),
        ("shift-pickups:mars", "one of brooklyn"),
    ],
)
def test_a_bad_drift_spec_is_refused_saying_why(spec, complaint):
    with pytest.raises(DriftSpecError, match=complaint):
        parse_drift_kind(spec)


def test_a_shift_near_the_edge_of_the_globe_keeps_coordinates_valid():
    trip = TripStarted(
        trip_id="id1",
        vendor_id=1,
        pickup_datetime=pd.Timestamp("2016-01-23 12:00").to_pydatetime(),
        passenger_count=1,
        pickup_longitude=-179.99,
        pickup_latitude=89.99,
        dropoff_longitude=179.99,
        dropoff_latitude=-89.99,
        store_and_fwd_flag=False,
        source="train",
    )
    north_east = ShiftPickups("bronx").start(trip)  # the Bronx is north and east of Midtown
    assert (north_east.pickup_latitude, north_east.dropoff_longitude) == (90.0, 180.0)
    south_west = ShiftPickups("staten-island").start(trip)
    assert (south_west.pickup_longitude, south_west.dropoff_latitude) == (-180.0, -90.0)


def run_side_by_side(plain: Replay, drifted: Replay, max_starts: int):
    """Step both replays at the same times until done; each one's starts in order, with the
    time they started, and its ends by trip id, with the time they ended."""
    runs: list[tuple[list[tuple[int, TripStarted]], dict[str, tuple[int, TripFinished]]]] = [
        ([], {}),
        ([], {}),
    ]
    now = T0
    while not (plain.done and drifted.done):
        for replay, (starts, ends) in zip((plain, drifted), runs, strict=True):
            step = replay.step(now, max_starts)
            starts += [(now, e) for e in step.started]
            ends.update({e.trip_id: (now, e) for e in step.finished})
        now += STEP_MS
    return runs


def fields(event: object, *leaving_out: str) -> dict[str, object]:
    return {k: v for k, v in attrs.asdict(event).items() if k not in leaving_out}


kinds = st.one_of(
    st.floats(0.2, 4).filter(lambda f: f != 1).map(Slowdown),
    st.sampled_from(list(SHIFT_AREAS)).map(ShiftPickups),
)


@settings(deadline=None, max_examples=40)
@given(
    kinds,
    st.integers(0, 100),
    st.sampled_from(["train", "test"]),
    st.sampled_from([None, 600.0]),
    st.integers(1, 30),
)
def test_trips_before_the_drift_are_untouched_and_those_from_it_changed_exactly(
    kind: InjectedDriftKind, from_trip, source, time_scale, max_starts
):
    """Trip numbers count over the whole replay: with its loop, the drift may begin in a later
    pass over the file."""
    trips = TRIPS if source == "train" else TEST_TRIPS
    plain = Replay(trips, source, time_scale=time_scale, loop=True)
    drifted = Replay(
        trips, source, time_scale=time_scale, loop=True, drift=InjectedDrift(kind, from_trip)
    )
    for replay in (plain, drifted):
        replay.stop_after(100)
    (plain_starts, plain_ends), (drifted_starts, drifted_ends) = run_side_by_side(
        plain, drifted, max_starts
    )
    durations = trips["trip_duration"] if source == "train" else estimate_durations(trips)
    delays_ms = np.rint(end_delays_s(trips["id"], durations, time_scale) * 1000)

    assert len(plain_starts) == len(drifted_starts) == 100
    assert drifted.drifting is (from_trip < 100)
    for number, ((started_at, before), (_, after)) in enumerate(
        zip(plain_starts, drifted_starts, strict=True)
    ):
        plain_end_at, plain_end = plain_ends[before.trip_id]
        end_at, end = drifted_ends[after.trip_id]
        if number < from_trip:
            assert encode(after) == encode(before)
            assert (end_at, encode(end)) == (plain_end_at, encode(plain_end))
            continue
        match kind:
            case Slowdown(factor):
                assert encode(after) == encode(before)
                assert end.trip_duration == plain_end.trip_duration * factor
                later_s = (end.dropoff_datetime - plain_end.dropoff_datetime).total_seconds()
                longer_s = end.trip_duration - plain_end.trip_duration
                assert later_s == pytest.approx(longer_s, abs=1e-6)  # timedelta's microseconds
                assert fields(end, "trip_duration", "dropoff_datetime", "produced_at") == fields(
                    plain_end, "trip_duration", "dropoff_datetime", "produced_at"
                )
                delay_ms = round(delays_ms[number % len(trips)] * factor)
                assert started_at + delay_ms <= end_at < started_at + delay_ms + STEP_MS
            case ShiftPickups(area):
                d_lat, d_lon = SHIFT_AREAS[area][0] - 40.7580, SHIFT_AREAS[area][1] + 73.9855
                assert after.pickup_latitude == before.pickup_latitude + d_lat
                assert after.pickup_longitude == before.pickup_longitude + d_lon
                assert after.dropoff_latitude == before.dropoff_latitude + d_lat
                assert after.dropoff_longitude == before.dropoff_longitude + d_lon
                assert fields(after, *COORDINATES) == fields(before, *COORDINATES)
                assert (end_at, encode(end)) == (plain_end_at, encode(plain_end))


def test_the_drift_is_part_of_the_fingerprint_and_a_restart_with_another_is_refused():
    slowdown = InjectedDrift(Slowdown(1.5), from_trip=10)
    # Without a drift, the fingerprint is the one checkpoints were written under before drifts.
    ids = pd.DataFrame({"id": ["id0000001", "id0000002", "id0000003"]})
    assert replay_fingerprint(ids, "train") == "1a4777217707d4c3"
    assert replay_fingerprint(ids, "train", slowdown) != replay_fingerprint(ids, "train")
    spelt_otherwise = InjectedDrift(parse_drift_kind("slowdown:1.50"), from_trip=10)
    assert replay_fingerprint(ids, "train", spelt_otherwise) == replay_fingerprint(
        ids, "train", slowdown
    )

    drifting = Replay(TRIPS, "train", drift=slowdown)
    drifting.step(T0, max_starts=15)
    for other, says in [
        (None, "injects slowdown:1.5 from trip 10, this one no drift"),
        (InjectedDrift(Slowdown(1.5), 11), "this one slowdown:1.5 from trip 11"),
        (InjectedDrift(ShiftPickups("queens"), 10), "this one shift-pickups:queens from trip 10"),
    ]:
        with pytest.raises(DriftMismatchError, match=says):
            Replay(TRIPS, "train", drift=other).restore(drifting.checkpoint())
    with pytest.raises(DriftMismatchError, match="injects no drift, this one slowdown"):
        Replay(TRIPS, "train", drift=slowdown).restore(Replay(TRIPS, "train").checkpoint())
    # The same drift over other data is other data.
    other_trips = Replay(generate_trips(rows=40, seed=22), "train", drift=slowdown)
    with pytest.raises(CheckpointMismatchError, match="other trip data") as refused:
        other_trips.restore(drifting.checkpoint())
    assert not isinstance(refused.value, DriftMismatchError)

    resumed = Replay(TRIPS, "train", drift=spelt_otherwise)
    resumed.restore(drifting.checkpoint())
    assert resumed.drifting
    assert resumed.checkpoint() == drifting.checkpoint()


def test_the_drift_waits_for_its_trip_across_steps():
    replay = Replay(TRIPS, "train", drift=InjectedDrift(Slowdown(2.0), from_trip=12))
    replay.step(T0, max_starts=12)
    assert not replay.drifting
    assert replay.checkpoint().drift_position is None
    replay.step(T0, max_starts=1)
    assert replay.drifting
    assert replay.checkpoint().drift_position == 12
