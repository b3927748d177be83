from datetime import datetime

import attrs
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_model import FeatureProfile, drift_features, time_split, training_profile
from taxi_model import _geo as geo
from taxi_model._artifact import card_from_json, card_to_json
from taxi_model._profile import OTHER_AREA, pickup_area, week_hour
from taxi_model._synth import generate_trips


@pytest.fixture(scope="module")
def trips() -> pd.DataFrame:
    return generate_trips(rows=6000, seed=11)


@given(st.lists(st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1)), min_size=1))
def test_week_hour_is_the_hour_of_the_week_from_monday(pickups):
    expected = [p.weekday() * 24 + p.hour for p in pickups]
    assert week_hour(pickups).tolist() == expected
    assert week_hour(pd.Series(pickups, dtype="datetime64[s]")).tolist() == expected


def test_a_trip_has_the_same_features_in_a_frame_and_as_one_row_of_columns(trips):
    """The stream bins one prediction at a time from its fields: it must see what the training
    frame showed for the same trip."""
    whole = drift_features(trips)
    for i in (0, 17, 4999):
        row = trips.iloc[i]
        columns = {name: [row[name]] for name in trips.columns}
        columns["pickup_datetime"] = [row["pickup_datetime"].to_pydatetime()]
        one = drift_features(columns)
        assert {name: values[0] for name, values in one.items()} == {
            name: values[i] for name, values in whole.items()
        }


def test_pickup_areas_are_squares_of_the_street_grid():
    # Squares of 1.5 km from Times Square, the grid's origin: across the avenues, then along.
    along = np.array([0.7, 0.7, -0.1, 7.0, -7.0])
    across = np.array([0.7, -0.7, 2.0, 0.2, 3.1])
    lat, lon = geo.shift_km(geo.GRID_ORIGIN_LAT, geo.GRID_ORIGIN_LON, along, across)
    assert pickup_area(lat, lon).tolist() == ["x0y0", "x-1y0", "x1y-1", "x0y4", "x2y-5"]


def test_the_profile_bins_the_training_trips_in_its_own_shares(trips):
    profile = training_profile(trips)
    assert profile.trips == len(trips)
    assert [f.name for f in profile.features] == ["distance_km", "week_hour", "pickup_area"]
    bins = profile.bin_indices(trips)
    for feature in profile.features:
        shares = np.bincount(bins[feature.name], minlength=feature.bins) / len(trips)
        assert shares.tolist() == pytest.approx(feature.expected, abs=1e-12)
        assert sum(feature.expected) == pytest.approx(1.0)


def test_numeric_bins_hold_about_equal_shares(trips):
    profile = training_profile(trips)
    distance, hour = profile.features[0], profile.features[1]
    assert distance.bins == 10
    assert hour.bins == 12
    assert distance.edges == sorted(distance.edges)
    assert max(distance.expected) - min(distance.expected) < 0.01
    assert min(hour.expected) > 0.5 / hour.bins


def test_the_areas_are_those_with_one_percent_of_pickups_and_other_takes_the_rest(trips):
    area = training_profile(trips).features[2]
    assert area.categories
    assert not area.edges
    assert area.bins == len(area.categories) + 1
    assert min(area.expected[:-1]) >= 0.01
    names, counts = np.unique(drift_features(trips)["pickup_area"], return_counts=True)
    rest = counts[~np.isin(names, area.categories)].sum() / len(trips)
    assert area.expected[-1] == pytest.approx(rest)
    assert OTHER_AREA not in area.categories


def test_values_beyond_the_training_range_fall_in_the_end_bins():
    feature = FeatureProfile("x", [0.25, 0.5, 0.25], edges=[1.0, 2.0])
    assert feature.bin_indices([-5.0, 0.999, 1.0, 1.5, 2.0, 1e9]).tolist() == [0, 0, 1, 1, 2, 2]
    area = FeatureProfile("a", [0.5, 0.3, 0.2], categories=["x0y0", "x1y0"])
    assert area.bin_indices(["x1y0", "x0y0", "x9y9"]).tolist() == [1, 0, 2]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"expected": [1.0], "edges": [1.0]}, "1 proportions for 2 bins"),
        ({"expected": [0.5, 0.5], "edges": [1.0], "categories": ["a"]}, "both"),
    ],
)
def test_a_profile_whose_shares_do_not_fit_its_bins_is_refused(fields, problem):
    with pytest.raises(ValueError, match=problem):
        FeatureProfile("x", **fields)


def test_a_trained_model_card_holds_the_profile_of_its_training_fold_only(
    saved_model, synthetic_trips
):
    card = saved_model.card
    assert card.profile is not None
    assert card.profile.trips == card.data.train_rows
    before, _, _ = time_split(synthetic_trips["pickup_datetime"])
    assert card.profile == training_profile(synthetic_trips.iloc[before])


def test_the_profile_survives_the_card_json(saved_model):
    card = saved_model.card
    assert card_from_json(card_to_json(card), "a card") == card
    without = attrs.evolve(card, profile=None)
    assert card_from_json(card_to_json(without), "a card").profile is None
