import json
import logging
import math
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taxi_events import Prediction
from taxi_events import testing as events
from taxi_model import TrainingProfile, generate_trips, training_profile
from taxi_stream import (
    DriftAlarm,
    DriftMonitors,
    DriftSettings,
    MatchedTrip,
    ShiftPickups,
)
from taxi_stream._drift import _ConceptMonitor

DEFAULTS = DriftSettings()
# Small enough that short hypothesis streams alarm, re-arm and fill windows.
TIGHT = DriftSettings(
    page_hinkley_delta=0.05,
    page_hinkley_threshold=1.0,
    page_hinkley_min_trips=5,
    psi_threshold=4.5,  # about the median PSI of 6 trips: crossed both ways
    psi_block_trips=3,
    psi_window_blocks=2,
    versions_kept=2,
)


@pytest.fixture(scope="module")
def profile() -> TrainingProfile:
    return training_profile(generate_trips(rows=8000, seed=1))


@pytest.fixture(scope="module")
def live_trips() -> pd.DataFrame:
    """Trips from the same city as the profile's: other draws of the same generator."""
    return generate_trips(rows=20_000, seed=2)


def scored_trips(
    count: int, seed: int, *, slower_from: int | None = None, **fields: Any
) -> list[MatchedTrip]:
    """A champion's scored trips with a steady, fat-tailed error; from `slower_from` on, every
    trip lasts 1.5 times as long as it did."""
    rng = np.random.default_rng(seed)
    actual = np.exp(rng.normal(6.5, 0.7, count))
    predicted = actual * np.exp(0.3 * rng.standard_t(4, count))
    if slower_from is not None:
        actual[slower_from:] *= 1.5
    values = {"source": "train", "is_estimate": False, "model_version": "m1", **fields}
    return [
        MatchedTrip(
            trip_id=f"id{i:07d}",
            predicted_duration=float(p),
            actual_duration=float(a),
            matched_at_ms=i,
            **values,
        )
        for i, (p, a) in enumerate(zip(predicted, actual, strict=True))
    ]


def champion_predictions(
    trips: pd.DataFrame, *, shifted: range = range(0), **fields: Any
) -> list[Prediction]:
    """The trips as the champion's predictions; those in `shifted` moved to Brooklyn, as the
    producer's shift-pickups:brooklyn moves them."""
    d_lat, d_lon = ShiftPickups("brooklyn").offset
    predictions = []
    for i, trip in enumerate(trips.itertuples()):
        lat_shift, lon_shift = (d_lat, d_lon) if i in shifted else (0.0, 0.0)
        predictions.append(
            events.prediction(
                f"id{i:07d}",
                model_version="m1",
                pickup_datetime=trip.pickup_datetime.to_pydatetime(),
                pickup_latitude=trip.pickup_latitude + lat_shift,
                pickup_longitude=trip.pickup_longitude + lon_shift,
                dropoff_latitude=trip.dropoff_latitude + lat_shift,
                dropoff_longitude=trip.dropoff_longitude + lon_shift,
                **fields,
            )
        )
    return predictions


def alarms_of_matches(monitors: DriftMonitors, matches: list[MatchedTrip]) -> list[DriftAlarm]:
    return [alarm for match in matches for alarm in monitors.add_match(match)]


def alarms_of_predictions(
    monitors: DriftMonitors, predictions: list[Prediction], profile: TrainingProfile | None
) -> list[DriftAlarm]:
    return [alarm for p in predictions for alarm in monitors.add_prediction(p, profile)]


def restored(monitors: DriftMonitors) -> DriftMonitors:
    """The monitors as the aggregator gets them back from its changelog: through JSON text."""
    text = json.dumps(monitors.to_json(), allow_nan=False)
    return DriftMonitors.from_json(monitors.settings, json.loads(text))


def test_a_steady_stream_raises_no_alarm(profile, live_trips):
    monitors = DriftMonitors(DEFAULTS)
    assert alarms_of_matches(monitors, scored_trips(20_000, seed=3)) == []
    assert alarms_of_predictions(monitors, champion_predictions(live_trips), profile) == []
    values = {s.statistic: s.value for s in monitors.statistics()}
    assert set(values) == {"log_error", "psi:distance_km", "psi:week_hour", "psi:pickup_area"}
    assert values["log_error"] < DEFAULTS.page_hinkley_threshold
    assert max(v for name, v in values.items() if name != "log_error") < DEFAULTS.psi_threshold


def test_a_slowdown_alarms_once_soon_after_it_starts():
    monitors = DriftMonitors(DEFAULTS)
    [alarm] = alarms_of_matches(monitors, scored_trips(20_000, seed=4, slower_from=5_000))
    after_drift = int(alarm.last_trip_id.removeprefix("id")) - 5_000
    assert 0 <= after_drift < 500
    assert (alarm.kind, alarm.source, alarm.model_version) == ("concept-drift", "train", "m1")
    assert (alarm.detector, alarm.statistic) == ("page-hinkley", "log_error")
    assert alarm.value > alarm.threshold == DEFAULTS.page_hinkley_threshold
    assert (alarm.first_trip_id, alarm.trips) == ("id0000000", 5_000 + after_drift + 1)
    # The evidence places the change near trip 5,000, and the errors after it lower (trips
    # longer than predicted), by up to log(1.5) = 0.41: the estimate mixes in a few trips
    # before the change.
    evidence = alarm.evidence
    assert abs(evidence["trips_before"] - 5_000) < 200
    shift = evidence["mean_log_error_after"] - evidence["mean_log_error_before"]
    assert -math.log(1.5) - 0.1 < shift < -0.15


def test_a_shift_to_another_borough_alarms_on_the_pickup_area_once(profile, live_trips):
    monitors = DriftMonitors(DEFAULTS)
    shifted = champion_predictions(live_trips, shifted=range(5_000, 20_000))
    alarms = alarms_of_predictions(monitors, shifted, profile)
    assert [a.statistic for a in alarms] == ["psi:pickup_area"]
    [alarm] = alarms
    # The first window check with a block of shifted trips in it.
    block_end = 5_000 + DEFAULTS.psi_block_trips
    assert alarm.last_trip_id == f"id{block_end - 1:07d}"
    assert alarm.trips == DEFAULTS.psi_window_trips
    assert alarm.first_trip_id == f"id{block_end - DEFAULTS.psi_window_trips:07d}"
    assert (alarm.kind, alarm.detector) == ("data-drift", "psi")
    assert alarm.value == alarm.evidence["psi:pickup_area"] > DEFAULTS.psi_threshold
    # The trips keep their length and their hours.
    assert alarm.evidence["psi:distance_km"] < DEFAULTS.psi_threshold
    assert alarm.evidence["psi:week_hour"] < DEFAULTS.psi_threshold


def test_a_replay_in_pickup_order_drifts_in_the_hour_of_week_unless_it_is_left_out(profile):
    # As dense as the real sample: 1,000 trips in pickup order span less than two days.
    trips = generate_trips(rows=120_000, seed=3).sort_values("pickup_datetime")
    in_order = champion_predictions(trips.head(5_000))
    watched = alarms_of_predictions(DriftMonitors(DEFAULTS), in_order, profile)
    assert {a.statistic for a in watched} == {"psi:week_hour"}
    unwatched = DriftSettings(psi_features=("distance_km", "pickup_area"))
    monitors = DriftMonitors(unwatched)
    assert alarms_of_predictions(monitors, in_order, profile) == []
    assert {s.statistic for s in monitors.statistics()} >= {"psi:distance_km", "psi:pickup_area"}
    assert "psi:week_hour" not in {s.statistic for s in monitors.statistics()}


def test_monitors_restored_under_other_features_watch_those_from_then_on(profile, live_trips):
    """An aggregator restarted with another --psi-features: a feature no longer watched is gone
    at once; one newly watched counts once a whole window of blocks has it."""
    narrow = DriftSettings(psi_features=("distance_km",))
    monitors = DriftMonitors(narrow)
    shifted = champion_predictions(live_trips, shifted=range(2_000, 20_000))
    assert alarms_of_predictions(monitors, shifted[:2_000], profile) == []
    wide = restored_as(monitors, DEFAULTS)
    later = alarms_of_predictions(wide, shifted[2_000:], profile)
    assert [a.statistic for a in later] == ["psi:pickup_area"]
    # Not before a window of blocks begun after the restart.
    assert int(later[0].last_trip_id.removeprefix("id")) >= 2_000 + DEFAULTS.psi_window_trips - 1
    back = restored_as(wide, narrow)
    assert {s.statistic for s in back.statistics() if s.statistic.startswith("psi")} == {
        "psi:distance_km"
    }


def restored_as(monitors: DriftMonitors, settings: DriftSettings) -> DriftMonitors:
    text = json.dumps(monitors.to_json(), allow_nan=False)
    return DriftMonitors.from_json(settings, json.loads(text))


def test_a_drifted_feature_alarms_again_only_after_it_came_back(profile, live_trips):
    monitors = DriftMonitors(DEFAULTS)
    there_and_back = champion_predictions(
        live_trips.head(16_000), shifted=range(2_000, 6_000)
    ) + champion_predictions(live_trips.tail(4_000), shifted=range(4_000))
    alarms = alarms_of_predictions(monitors, there_and_back, profile)
    block = DEFAULTS.psi_block_trips
    assert [(a.statistic, a.last_trip_id) for a in alarms] == [
        ("psi:pickup_area", f"id{2_000 + block - 1:07d}"),
        ("psi:pickup_area", f"id{block - 1:07d}"),  # the second part numbers its trips from 0
    ]


@pytest.mark.parametrize(
    "ignored",
    [
        {"is_estimate": True},  # a test-source end: an estimate, never a label
        {"role": "challenger", "challenger_version": "c2", "model_version": "c2"},
        {"challenger_version": "c2"},  # the champion's half of a head-to-head pair
    ],
)
def test_only_the_champions_labelled_trips_count_for_concept_drift(ignored):
    monitors = DriftMonitors(TIGHT)
    matches = [attrs.evolve(m, **ignored) for m in scored_trips(3_000, 5, slower_from=1_000)]
    assert alarms_of_matches(monitors, matches) == []
    assert monitors.statistics() == []
    assert monitors.to_json()["monitors"] == []


def test_only_the_champions_predictions_count_for_data_drift(profile, live_trips):
    monitors = DriftMonitors(DEFAULTS)
    shadowed = champion_predictions(live_trips.head(6_000), shifted=range(6_000), role="challenger")
    assert alarms_of_predictions(monitors, shadowed, profile) == []
    assert monitors.statistics() == []


def test_a_model_without_a_profile_gets_no_data_check_and_says_so_once(live_trips, caplog):
    monitors = DriftMonitors(TIGHT)
    predictions = champion_predictions(live_trips.head(50), shifted=range(50))
    with caplog.at_level(logging.WARNING, logger="taxi_stream._drift"):
        assert alarms_of_predictions(monitors, predictions, None) == []
    assert [r.getMessage() for r in caplog.records] == [
        "model m1 has no training profile in its card (trained before profiles): "
        "its train trips get no data-drift check"
    ]
    assert monitors.statistics() == []


def test_statistics_name_each_detector_of_each_model(profile, live_trips):
    monitors = DriftMonitors(TIGHT)
    alarms_of_matches(monitors, scored_trips(10, seed=6))
    alarms_of_predictions(monitors, champion_predictions(live_trips.head(12)), profile)
    assert {(s.kind, s.source, s.model_version, s.statistic) for s in monitors.statistics()} == {
        ("concept-drift", "train", "m1", "log_error"),
        ("data-drift", "train", "m1", "psi:distance_km"),
        ("data-drift", "train", "m1", "psi:week_hour"),
        ("data-drift", "train", "m1", "psi:pickup_area"),
    }


def test_a_source_keeps_the_monitors_of_its_newest_versions():
    monitors = DriftMonitors(TIGHT)  # versions_kept=2
    for version in ("v1", "v2", "v3"):
        alarms_of_matches(monitors, scored_trips(10, seed=7, model_version=version))
    alarms_of_matches(monitors, scored_trips(10, seed=7, source="test", model_version="v1"))
    assert [(s.source, s.model_version) for s in monitors.statistics()] == [
        ("train", "v2"),
        ("train", "v3"),
        ("test", "v1"),
    ]


def test_monitors_of_another_format_are_refused():
    with pytest.raises(ValueError, match="format 2"):
        DriftMonitors.from_json(DEFAULTS, {"format": 2, "monitors": []})


errors = st.lists(
    st.floats(min_value=-8, max_value=8, allow_nan=False).map(lambda e: round(e, 1)), max_size=80
)


@given(prefix=errors, continuation=errors)
def test_a_restored_page_hinkley_continues_exactly_as_the_original(prefix, continuation):
    original = _ConceptMonitor.create(TIGHT)
    for i, error in enumerate(prefix):
        original.add(error, f"id{i}")
    data = json.loads(json.dumps(original.to_json(), allow_nan=False))
    copy = _ConceptMonitor.from_json(TIGHT, data)
    # Every attribute of river's detector, so a river that keeps more state fails here.
    assert _state(copy.detector) == _state(original.detector)
    for error in continuation:
        assert copy.add(error, "id") == original.add(error, "id")
        assert copy.to_json() == original.to_json()
        assert copy.evidence() == original.evidence()


def _state(detector: object) -> dict[str, Any]:
    # The bound test method differs between two objects; the mode it is chosen by is compared.
    state = {k: v for k, v in vars(detector).items() if k != "_test_drift"}
    state["_x_mean"] = vars(state["_x_mean"])
    return state


# One event of a stream: a match or a prediction, mostly of the champion m1 on the train source
# (so that its windows fill and its detectors alarm), else of another version, source or role;
# a match's trip lasting `factor` times its prediction, or an estimate; a prediction shifted
# to Brooklyn or not.
MOSTLY_M1 = [("train", "m1", "champion")] * 10 + [
    ("test", "m1", "champion"),
    ("train", "m2", "champion"),
    ("train", "m3", "champion"),
    ("train", "m1", "challenger"),
    ("train", "m1", "head-to-head"),
]
stream_events = st.lists(
    st.tuples(
        st.sampled_from(["match", "prediction"]),
        st.sampled_from(MOSTLY_M1),
        st.sampled_from([False] * 4 + [True]),  # an estimate, or shifted
        st.sampled_from([0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0]),
    ),
    min_size=60,
    max_size=250,
)


def _event(
    i: int, event: tuple[str, tuple[str, str, str], bool, float], trips: pd.DataFrame
) -> MatchedTrip | Prediction:
    kind, (source, version, role), flag, factor = event
    fields: dict[str, Any] = {"source": source, "model_version": version}
    if role == "challenger":
        fields.update(role="challenger", challenger_version=version)
    elif role == "head-to-head":
        fields.update(challenger_version="c9")
    if kind == "match":
        [match] = scored_trips(1, seed=i)
        return attrs.evolve(
            match,
            trip_id=f"id{i}",
            actual_duration=match.predicted_duration * factor,
            is_estimate=flag,
            **fields,
        )
    [prediction] = champion_predictions(trips.iloc[[i]], shifted=range(1 if flag else 0))
    return attrs.evolve(prediction, trip_id=f"id{i}", **fields)


def _feed(
    monitors: DriftMonitors,
    items: list[MatchedTrip | Prediction],
    profile: TrainingProfile,
    start: int,
) -> list[list[DriftAlarm]]:
    """Each item's alarms; every seventh prediction's model has no profile."""
    return [
        monitors.add_match(item)
        if isinstance(item, MatchedTrip)
        else monitors.add_prediction(item, None if i % 7 == 0 else profile)
        for i, item in enumerate(items, start)
    ]


@settings(deadline=None, max_examples=60)
@given(stream=stream_events, data=st.data())
def test_restored_monitors_continue_exactly_as_the_originals(profile, live_trips, stream, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)), label="restart before")
    items = [_event(i, event, live_trips) for i, event in enumerate(stream)]
    original = DriftMonitors(TIGHT)
    alarms = _feed(original, items, profile, 0)
    before_restart = DriftMonitors(TIGHT)
    _feed(before_restart, items[:cut], profile, 0)
    copy = restored(before_restart)
    assert copy.to_json() == before_restart.to_json()
    assert copy.statistics() == before_restart.statistics()
    assert _feed(copy, items[cut:], profile, cut) == alarms[cut:]
    assert copy.to_json() == original.to_json()
    assert copy.statistics() == original.statistics()
