"""Synthetic New York taxi trips in Kaggle's schema, for users without the Kaggle download.

The generator is a small, vectorised simulation whose constants were calibrated once against
the real Kaggle sample (73,177 rows of train.csv); nothing is read from it at runtime.

- Where: pickups come from neighbourhood hot spots (Midtown and Downtown carry most of the mass,
  then the Upper East and West Sides, Brooklyn, Queens and the airports). Each hot spot is an
  ellipse stretched along Manhattan's avenues. The dropoff hot spot is chosen by a gravity
  model (popular and nearby hot spots are likelier), except that airport trips go anywhere;
  a few trips end in the suburbs, outside the city's bounding box.
- When: pickups from 2016-01-01 to 2016-06-30 with the real mix of weekdays and of hours,
  which differs between weekdays and weekends.
- How long: a fixed overhead plus the street-grid distance over a speed that depends on the
  hour and on weekday versus weekend (rush hours slow, nights fast), rising with distance
  (long trips use highways), times a day-to-day congestion factor and heavy-tailed noise.
- Kaggle's oddities, at their real rates: trips whose dropoff GPS fix equals the pickup,
  cancelled trips of a few seconds, and meters left running for most of a day.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from tqdm import tqdm

from taxi_model import _geo as geo
from taxi_model._data import FINAL_DTYPES, TEST_COLUMNS, TRAIN_COLUMNS

# Kaggle's test.csv has 625,134 rows for train.csv's 1,458,644; the default keeps that ratio.
KAGGLE_TEST_PER_TRAIN = 625_134 / 1_458_644


class HotSpot(NamedTuple):
    name: str
    lat: float
    lon: float
    sd_along_km: float  # spread along the avenues
    sd_across_km: float
    pickup_weight: float  # relative
    # Relative as a gravity-model mass, except for airports, where it is the share of all
    # trips ending there. Outer boroughs receive more trips than they send.
    dropoff_weight: float


# Centres and spreads rounded from Gaussian mixtures fitted to the real pickups and dropoffs.
# Weights were then tuned until distances matched; airports' weights are their real shares.
HOT_SPOTS = (
    HotSpot("Midtown East", 40.7565, -73.9745, 0.85, 0.45, 0.150, 0.135),
    HotSpot("Midtown West", 40.7535, -73.9905, 0.85, 0.40, 0.135, 0.110),
    HotSpot("Gramercy and Flatiron", 40.7420, -73.9855, 0.75, 0.45, 0.100, 0.090),
    HotSpot("East Village", 40.7260, -73.9895, 0.75, 0.50, 0.090, 0.080),
    HotSpot("Chelsea and West Village", 40.7375, -74.0030, 0.90, 0.35, 0.090, 0.070),
    HotSpot("Lincoln Square", 40.7670, -73.9830, 0.70, 0.35, 0.080, 0.060),
    HotSpot("Upper East Side", 40.7730, -73.9575, 1.20, 0.45, 0.140, 0.125),
    HotSpot("Upper West Side", 40.7860, -73.9755, 1.20, 0.40, 0.075, 0.075),
    HotSpot("Downtown", 40.7140, -74.0090, 0.95, 0.45, 0.055, 0.060),
    HotSpot("Harlem", 40.8100, -73.9460, 1.80, 0.60, 0.015, 0.035),
    HotSpot("Williamsburg", 40.7150, -73.9570, 1.50, 1.20, 0.012, 0.030),
    HotSpot("Brownstone Brooklyn", 40.6850, -73.9800, 2.00, 1.50, 0.010, 0.030),
    HotSpot("Astoria and Long Island City", 40.7560, -73.9230, 1.50, 1.20, 0.010, 0.020),
    HotSpot("Rest of the city", 40.7300, -73.9000, 6.00, 6.00, 0.008, 0.020),
    HotSpot("Long Island and Westchester", 40.8500, -73.4500, 10.00, 10.00, 0.0, 0.001),
    HotSpot("LGA", 40.7725, -73.8690, 0.35, 0.35, 0.0253, 0.0124),
    HotSpot("JFK", 40.6455, -73.7840, 0.40, 0.40, 0.0212, 0.0080),
    HotSpot("EWR", 40.6895, -74.1745, 0.40, 0.40, 0.0001, 0.0019),
)
AIRPORT_SPOTS = frozenset(geo.AIRPORTS)
# Gravity model: a hot spot's pull on destinations falls by e every GRAVITY_KM, down to a floor
# that keeps cross-town and borough-to-borough trips as common as in the real data.
GRAVITY_KM, GRAVITY_FLOOR = 1.0, 0.1
WALK_KM = 0.4  # dropoffs this close are redrawn once: people walk a few blocks

# Pickup days: 2016-01-01 (a Friday) .. 2016-06-30, 26 of each weekday.
FIRST_DAY = np.datetime64("2016-01-01", "D")
DAYS = 182
FIRST_DAY_OF_WEEK = 4  # Monday is 0
DAY_OF_WEEK_SHARE = (0.1263, 0.1396, 0.1462, 0.1509, 0.1522, 0.1515, 0.1333)
# Share of pickups in each hour (per mille); row 0 weekdays, row 1 weekends.
HOUR_SHARE = np.array([
    (28, 18, 11, 7, 7, 11, 28, 46, 56, 51, 44, 48, 49, 46, 49, 50, 41, 53, 63, 65, 62, 61, 57, 49),
    (58, 51, 41, 32, 20, 9, 11, 16, 22, 33, 45, 49, 54, 54, 52, 52, 46, 52, 58, 53, 51, 49, 47, 46),
])  # fmt: skip
# Street-grid speed (km/h) of a short trip by hour, fitted on the real trips; rush hours crawl.
SPEED_KMH = np.array([
    (18.2, 19.6, 20.3, 20.1, 21.4, 22.0, 19.9, 14.9, 11.7, 10.9, 10.8, 10.6,
     10.6, 11.1, 11.1, 11.1, 11.5, 11.7, 12.3, 13.5, 15.0, 15.5, 15.3, 16.2),
    (15.4, 16.1, 17.4, 18.7, 19.7, 22.0, 22.9, 21.5, 19.5, 18.3, 17.1, 15.3,
     14.6, 13.8, 13.5, 13.5, 13.7, 13.7, 13.5, 13.6, 14.8, 15.6, 15.6, 15.8),
])  # fmt: skip
OVERHEAD_S = 48.0  # pulling in and out, paying
HIGHWAY_KM = 14.0  # speed doubles over this much extra distance (highways, bridges)
DAY_CONGESTION_SD = 0.06  # log-scale spread of whole-day slowdowns (weather, events)
NOISE_SD = 0.33  # log-scale noise of a typical trip
WILD_SHARE, WILD_SD = 0.05, 0.7  # detours, waits and GPS jumps: the fat tails

GPS_LOST_SHARE = 0.004  # the dropoff fix repeats the pickup's; the trip itself is normal
CANCELLED_SHARE = 0.005  # seconds long, tens of metres
CANCELLED_MEDIAN_S, CANCELLED_SD, CANCELLED_KM = 20.0, 0.8, 0.05
METER_LEFT_ON_SHARE = 0.0015  # ends just short of 24 h
METER_LEFT_ON_MEAN_SHORT_S = 2000.0

VENDOR_2_SHARE = 0.534
# Shares of 0..6 passengers for vendor 1 (row 0) and 2; vendor 2 logs many groups of 5 and 6.
PASSENGERS = np.array([
    (0.00003, 0.8123, 0.1376, 0.0334, 0.0157, 0.0006, 0.0003),
    (0.00005, 0.6175, 0.1497, 0.0476, 0.0195, 0.1034, 0.0623),
])  # fmt: skip
STORE_AND_FWD_SHARE_VENDOR_1 = 0.011  # vendor 2 never sets the flag

MAX_ROWS = 10_000_000  # ids are "id" plus 7 distinct digits
WRITE_CHUNK_ROWS = 100_000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _normalised(weights: npt.ArrayLike) -> FloatArray:
    w = np.asarray(weights, dtype=np.float64)
    shares: FloatArray = w / w.sum()  # numpy types the sum Any
    return shares


def _transition_matrix() -> FloatArray:
    """P(dropoff hot spot | pickup hot spot), with the real airport dropoff shares."""
    lat = np.array([s.lat for s in HOT_SPOTS])
    lon = np.array([s.lon for s in HOT_SPOTS])
    pickup_w = _normalised([s.pickup_weight for s in HOT_SPOTS])
    dropoff_w = np.array([s.dropoff_weight for s in HOT_SPOTS])
    airport = np.array([s.name in AIRPORT_SPOTS for s in HOT_SPOTS])
    centre_km = geo.haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])

    kernel = np.exp(-centre_km / GRAVITY_KM) + GRAVITY_FLOOR
    gravity = np.where(airport[None, :], 0.0, dropoff_w[None, :] * kernel)
    # Airport pickups head anywhere in the city, unaffected by distance.
    gravity[airport] = np.where(airport, 0.0, dropoff_w)
    gravity /= gravity.sum(axis=1, keepdims=True)
    # Scale airport dropoffs so that their overall share (over all pickups) is the real one.
    from_city = 1.0 - pickup_w[airport].sum()
    to_airport = np.where(airport, dropoff_w, 0.0) / from_city
    matrix = gravity.copy()
    matrix[~airport] = gravity[~airport] * (1.0 - to_airport.sum()) + to_airport
    return matrix


def _draw(rng: np.random.Generator, group: IntArray, weights: npt.ArrayLike) -> IntArray:
    """For each row, a category drawn from its group's row of `weights`."""
    table = np.asarray(weights, dtype=np.float64)
    out = np.empty(group.shape[0], np.int64)
    for g, row in enumerate(table):
        members = np.flatnonzero(group == g)
        out[members] = rng.choice(table.shape[1], size=members.size, p=_normalised(row))
    return out


def _place(rng: np.random.Generator, spot: IntArray) -> tuple[FloatArray, FloatArray]:
    along_sd = np.array([s.sd_along_km for s in HOT_SPOTS])[spot]
    across_sd = np.array([s.sd_across_km for s in HOT_SPOTS])[spot]
    lat = np.array([s.lat for s in HOT_SPOTS])[spot]
    lon = np.array([s.lon for s in HOT_SPOTS])[spot]
    n = spot.shape[0]
    return geo.shift_km(lat, lon, rng.normal(0, along_sd, n), rng.normal(0, across_sd, n))


def _is_weekend(day: IntArray) -> npt.NDArray[np.bool_]:
    return (day + FIRST_DAY_OF_WEEK) % 7 >= 5


def _pickup_times(
    rng: np.random.Generator, n: int
) -> tuple[npt.NDArray[np.datetime64], IntArray, IntArray]:
    """Pickup datetimes (second resolution), and the day index and hour of each."""
    day_of_week = (np.arange(DAYS) + FIRST_DAY_OF_WEEK) % 7
    day = rng.choice(DAYS, size=n, p=_normalised(np.take(DAY_OF_WEEK_SHARE, day_of_week)))
    hour = _draw(rng, _is_weekend(day).astype(np.int64), HOUR_SHARE)
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)
    return FIRST_DAY.astype("datetime64[s]") + seconds.astype("timedelta64[s]"), day, hour


def _durations(
    rng: np.random.Generator, grid_km: FloatArray, day: IntArray, hour: IntArray
) -> FloatArray:
    n = grid_km.shape[0]
    congestion = rng.normal(0.0, DAY_CONGESTION_SD, DAYS)[day]
    noise_sd = np.where(rng.random(n) < WILD_SHARE, WILD_SD, NOISE_SD)
    log_noise = rng.normal(0.0, 1.0, n) * noise_sd + congestion
    return typical_duration_s(grid_km, _is_weekend(day), hour) * np.exp(log_noise)


def typical_duration_s(
    grid_km: FloatArray, weekend: npt.NDArray[np.bool_], hour: npt.NDArray[np.integer[Any]]
) -> FloatArray:
    """A trip's noise-free duration: the overhead plus its street-grid distance at the typical
    speed of its hour and day type, which rises with distance (highways)."""
    speed = SPEED_KMH[weekend.astype(np.int64), hour] * (1.0 + grid_km / HIGHWAY_KM)
    seconds: FloatArray = OVERHEAD_S + 3_600.0 * grid_km / speed  # numpy types `speed` Any
    return seconds


def estimate_durations(trips: pd.DataFrame) -> FloatArray:
    """Durations estimated from what is known at pickup, with the speed model calibrated on
    the real trips; the test replay's trip ends carry these, since Kaggle's test rows have no
    duration."""
    pickup_at = pd.to_datetime(trips["pickup_datetime"])
    grid_km = geo.manhattan_km(
        trips["pickup_latitude"],
        trips["pickup_longitude"],
        trips["dropoff_latitude"],
        trips["dropoff_longitude"],
    )
    weekend = (pickup_at.dt.day_of_week >= 5).to_numpy()
    return typical_duration_s(grid_km, weekend, pickup_at.dt.hour.to_numpy())


def generate_trips(rows: int, seed: int) -> pd.DataFrame:
    """`rows` synthetic trips with Kaggle's train.csv columns, in random order.

    Same arguments, same frame. The dtypes are those of `read_trips`' frames (float32 values
    in float64 coordinate columns, datetime64[s], ...), and trip_duration equals
    dropoff_datetime - pickup_datetime in whole seconds.
    """
    if not 0 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be within 0..{MAX_ROWS:,}, got {rows:,}")
    rng = np.random.default_rng(seed)

    pickup_spot = rng.choice(
        len(HOT_SPOTS), size=rows, p=_normalised([s.pickup_weight for s in HOT_SPOTS])
    )
    dropoff_spot = _draw(rng, pickup_spot, _transition_matrix())
    plat, plon = _place(rng, pickup_spot)
    dlat, dlon = _place(rng, dropoff_spot)
    # Few people hail a cab for a few blocks: redraw dropoffs within walking distance, once.
    walk = geo.haversine_km(plat, plon, dlat, dlon) < WALK_KM
    redrawn_lat, redrawn_lon = _place(rng, dropoff_spot)
    dlat, dlon = np.where(walk, redrawn_lat, dlat), np.where(walk, redrawn_lon, dlon)

    pickup_at, day, hour = _pickup_times(rng, rows)
    duration = _durations(rng, geo.manhattan_km(plat, plon, dlat, dlon), day, hour)

    oddity = rng.random(rows)
    gps_lost = oddity < GPS_LOST_SHARE
    cancelled = (oddity >= GPS_LOST_SHARE) & (oddity < GPS_LOST_SHARE + CANCELLED_SHARE)
    meter_left_on = oddity >= 1.0 - METER_LEFT_ON_SHARE
    dlat, dlon = np.where(gps_lost, plat, dlat), np.where(gps_lost, plon, dlon)
    short_lat, short_lon = geo.shift_km(
        plat, plon, rng.normal(0, CANCELLED_KM, rows), rng.normal(0, CANCELLED_KM, rows)
    )
    dlat, dlon = np.where(cancelled, short_lat, dlat), np.where(cancelled, short_lon, dlon)
    duration = np.where(
        cancelled, CANCELLED_MEDIAN_S * np.exp(rng.normal(0, CANCELLED_SD, rows)), duration
    )
    duration = np.where(
        meter_left_on, 86_400.0 - rng.exponential(METER_LEFT_ON_MEAN_SHORT_S, rows), duration
    )
    seconds = np.maximum(np.rint(duration), 1).astype(np.int64)

    vendor_2 = rng.random(rows) < VENDOR_2_SHARE
    passengers = _draw(rng, vendor_2.astype(np.int64), PASSENGERS)
    stored = ~vendor_2 & (rng.random(rows) < STORE_AND_FWD_SHARE_VENDOR_1)
    ids = rng.choice(MAX_ROWS, size=rows, replace=False)

    frame = pd.DataFrame(
        {
            "id": np.char.add("id", np.char.zfill(ids.astype(str), 7)),
            "vendor_id": np.where(vendor_2, 2, 1),
            "pickup_datetime": pickup_at,
            "dropoff_datetime": pickup_at + seconds.astype("timedelta64[s]"),
            "passenger_count": passengers,
            # float32, as Kaggle's GPS coordinates are
            "pickup_longitude": plon.astype(np.float32),
            "pickup_latitude": plat.astype(np.float32),
            "dropoff_longitude": dlon.astype(np.float32),
            "dropoff_latitude": dlat.astype(np.float32),
            "store_and_fwd_flag": np.where(stored, "Y", "N"),
            "trip_duration": seconds,
        },
        columns=list(TRAIN_COLUMNS),
    )
    return frame.astype({"id": str, **FINAL_DTYPES})


def _write_csv(frame: pd.DataFrame, path: Path, desc: str) -> None:
    with (
        path.open("w", encoding="utf-8", newline="") as out,
        tqdm(
            total=len(frame),
            desc=desc,
            unit="row",
            unit_scale=True,
            disable=len(frame) <= WRITE_CHUNK_ROWS,
        ) as bar,
    ):
        out.write(",".join(frame.columns) + "\n")
        for start in range(0, len(frame), WRITE_CHUNK_ROWS):
            chunk = frame.iloc[start : start + WRITE_CHUNK_ROWS]
            # %.17g prints a float32 value the way Kaggle's files do (e.g. -73.980369567871094)
            chunk.to_csv(out, header=False, index=False, float_format="%.17g", lineterminator="\n")
            bar.update(len(chunk))


def write_synthetic(
    out_dir: Path, rows: int, seed: int, test_rows: int | None = None
) -> tuple[Path, Path]:
    """Write `train.csv` (`rows` trips) and `test.csv` (`test_rows` other trips, without
    dropoff_datetime and trip_duration) into `out_dir`; return their paths.

    Both files come from one simulation split at random, as Kaggle's were, so their ids are
    distinct. `test_rows` defaults to Kaggle's test/train ratio (625,134 per 1,458,644).
    Same arguments, byte-identical files. Existing files are replaced.
    """
    train, test = synthetic_train_test(rows, seed, test_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, test_path = out_dir / "train.csv", out_dir / "test.csv"
    _write_csv(train, train_path, "train.csv")
    _write_csv(test, test_path, "test.csv")
    return train_path, test_path


def synthetic_train_test(
    rows: int, seed: int, test_rows: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One simulation split at random into train rows and test rows (without dropoff_datetime
    and trip_duration), as Kaggle's were: their ids are distinct. `test_rows` defaults to
    Kaggle's test/train ratio."""
    if test_rows is None:
        test_rows = round(rows * KAGGLE_TEST_PER_TRAIN)
    trips = generate_trips(rows + test_rows, seed)
    return trips.iloc[:rows], trips.iloc[rows:][list(TEST_COLUMNS)].reset_index(drop=True)
