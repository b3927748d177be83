import numpy as np
import pandas as pd
import pytest

from taxi_model import _geo as geo
from taxi_model._data import TEST_COLUMNS, TRAIN_COLUMNS, read_trips
from taxi_model._synth import generate_trips, write_synthetic

CALIBRATION_ROWS = 50_000


def haversine(frame: pd.DataFrame) -> np.ndarray:
    return geo.haversine_km(
        frame["pickup_latitude"],
        frame["pickup_longitude"],
        frame["dropoff_latitude"],
        frame["dropoff_longitude"],
    )


def airport_share(frame: pd.DataFrame) -> float:
    """Share of trips starting or ending within 2 km of JFK or LaGuardia."""
    touches = np.zeros(len(frame), bool)
    for airport in (geo.JFK, geo.LGA):
        for end in ("pickup", "dropoff"):
            lat, lon = frame[f"{end}_latitude"], frame[f"{end}_longitude"]
            touches |= geo.is_near(lat, lon, airport, radius_km=2.0)
    return float(touches.mean())


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return generate_trips(CALIBRATION_ROWS, seed=11)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = write_synthetic(tmp_path / "a", rows=3_000, seed=5, test_rows=500)
    again = write_synthetic(tmp_path / "b", rows=3_000, seed=5, test_rows=500)
    other = write_synthetic(tmp_path / "c", rows=3_000, seed=6, test_rows=500)
    for a, b, c in zip(first, again, other, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()
    assert [p.name for p in first] == ["train.csv", "test.csv"]


def test_files_have_kaggle_schema_and_distinct_ids(tmp_path):
    train_path, test_path = write_synthetic(tmp_path, rows=2_000, seed=1)
    train, test = pd.read_csv(train_path), pd.read_csv(test_path)
    assert tuple(train.columns) == TRAIN_COLUMNS
    assert tuple(test.columns) == TEST_COLUMNS
    # the default keeps Kaggle's test/train ratio
    assert (len(train), len(test)) == (2_000, round(2_000 * 625_134 / 1_458_644))
    ids = pd.concat([train["id"], test["id"]])
    assert ids.is_unique
    assert ids.str.fullmatch(r"id\d{7}").all()
    # coordinates are printed as float32 values, like Kaggle's
    lat = train["pickup_latitude"].to_numpy()
    assert (lat.astype(np.float32).astype(np.float64) == lat).all()
    assert train_path.read_text().splitlines()[0] == ",".join(TRAIN_COLUMNS)


def test_trips_look_like_kaggle_trips(synthetic):
    assert tuple(synthetic.columns) == TRAIN_COLUMNS
    assert synthetic["id"].is_unique
    assert set(synthetic["vendor_id"]) == {1, 2}
    assert synthetic["vendor_id"].eq(2).mean() == pytest.approx(0.534, abs=0.01)
    assert synthetic["passenger_count"].between(0, 6).all()
    assert synthetic["passenger_count"].mode()[0] == 1
    assert synthetic["store_and_fwd_flag"].eq("N").mean() > 0.99
    pickup = synthetic["pickup_datetime"]
    assert pickup.min() >= pd.Timestamp("2016-01-01")
    assert pickup.max() < pd.Timestamp("2016-07-01")
    assert set(pickup.dt.month) == {1, 2, 3, 4, 5, 6}
    elapsed = (synthetic["dropoff_datetime"] - pickup).dt.total_seconds()
    assert (elapsed == synthetic["trip_duration"]).all()
    assert (synthetic["trip_duration"] >= 1).all()


def test_rush_hour_is_slower_than_the_night(synthetic):
    hour = synthetic["pickup_datetime"].dt.hour
    weekday = synthetic["pickup_datetime"].dt.day_of_week < 5
    seconds_per_km = synthetic["trip_duration"] / np.maximum(haversine(synthetic), 0.5)
    rush = seconds_per_km[weekday & hour.between(8, 18)].median()
    night = seconds_per_km[hour.between(1, 5)].median()
    assert rush > 1.5 * night


def test_distances_durations_and_airports_match_the_real_sample(real_sample_path, synthetic):
    real = pd.read_csv(real_sample_path)
    real_km, synthetic_km = np.median(haversine(real)), np.median(haversine(synthetic))
    assert synthetic_km == pytest.approx(real_km, rel=0.25)
    real_s, synthetic_s = real["trip_duration"].median(), synthetic["trip_duration"].median()
    assert synthetic_s == pytest.approx(real_s, rel=0.25)
    ratio = airport_share(synthetic) / airport_share(real)
    assert 0.5 < ratio < 2.0


def test_read_trips_keeps_every_synthetic_row(tmp_path):
    train_path, test_path = write_synthetic(tmp_path, rows=20_000, seed=2, test_rows=3_000)
    train, test = read_trips(train_path), read_trips(test_path)
    assert (train.kind, test.kind) == ("train", "test")
    assert (train.report.rows_kept, train.report.dropped) == (20_000, {})
    assert (test.report.rows_kept, test.report.dropped) == (3_000, {})
    # like Kaggle's data, a few trips are suspicious: meters left on, cancelled trips
    assert set(train.report.flagged) >= {"duration_over_6h", "duration_under_60s"}
    pd.testing.assert_frame_equal(
        train.frame[list(TRAIN_COLUMNS)], generate_trips(23_000, seed=2).iloc[:20_000]
    )
