import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxi_model import _geo as geo

nyc_lat = st.floats(min_value=40.5, max_value=40.95)
nyc_lon = st.floats(min_value=-74.25, max_value=-73.7)


def test_haversine_known_distance():
    # Times Square to the JFK terminals is about 21 km as the crow flies.
    assert geo.haversine_km(40.7580, -73.9855, geo.JFK.lat, geo.JFK.lon) == pytest.approx(
        21.4, abs=0.5
    )


@given(nyc_lat, nyc_lon, nyc_lat, nyc_lon)
def test_street_grid_distance_is_never_shorter_than_the_straight_line(lat1, lon1, lat2, lon2):
    straight = geo.haversine_km(lat1, lon1, lat2, lon2)
    grid = geo.manhattan_km(lat1, lon1, lat2, lon2)
    assert grid >= straight * 0.999
    assert grid <= straight * np.sqrt(2) * 1.001 + 1e-9


@given(nyc_lat, nyc_lon, nyc_lat, nyc_lon)
def test_distances_are_symmetric(lat1, lon1, lat2, lon2):
    assert geo.haversine_km(lat1, lon1, lat2, lon2) == pytest.approx(
        geo.haversine_km(lat2, lon2, lat1, lon1), abs=1e-9
    )


@given(nyc_lat, nyc_lon, st.floats(-20, 20), st.floats(-20, 20))
def test_shift_inverts_grid_offset(lat, lon, along, across):
    lat2, lon2 = geo.shift_km(lat, lon, along, across)
    got_along, got_across = geo.grid_offset_km(lat, lon, lat2, lon2)
    assert got_along == pytest.approx(along, abs=1e-3)
    assert got_across == pytest.approx(across, abs=1e-3)


def test_walking_up_an_avenue_is_along_the_grid():
    lat2, lon2 = geo.shift_km(40.75, -73.99, 2.0, 0.0)
    assert geo.manhattan_km(40.75, -73.99, lat2, lon2) == pytest.approx(2.0, rel=1e-3)
    assert geo.bearing_deg(40.75, -73.99, lat2, lon2) == pytest.approx(29.0, abs=0.5)


def test_airport_flags():
    flags = geo.airport_flags(np.array([geo.JFK.lat, 40.7580]), np.array([geo.JFK.lon, -73.9855]))
    assert flags["JFK"].tolist() == [True, False]
    assert flags["LGA"].tolist() == [False, False]
