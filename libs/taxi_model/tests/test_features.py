import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_events import TripStarted
from taxi_model._features import INPUT_COLUMNS, events_to_frame, trip_features

# The model's input order: a trained model reads its features by position.
FEATURE_COLUMNS = [
    "haversine_km",
    "manhattan_km",
    "bearing_deg",
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
    "pickup_grid_x",
    "pickup_grid_y",
    "dropoff_grid_x",
    "dropoff_grid_y",
    "centre_latitude",
    "centre_longitude",
    "hour",
    "day_of_week",
    "week_hour",
    "day_of_year",
    "vendor_id",
    "passenger_count",
    "store_and_fwd",
    "pickup_jfk",
    "pickup_lga",
    "pickup_ewr",
    "dropoff_jfk",
    "dropoff_lga",
    "dropoff_ewr",
]


def kaggle_frame(**overrides: list) -> pd.DataFrame:
    columns = {
        "vendor_id": [1, 2],
        "pickup_datetime": pd.to_datetime(["2016-03-14 17:24:55", "2016-06-12 00:43:35"]),
        "passenger_count": [1, 3],
        "pickup_longitude": [-73.982155, -73.980415],
        "pickup_latitude": [40.767937, 40.738564],
        "dropoff_longitude": [-73.964630, -73.999481],
        "dropoff_latitude": [40.765602, 40.731152],
        "store_and_fwd_flag": ["N", "Y"],
    }
    columns.update(overrides)
    return pd.DataFrame(columns)


def test_features_are_finite_with_fixed_columns():
    features = trip_features(kaggle_frame())
    assert len(features) == 2
    assert np.isfinite(features.to_numpy()).all()
    assert features["hour"].tolist() == pytest.approx([17 + 24 / 60, 43 / 60])
    assert features["day_of_week"].tolist() == [0, 6]  # a Monday and a Sunday
    assert features["store_and_fwd"].tolist() == [0.0, 1.0]
    assert list(features.columns) == FEATURE_COLUMNS


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The spherical law of cosines: another formula than the haversine the code uses."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    cos_angle = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0088 * math.acos(min(1.0, cos_angle))


def test_each_feature_is_the_quantity_it_names():
    frame = kaggle_frame()
    features = trip_features(frame)
    expected_km = [
        great_circle_km(
            r.pickup_latitude, r.pickup_longitude, r.dropoff_latitude, r.dropoff_longitude
        )
        for r in frame.itertuples()
    ]
    assert features["haversine_km"].tolist() == pytest.approx(expected_km, rel=2e-3)
    # Along the street grid a trip is never shorter than as the crow flies.
    assert (features["manhattan_km"] >= features["haversine_km"]).all()
    # The first trip heads east across the park, the second south-west down to the Village.
    assert 80 < features["bearing_deg"][0] < 110
    assert 225 < features["bearing_deg"][1] < 260
    for column in ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"):
        assert features[column].tolist() == frame[column].tolist()
    centre = (frame["pickup_latitude"] + frame["dropoff_latitude"]) / 2
    assert features["centre_latitude"].tolist() == pytest.approx(centre.tolist())
    assert features["week_hour"].tolist() == pytest.approx([17 + 24 / 60, 6 * 24 + 43 / 60])
    assert features["day_of_year"].tolist() == [74, 164]  # 14 March and 12 June 2016
    assert features["vendor_id"].tolist() == [1.0, 2.0]
    assert features["passenger_count"].tolist() == [1.0, 3.0]


def test_airport_trip_is_flagged():
    features = trip_features(
        kaggle_frame(
            dropoff_latitude=[40.6413, 40.731152], dropoff_longitude=[-73.7781, -73.999481]
        )
    )
    assert features["dropoff_jfk"].tolist() == [1.0, 0.0]
    assert features["pickup_jfk"].tolist() == [0.0, 0.0]


def test_missing_column_is_named():
    with pytest.raises(KeyError, match="passenger_count"):
        trip_features(kaggle_frame().drop(columns=["passenger_count"]))


def test_events_give_the_same_features_as_csv_rows():
    frame = kaggle_frame()
    events = [
        TripStarted(
            trip_id=f"id{i}",
            vendor_id=int(row.vendor_id),
            pickup_datetime=row.pickup_datetime.to_pydatetime(),
            passenger_count=int(row.passenger_count),
            pickup_longitude=row.pickup_longitude,
            pickup_latitude=row.pickup_latitude,
            dropoff_longitude=row.dropoff_longitude,
            dropoff_latitude=row.dropoff_latitude,
            store_and_fwd_flag=row.store_and_fwd_flag == "Y",
            source="train",
            produced_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, row in enumerate(frame.itertuples())
    ]
    from_events = events_to_frame(events)
    assert list(from_events.columns) == list(INPUT_COLUMNS)
    pd.testing.assert_frame_equal(trip_features(from_events), trip_features(frame))


def test_empty_batch_gives_empty_features():
    assert trip_features(events_to_frame([])).shape[0] == 0


@given(
    st.lists(
        st.tuples(
            st.floats(-90, 90),
            st.floats(-180, 180),
            st.floats(-90, 90),
            st.floats(-180, 180),
            st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_valid_coordinates_give_finite_features(rows):
    plat, plon, dlat, dlon, when = map(list, zip(*rows, strict=True))
    n = len(rows)
    frame = kaggle_frame(
        vendor_id=[1] * n,
        pickup_datetime=pd.to_datetime(when),
        passenger_count=[1] * n,
        pickup_latitude=plat,
        pickup_longitude=plon,
        dropoff_latitude=dlat,
        dropoff_longitude=dlon,
        store_and_fwd_flag=["N"] * n,
    )
    assert np.isfinite(trip_features(frame).to_numpy()).all()
